"""Personal data and secrets in a prompt: where they are, by kind, never what they are.

A detector finds candidates with a pattern and keeps those a validator confirms: a card number
passes Luhn and has a card network's prefix, an IBAN its ISO 7064 checksum, an SSN the SSA's
rules, a phone number libphonenumber's rules for its region, an IP address Python's parser;
a secret has the shape of a provider's key or is a high-entropy token right after a word such
as key, secret, token or password. What looks like one of these but is not (an order number
failing Luhn, a version string, a date, an ISBN) is left alone: a guardrail that fires on
ordinary text gets turned off.

The built-in patterns are written for Python's `re` with every repetition bounded and no
nested alternatives that overlap, so each start position does bounded work and a message is
scanned in linear time (tests/unit/test_pii.py times crafted messages). Patterns from policies
run on RE2 (`google-re2`), which is linear by construction; one RE2 cannot compile is refused
when the policy is written.

Offsets are in Unicode code points of the message's content (Python string indices).
"""

from __future__ import annotations

import ipaddress
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import phonenumbers
import re2
from stdnum import iban, luhn
from stdnum.us import ssn

KINDS = ("email", "phone", "credit_card", "ssn", "ip_address", "iban", "secret")
REPLACEMENTS = {"email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CREDIT_CARD]",
                "ssn": "[SSN]", "ip_address": "[IP_ADDRESS]", "iban": "[IBAN]",
                "secret": "[SECRET]"}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # a built-in kind, or a policy pattern's name
    message: int  # index of the message in the request
    start: int
    end: int


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
class _Detector:
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


_DETECTORS: dict[str, tuple[_Detector, ...]] = {
    "email": (_Detector("email", re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
        r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?){0,6}\.[A-Za-z]{2,24}(?![\w-])"),
        anchors=("@",), before=66, after=260),),
    # Written as people write phone numbers: an international prefix, or the digits grouped
    # by spaces, dots, dashes or parentheses. A bare run of digits is a phone number only right
    # after a word that says so: otherwise it is as likely an order or tracking number.
    "phone": (
        _Detector("phone", re.compile(
            r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?|\d{1,5}[ .-])"
            r"\d{2,6}(?:[ .-]\d{2,6}){0,3}(?![\w-]|\.\d)"), _phone, at_numbers=True),
        _Detector("phone", re.compile(r"(?<![\w+.-])\+\d{7,15}(?![\w-]|\.\d)"), _phone,
                  at_numbers=True),
        _Detector("phone", re.compile(
            r"(?i)\b(?:phone|tel|mobile|cell|call|text|whatsapp|fax)\b[^\d\n\x00]{0,12}"
            r"(\d{10,11})(?![\w-]|\.\d)"), _phone, 1, anchors=(
                "phone", "tel", "mobile", "cell", "call", "text", "whatsapp", "fax"),
            folded=True, before=0, after=40)),
    "credit_card": (_Detector("credit_card", re.compile(
        r"(?<![\w.-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\w-]|\.\d)|"
        r"(?<![\w.-])3[47]\d{2}[ -]?\d{6}[ -]?\d{5}(?![\w-]|\.\d)"), _card, at_numbers=True),),
    "ssn": (
        _Detector("ssn", re.compile(r"(?<![\w.-])\d{3}([- ])\d{2}\1\d{4}(?![\w-]|\.\d)"), _ssn,
                  at_numbers=True),
        _Detector("ssn", re.compile(
            r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b[^\d\n\x00]{0,12}(\d{9})"
            r"(?!\w)"), _ssn, 1, anchors=("ssn", "social security"), folded=True, before=0,
            after=50)),
    "ip_address": (
        _Detector("ip_address", re.compile(
            r"(?<![\w.])(?<!\bv)(?<!version )(?<!ver\. )(?<!release )(?<!build )"
            r"(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)"), _ip, at_numbers=True),
        _Detector("ip_address", re.compile(
            r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)(?:[0-9A-Fa-f]{1,4}|:)"
            r"(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"), _ip, anchors=(":",), paired=True,
            after=42)),
    "iban": (_Detector("iban", re.compile(
        r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])"), _iban),),
    "secret": (
        _Detector("secret", re.compile(
            r"(?<![\w-])(?:sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_-]{20,200}|"
            r"(?:AKIA|ASIA)[A-Z0-9]{16}|"
            r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}|"
            r"xox[abposr]-[A-Za-z0-9-]{10,200})(?![\w-])"),
            anchors=("sk-", "AKIA", "ASIA", "_", "xox"), before=11, after=270),
        _Detector("secret", re.compile(
            r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}"
            r"(?![\w-])"), anchors=("eyJ",), before=1, after=8020),
        _Detector("secret", re.compile(
            r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----"
            r"(?:[^\x00-]{0,8000}-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----)?"),
            anchors=("PRIVATE KEY-----",), before=60, after=8200),
        _Detector("secret", re.compile(
            r"(?i)\b(?:api[_ -]?key|secret(?:[_ -]?key)?|access[_ -]?key|token|password|"
            r"passwd|pwd|credentials?|auth)\b[\"']?\s{0,3}(?:is|[:=]|=>)?\s{0,3}[\"']?"
            r"([A-Za-z0-9/+_=.~-]{16,200})"), _random_token, 1,
            anchors=("key", "secret", "token", "passw", "pwd", "credential", "auth"), folded=True,
            before=8, after=260)),
}


@dataclass(frozen=True, slots=True)
class Custom:
    """An organisation's own pattern, compiled by RE2."""

    name: str
    pattern: object  # a compiled re2 pattern


def compile_custom(name: str, pattern: str) -> Custom:
    """RE2 or nothing: raises ValueError for a pattern RE2 cannot compile (or an empty one)."""
    if not pattern:
        raise ValueError("is empty")
    try:
        compiled = re2.compile(pattern)
    except re2.error as exc:
        raise ValueError(f"RE2 cannot compile it: {exc}") from None
    return Custom(name, compiled)


# Most specific shapes first: a dotted quad is an IP address before it is a phone number.
_ORDER = ("secret", "email", "ip_address", "iban", "credit_card", "ssn", "phone")


@dataclass(frozen=True)
class PiiRules:
    """What a pii policy checks: each kind (built-in, or a pattern of its own) with its action
    (log | redact | block), and its own patterns compiled by RE2."""

    actions: tuple[tuple[str, str], ...]
    patterns: tuple[Custom, ...] = ()

    def action(self, kind: str) -> str | None:
        return next((a for k, a in self.actions if k == kind), None)


_ACTIONS = {"GUARDRAIL_ACTION_LOG": "log", "GUARDRAIL_ACTION_REDACT": "redact",
            "GUARDRAIL_ACTION_BLOCK": "block"}


def pii_rules(config: dict) -> PiiRules:
    """A stored PiiConfig (proto3 JSON). No entities: every built-in kind, unless the policy
    has patterns of its own, which are then all it checks."""
    default = _ACTIONS[config.get("action", "GUARDRAIL_ACTION_LOG")]
    patterns = config.get("patterns", ())
    kinds = config.get("entities") or (() if patterns else KINDS)
    overrides = config.get("entity_actions", {})
    return PiiRules(
        tuple((k, _ACTIONS[overrides[k]] if k in overrides else default) for k in kinds)
        + tuple((p["name"], _ACTIONS[p["action"]] if p.get("action") else default)
                for p in patterns),
        tuple(compile_custom(p["name"], p["pattern"]) for p in patterns))


def _overlaps(found: list[Finding], message: int, start: int, end: int) -> bool:
    return any(f.message == message and f.start < end and start < f.end for f in found)


# Where a number-shaped kind can be: seven or more characters of digits and separators.
_DIGIT_RUN = re.compile(r"\d[\d .()/+-]{5,}\d")


def _windows(text: str, lowered: str, runs: list[tuple[int, int]],
             d: _Detector) -> list[tuple[int, int]]:
    """The parts of the text where the detector can match, merged, in order. Where anchors
    are dense (a crafted message) the whole text is one window: the patterns are linear, a
    Python loop over every anchor would not be cheaper."""
    dense = len(text) // 64 + 1
    if not d.anchors:
        if len(runs) > dense:
            return [(0, len(text))]
        spans = [(start - d.before, end + d.after) for start, end in runs]
    else:
        haystack, spans = (lowered if d.folded else text), []
        for anchor in d.anchors:
            at = haystack.find(anchor)
            while at != -1:
                if d.paired and haystack.find(anchor, at + 1, at + 6) == -1:
                    at = haystack.find(anchor, at + 1)
                    continue
                spans.append((at - d.before, at + d.after))
                if len(spans) > dense:
                    return [(0, len(text))]
                at = haystack.find(anchor, at + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        start, end = max(start, 0), min(end, len(text))
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _number_starts(text: str, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(where a number may begin, the end of its run): each run's start (and the "+" or "("
    just before it), and each place after a space inside it."""
    starts = []
    for start, end in runs:
        if start and text[start - 1] in "+(":
            starts.append((start - 1, end))
        starts.append((start, end))
        space = text.find(" ", start, end)
        while space != -1:
            starts.append((space + 1, end))
            space = text.find(" ", space + 1, end)
    return starts


def _at_numbers(text: str, starts: list[tuple[int, int]], detectors: list[_Detector],
                found: list[tuple[int, int, str]]) -> None:
    """The first detector (most specific first) whose pattern matches where a number begins,
    and which its validator confirms, has the number."""
    covered = -1
    for pos, end in starts:
        if pos < covered:
            continue
        for d in detectors:
            match = d.pattern.match(text, pos, min(len(text), end + d.after))
            if match is not None and (d.valid is None or d.valid(match.group())):
                found.append((*match.span(), d.kind))
                covered = match.end()
                break


# Between messages when they are scanned as one text: no built-in pattern matches it, so no
# finding spans two messages.
_SEPARATOR = "\x00"


def scan(contents: Sequence[str], kinds: Iterable[str],
         custom: Sequence[Custom] = ()) -> list[Finding]:
    """Every finding of the kinds (and custom patterns) in the messages, by message and
    position; where two overlap, the most specific kind (_ORDER, then custom) keeps the span.
    The messages are scanned as one text (one pass of each pattern, not one per message)."""
    detectors = [d for kind in _ORDER if kind in kinds for d in _DETECTORS[kind]]
    found: list[tuple[int, int, str]] = []
    if detectors:
        text = _SEPARATOR.join(contents)
        runs = [m.span() for m in _DIGIT_RUN.finditer(text)] \
            if any(digit in text for digit in "0123456789") else []
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters lower-case to two: no folded offsets
            lowered = ""
        numbers = [d for d in detectors if d.at_numbers]
        starts = _number_starts(text, runs)
        if len(starts) <= len(text) // 64 + 1:  # else (crafted) search the windows instead
            _at_numbers(text, starts, numbers, found)
            detectors = [d for d in detectors if not d.at_numbers]
        for detector in detectors:
            windows = [(0, len(text))] if detector.folded and not lowered else \
                _windows(text, lowered, runs, detector)
            for lo, hi in windows:
                for match in detector.pattern.finditer(text, lo, hi):
                    start, end = match.span(detector.group)
                    if any(s < end and start < e for s, e, _ in found):
                        continue
                    if detector.valid is None or detector.valid(match.group(detector.group)):
                        found.append((start, end, detector.kind))
    starts = [0, *accumulate(len(c) + 1 for c in contents)]
    findings = []
    for start, end, kind in found:
        i = bisect_right(starts, start) - 1
        findings.append(Finding(kind, i, start - starts[i], end - starts[i]))
    for index, text in enumerate(contents):
        for pattern in custom:
            for match in pattern.pattern.finditer(text):  # type: ignore[attr-defined]
                start, end = match.span()
                if end > start and not _overlaps(findings, index, start, end):
                    findings.append(Finding(pattern.name, index, start, end))
    return sorted(findings, key=lambda f: (f.message, f.start))


def redact(text: str, findings: Iterable[Finding]) -> str:
    """The text with each finding's span replaced by its kind's placeholder."""
    out, at = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        out += [text[at:f.start], replacement(f.kind)]
        at = f.end
    out.append(text[at:])
    return "".join(out)


def replacement(kind: str) -> str:
    return REPLACEMENTS.get(kind) or f"[{kind.upper()}]"
