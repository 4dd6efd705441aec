"""What each built-in PII kind looks like and what confirms it: the detectors pii.py scans
with, most specific kind first (ORDER), and the validators behind them (python-stdnum,
phonenumbers, ipaddress).

The patterns are written for Python's `re` with every repetition bounded and no nested
alternatives that overlap, so each start position does bounded work; a detector marked
`whole` is an RE2 pattern (linear by construction) searched in the whole text.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
import re2
from stdnum import iban, luhn
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.cn import ric
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.exceptions import ValidationError
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.us import ssn

KINDS = ("email", "phone", "credit_card", "ssn", "national_id", "ip_address", "iban", "secret")
REPLACEMENTS = {"email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CREDIT_CARD]",
                "ssn": "[SSN]", "national_id": "[NATIONAL_ID]", "ip_address": "[IP_ADDRESS]",
                "iban": "[IBAN]", "secret": "[SECRET]"}


# -- validators ---------------------------------------------------------------------------------

_DIGITS = re.compile(r"\D")
# Issuer prefixes of the card networks (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
# Maestro): a Luhn-valid number with none of these is not a payment card.
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|64[4-9]|35|30[0-5]|36|38|39|62|"
                          r"5[06-9]|6[37])")


def _card(text: str) -> bool:
    digits = _DIGITS.sub("", text)
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn.is_valid(digits)


def _ssn(text: str) -> bool:
    return ssn.is_valid(_DIGITS.sub("", text))


# National ids whose bare digits say too little on their own (a Luhn-valid nine-digit number
# is one in ten): confirmed only after the word that names them.
_NAMED_IDS = (sin, aadhaar, bsn, idnr, cpf)


def _named_id(text: str) -> bool:
    return any(module.is_valid(text) for module in _NAMED_IDS)


def _numbered_id(text: str) -> bool:
    """A CPF (dotted), a resident id (18 characters), a DNI (a letter last) or a NIR."""
    if "." in text:
        return cpf.is_valid(text)
    if len(text) == 18 and " " not in text:
        return _resident_id(text)
    return dni.is_valid(text) if text[-1].isalpha() else nir.is_valid(text)


def _lettered_id(text: str) -> bool:
    """A NIE (X, Y or Z and seven digits) or a codice fiscale."""
    return nie.is_valid(text) if len(text) <= 11 else codicefiscale.is_valid(text)


def _resident_id(text: str) -> bool:
    """China's resident id: its ISO 7064 check character and a real birth date. Not
    stdnum's is_valid, which also looks the birthplace up in a table of every county (loaded on
    first use, some megabytes that every full garbage collection would then walk)."""
    number = text.upper()
    if number[-1] != ric.calc_check_digit(number):
        return False
    try:
        ric.get_birth_date(number)
    except ValidationError:
        return False
    return True


def _iban(text: str) -> bool:
    return iban.is_valid(text)


def _phone(text: str) -> bool:
    digits = _DIGITS.sub("", text)
    # As libphonenumber would judge them, cheaply first: an international number has 8 to 15
    # digits; one without a prefix is read as North American, 10 digits or 1 and 10.
    if not (8 <= len(digits) <= 15 if text.startswith("+") else
            len(digits) == 10 or (len(digits) == 11 and digits[0] == "1")):
        return False
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _entropy(token: str) -> float:
    """Shannon entropy in bits per character."""
    counts: dict[str, int] = {}
    for ch in token:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _random_token(token: str) -> bool:
    """A credential's value: long, of letters and digits both, and near-random."""
    return (len(token) >= 16 and any(c.isdigit() for c in token)
            and any(c.isalpha() for c in token) and _entropy(token) >= 3.5)


# -- detectors ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Detector:
    """A pattern, run only in the windows of the message where a match can be: around each
    occurrence of one of its anchors (literal text every match holds), or, without anchors,
    around each run of digits (every number-shaped kind has seven or more). Python's `re`
    costs some 20 ns a character a pattern; finding anchors (str.find) and digit runs (one
    pattern) costs little, and most messages hold few of them."""

    kind: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    group: int = 0  # the part of the match that is the finding
    anchors: tuple[str, ...] = ()
    folded: bool = False  # the anchors are looked for in the lower-cased text
    paired: bool = False  # only where the anchor occurs again within five characters
    before: int = 12  # how far before its anchor (or digit run) a match may start
    after: int = 10  # how far past the anchor's start (or the run's end) a match may end
    # A number-shaped kind whose matches begin where a number of a digit run begins: tried
    # there (Pattern.match, one attempt) instead of searched for in a window.
    at_numbers: bool = False
    # Neither anchors nor a digit run mark where it can match: an RE2 pattern searched in
    # the whole text (a few microseconds).
    whole: bool = False


DETECTORS: dict[str, tuple[Detector, ...]] = {
    "email": (Detector("email", re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
        r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?){0,6}\.[A-Za-z]{2,24}(?![\w-])"),
        anchors=("@",), before=66, after=260),),
    # Written as people write phone numbers: an international prefix, or the digits grouped
    # by spaces, dots, dashes or parentheses. A bare run of digits is a phone number only right
    # after a word that says so: otherwise it is as likely an order or tracking number.
    "phone": (
        Detector("phone", re.compile(
            r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?|\d{1,5}[ .-])"
            r"\d{2,6}(?:[ .-]\d{2,6}){0,3}(?![\w-]|\.\d)"), _phone, at_numbers=True),
        Detector("phone", re.compile(r"(?<![\w+.-])\+\d{7,15}(?![\w-]|\.\d)"), _phone,
                  at_numbers=True),
        Detector("phone", re.compile(
            r"(?i)\b(?:phone|tel|mobile|cell|call|text|whatsapp|fax)\b[^\d\n\x00]{0,12}"
            r"(\d{10,11})(?![\w-]|\.\d)"), _phone, 1, anchors=(
                "phone", "tel", "mobile", "cell", "call", "text", "whatsapp", "fax"),
            folded=True, before=0, after=40)),
    "credit_card": (Detector("credit_card", re.compile(
        r"(?<![\w.-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\w-]|\.\d)|"
        r"(?<![\w.-])3[47]\d{2}[ -]?\d{6}[ -]?\d{5}(?![\w-]|\.\d)"), _card, at_numbers=True),),
    "ssn": (
        Detector("ssn", re.compile(r"(?<![\w.-])\d{3}([- ])\d{2}\1\d{4}(?![\w-]|\.\d)"), _ssn,
                  at_numbers=True),
        Detector("ssn", re.compile(
            r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b[^\d\n\x00]{0,12}(\d{9})"
            r"(?!\w)"), _ssn, 1, anchors=("ssn", "social security"), folded=True, before=0,
            after=50)),
    # Formats that carry their country's check digits: Brazil's CPF, China's resident id,
    # France's NIR, Spain's DNI (numbers, one anchored try each where a number begins);
    # Italy's codice fiscale and Spain's NIE (letters first: RE2 over the whole text); and,
    # after the word that names them, Canada's SIN, India's Aadhaar, the Netherlands' BSN,
    # Germany's tax id and a bare CPF (RE2 over the whole text: one pass, where eleven
    # key words would be eleven searches).
    "national_id": (
        Detector("national_id", re.compile(
            r"(?<![\w.-])(?:\d{3}\.\d{3}\.\d{3}-\d{2}|\d{17}[\dXx]|\d{8}-?[A-Za-z]|"
            r"[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2})(?![\w-]|\.\d)"),
            _numbered_id, at_numbers=True),
        Detector("national_id", re2.compile(
            r"\b(?:[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]|[XYZ]-?\d{7}-?[A-Z])\b"),
            _lettered_id, whole=True),
        Detector("national_id", re2.compile(
            r"(?i)\b(?:sin|social insurance(?: number| no\.?)?|aadha?ar|bsn|burgerservicenummer|"
            r"steuer-?id|steuer-?identifikationsnummer|idnr|cpf)\b[^\d\n\x00]{0,12}"
            r"(\d[\d .-]{7,14}\d)\b"), _named_id, 1, whole=True)),
    "ip_address": (
        Detector("ip_address", re.compile(
            r"(?<![\w.])(?<!\bv)(?<!version )(?<!ver\. )(?<!release )(?<!build )"
            r"(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)"), _ip, at_numbers=True),
        Detector("ip_address", re.compile(
            r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)(?:[0-9A-Fa-f]{1,4}|:)"
            r"(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"), _ip, anchors=(":",), paired=True,
            after=42)),
    "iban": (Detector("iban", re.compile(
        r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])"), _iban),),
    "secret": (
        Detector("secret", re.compile(
            r"(?<![\w-])(?:sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_-]{20,200}|"
            r"(?:AKIA|ASIA)[A-Z0-9]{16}|"
            r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}|"
            r"xox[abposr]-[A-Za-z0-9-]{10,200})(?![\w-])"),
            anchors=("sk-", "AKIA", "ASIA", "_", "xox"), before=11, after=270),
        Detector("secret", re.compile(
            r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}"
            r"(?![\w-])"), anchors=("eyJ",), before=1, after=8020),
        Detector("secret", re.compile(
            r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----"
            r"(?:[^\x00-]{0,8000}-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----)?"),
            anchors=("PRIVATE KEY-----",), before=60, after=8200),
        Detector("secret", re.compile(
            r"(?i)\b(?:api[_ -]?key|secret(?:[_ -]?key)?|access[_ -]?key|token|password|"
            r"passwd|pwd|credentials?|auth)\b[\"']?\s{0,3}(?:is|[:=]|=>)?\s{0,3}[\"']?"
            r"([A-Za-z0-9/+_=.~-]{16,200})"), _random_token, 1,
            anchors=("key", "secret", "token", "passw", "pwd", "credential", "auth"), folded=True,
            before=8, after=260)),
}


# Most specific shapes first: a dotted quad is an IP address before it is a phone number.
ORDER = ("secret", "email", "ip_address", "iban", "national_id", "credit_card", "ssn", "phone")
