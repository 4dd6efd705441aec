"""A labelled PII corpus, built from templates with a fixed seed: every kind in several formats,
phrasings and positions (start, middle, end of a message, next to punctuation, two in one
message), and at least as many clean messages, many of them near misses (order numbers that
fail Luhn, version strings shaped like IP addresses, dates, times, ISBNs, tracking numbers,
prices, the words key, token and secret next to ordinary words).

Each message is (text, spans): spans are (kind, start, end) of every item that must be found.
"""

from __future__ import annotations

import random
import string

import phonenumbers
from stdnum import verhoeff
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.cn import ric
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.nl import bsn

SEED = 20261207

_NAMES = ["alice", "bob.smith", "j.doe", "maria_garcia", "li.wei", "o'neil", "zoe+news",
          "ahmed.k", "chen99", "sam-taylor", "n.kowalski", "priya.r"]
_DOMAINS = ["example.com", "mail.example.org", "acme.co.uk", "corp.example.net", "uni.edu",
            "shop.example.io", "test-mail.de", "example.travel"]

_TEMPLATES = [
    "{x}",
    "Please contact me at {x} about the refund.",
    "{x} is the one to use from now on.",
    "My details: {x}.",
    "Send it to {x}, thanks!",
    "Can you check whether ({x}) is on file?",
    "The customer wrote: \"reach me on {x} after 5pm\"",
    "Ticket 4471 - update: {x}\nplease verify",
    "- {x}\n- second item",
    "Here it is -> {x} <- double check it.",
    "我的联系方式是 {x} 谢谢",
    "رقمي هو {x} شكرا",
    "Voilà : {x} 🙂",
]


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15),
                                 ("37", 15), ("6011", 16), ("4", 13), ("35", 16)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + _luhn_digit(body)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain" or length == 13:
        return number
    sep = " " if style == "space" else "-"
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


def _bad_luhn(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    good = _luhn_digit(body)
    return body + str((int(good) + rng.randint(1, 9)) % 10)


def _ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    number = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    sep = rng.choice(["-", " "])
    return f"{number[:3]}{sep}{number[3:5]}{sep}{number[5:]}"


def _digits(rng: random.Random, n: int, first: str = string.digits) -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _until(rng: random.Random, make, valid) -> str:
    """A random number of `make` that `valid` accepts (rejection sampling, seeded)."""
    while not valid(number := make(rng)):
        pass
    return number


def _grouped(number: str, sizes: tuple[int, ...], sep: str) -> str:
    out, at = [], 0
    for size in sizes:
        out.append(number[at:at + size])
        at += size
    return sep.join(out)


def _national_id(rng: random.Random) -> tuple[str, str]:
    """(the words before it, a national id with valid check digits), in one of its formats."""
    kind = rng.choice(["cpf", "ric", "nir", "dni", "nie", "cf", "sin", "aadhaar", "bsn",
                       "idnr", "cpf_bare"])
    if kind in ("cpf", "cpf_bare"):
        number = _until(rng, lambda r: _digits(r, 11), cpf.is_valid)
        if kind == "cpf":
            return rng.choice(["", "CPF ", "CPF: "]), \
                f"{number[:3]}.{number[3:6]}.{number[6:9]}-{number[9:]}"
        return rng.choice(["CPF ", "cpf nº ", "my CPF is "]), number
    if kind == "ric":
        body = (f"{rng.choice(['110101', '310104', '440305', '360426', '510104'])}"
                f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
                f"{rng.randint(0, 999):03d}")
        return "", body + ric.calc_check_digit(body + "0")  # it reads the digits before the last
    if kind == "nir":
        body = (f"{rng.choice('12')}{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}"
                f"{rng.randint(1, 95):02d}{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}")
        number = body + nir.calc_check_digits(body)
        if rng.random() < 0.5:
            return "", number
        return "", _grouped(number, (1, 2, 2, 2, 3, 3, 2), " ")
    if kind == "dni":
        body = f"{rng.randint(10**7, 10**8 - 1)}"
        return "", body + rng.choice(["", "-"]) + dni.calc_check_digit(body)
    if kind == "nie":
        body = rng.choice("XYZ") + f"{rng.randint(0, 10**7 - 1):07d}"
        return "", body + nie.calc_check_digit(body)
    if kind == "cf":
        body = ("".join(rng.choice(string.ascii_uppercase) for _ in range(6))
                + f"{rng.randint(0, 99):02d}" + rng.choice("ABCDEHLMPRST")
                + f"{rng.randint(1, 71):02d}" + rng.choice(string.ascii_uppercase)
                + f"{rng.randint(100, 999)}")
        return "", body + codicefiscale.calc_check_digit(body)
    if kind == "sin":
        number = _until(rng, lambda r: _digits(r, 9, "1234567"), sin.is_valid)
        return rng.choice(["SIN ", "SIN: ", "social insurance number "]), \
            _grouped(number, (3, 3, 3), rng.choice([" ", "-", ""]))
    if kind == "aadhaar":
        body = _digits(rng, 11, "23456789")
        number = body + verhoeff.calc_check_digit(body)
        return rng.choice(["Aadhaar ", "aadhaar no. ", "Aadhar: "]), \
            _grouped(number, (4, 4, 4), rng.choice([" ", ""]))
    if kind == "bsn":
        return rng.choice(["BSN ", "BSN: ", "burgerservicenummer "]), \
            _until(rng, lambda r: _digits(r, 9, "123456789"), bsn.is_valid)
    number = _until(rng, lambda r: _digits(r, 11, "123456789"), idnr.is_valid)
    return rng.choice(["Steuer-ID ", "Steuer-ID: ", "IdNr "]), \
        _grouped(number, (2, 3, 3, 3), rng.choice([" ", ""]))


def _bad_national_id(rng: random.Random) -> str:
    """Shaped like a national id, with check digits that do not add up, or without the word
    that names one."""
    return rng.choice([
        lambda: (lambda n: f"Ref {n[:3]}.{n[3:6]}.{n[6:9]}-{n[9:]} attached")(
            _until(rng, lambda r: _digits(r, 11), lambda n: not cpf.is_valid(n))),
        lambda: "Code " + _until(rng, lambda r: f"{r.randint(10**7, 10**8 - 1)}"
                                 f"{r.choice(string.ascii_uppercase)}",
                                 lambda n: not dni.is_valid(n)) + " applied",
        lambda: "Batch " + (lambda n: n + str((int(ric.calc_check_digit(n + "0").replace(
            "X", "10")) + 1) % 10))(_digits(rng, 17)),
        lambda: f"The sin of pride, chapter {rng.randint(1, 30)}.",
        lambda: "BSN " + _until(rng, lambda r: _digits(r, 9, "123456789"),
                                lambda n: not bsn.is_valid(n)) + " is wrong, sorry",
        lambda: "Part " + "".join(rng.choice(string.ascii_uppercase) for _ in range(6))
                + f"{rng.randint(10, 99)}X{rng.randint(10, 99)}Q{rng.randint(100, 999)}Z",
    ])()


def _iban(rng: random.Random) -> str:
    # Countries whose account numbers carry no check of their own that random digits would fail.
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("AT", 20),
                                  ("IT", 27), ("CH", 21)])
    if country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + \
            "".join(rng.choice(string.digits) for _ in range(14))
    elif country == "NL":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + \
            "".join(rng.choice(string.digits) for _ in range(10))
    elif country == "IT":
        bban = rng.choice(string.ascii_uppercase) + \
            "".join(rng.choice(string.digits) for _ in range(22))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


_PHONE_REGIONS = ["US", "US", "US", "GB", "FR", "DE", "JP", "IN", "BR", "AU", "ES", "CA"]


def _phone(rng: random.Random) -> str:
    while True:
        region = rng.choice(_PHONE_REGIONS)
        example = phonenumbers.example_number(region)
        national = str(example.national_number)
        # The example with its last four digits changed, kept if still a valid number.
        national = national[:-4] + "".join(rng.choice(string.digits) for _ in range(4))
        number = phonenumbers.parse(f"+{example.country_code}{national}")
        if not phonenumbers.is_valid_number(number):
            continue
        if region == "US" or region == "CA":
            style = rng.choice(["national", "international", "dots", "e164"])
        else:
            style = rng.choice(["international", "e164"])
        if style == "national":
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        if style == "dots":
            n = national
            return f"{n[:3]}.{n[3:6]}.{n[6:]}"
        if style == "e164":
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.65:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xffff):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return ":".join(groups)
    return f"{groups[0]}:{groups[1]}::{groups[6]}:{groups[7]}"


def _token(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits
           ) -> str:
    while True:
        token = "".join(rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
            return token


def _secret(rng: random.Random) -> tuple[str, str]:
    """(prefix text, secret): the prefix is part of the message, not of the finding."""
    kind = rng.choice(["openai", "project", "anthropic", "aws", "github", "slack", "jwt",
                       "pem", "named", "named"])
    if kind == "openai":
        return "", "sk-" + _token(rng, 48)
    if kind == "project":
        return "", "sk-proj-" + _token(rng, 64, string.ascii_letters + string.digits + "_-")
    if kind == "anthropic":
        return "", "sk-ant-api03-" + _token(rng, 80, string.ascii_letters + string.digits + "_-")
    if kind == "aws":
        return "", "AKIA" + _token(rng, 16, string.ascii_uppercase + string.digits)
    if kind == "github":
        return "", "ghp_" + _token(rng, 36)
    if kind == "slack":
        return "", f"xoxb-{rng.randint(10**10, 10**11)}-{rng.randint(10**10, 10**11)}-" + \
            _token(rng, 24)
    if kind == "jwt":
        return "", "eyJhbGciOiJIUzI1NiJ9.eyJ" + _token(rng, 40) + "." + _token(rng, 43)
    if kind == "pem":
        return "", "-----BEGIN RSA PRIVATE KEY-----"
    word = rng.choice(["api_key=", "API key: ", "secret: ", "token = ", "password: ",
                       "access_key=", "Authorization token is "])
    return word, _token(rng, rng.choice([20, 32, 40]), string.ascii_letters + string.digits)


def _email(rng: random.Random) -> str:
    email = f"{rng.choice(_NAMES)}@{rng.choice(_DOMAINS)}"
    return email.upper() if rng.random() < 0.1 else email


_MAKERS = {"email": lambda rng: ("", _email(rng)), "phone": lambda rng: ("", _phone(rng)),
           "credit_card": lambda rng: ("", _card(rng)), "ssn": lambda rng: ("", _ssn(rng)),
           "ip_address": lambda rng: ("", _ip(rng)), "iban": lambda rng: ("", _iban(rng)),
           "secret": _secret, "national_id": _national_id}


def _clean(rng: random.Random) -> str:
    near = [
        lambda: _bad_national_id(rng),
        lambda: f"Order #{_bad_luhn(rng)} shipped yesterday.",
        lambda: f"Your order number is {_bad_luhn(rng)}; keep it for returns.",
        lambda: f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}."
                f"{rng.randint(0, 9)}.{rng.randint(0, 99)} before Friday.",
        lambda: f"We run v{rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}."
                f"{rng.randint(0, 9)} in production.",
        lambda: f"release {rng.randint(1, 5)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}."
                f"{rng.randint(1, 9)} fixed the crash",
        lambda: f"The meeting is on {rng.randint(2020, 2027)}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}.",
        lambda: f"Due {rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2020, 2027)}"
                ", no later.",
        lambda: f"It happened at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                f"{rng.randint(0, 59):02d} UTC.",
        lambda: "ISBN " + rng.choice(["978-3-16-148410-0", "978-0-306-40615-7",
                                      "0-306-40615-2", "978-1-4028-9462-6"]) + " is the book.",
        lambda: "Tracking: 1Z" + _token(rng, 16, string.ascii_uppercase + string.digits),
        lambda: f"FedEx tracking number {rng.randint(10**11, 10**12 - 1)} arrives Monday.",
        lambda: "USPS " + " ".join(str(rng.randint(1000, 9999)) for _ in range(5)) + " 12",
        lambda: f"The total is ${rng.randint(1, 9)},{rng.randint(100, 999)}."
                f"{rng.randint(10, 99)} including tax.",
        lambda: f"Growth was {rng.randint(1, 99)}.{rng.randint(0, 9)}% year over year.",
        lambda: f"Coordinates {rng.uniform(-80, 80):.4f}, {rng.uniform(-170, 170):.4f}.",
        lambda: f"ZIP {rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}",
        lambda: f"SKU {rng.randint(10, 99)}-{rng.randint(1000, 9999)}-{rng.randint(100, 999)}",
        lambda: f"Invoice {rng.randint(10**9, 10**10 - 1)} is overdue.",
        lambda: f"Room {rng.randint(100, 999)}, building {rng.randint(1, 9)}.",
        lambda: rng.choice([
            "The key takeaway is that costs went down.",
            "Add a primary key constraint to the users table.",
            "What are the key performance indicators for Q3?",
            "The token budget for this call is 4096.",
            "I forgot my password, how do I reset it?",
            "The secret to good bread is patience.",
            "Use the access key holder role for contractors.",
            "Each token costs a fraction of a cent.",
            "Press the API key button in settings to create one.",
            "Our secret sauce is customer service.",
            "The password policy requires twelve characters.",
            "A JWT has three parts separated by dots.",
            "Write to us at support (at) example (dot) com.",
            "Ping @alice on the channel.",
            "The function returns user@host as a string template.",
            "Email addresses look like name@domain.",
            "Set the region to us-east-1 and retry.",
            "Call me maybe, said the song.",
            "The score was 3-2 after extra time.",
            "Chapter 4.2.1 covers the details.",
            "Use ratio 16:9 for the video.",
            "The build took 12:30 minutes.",
            "Pi is about 3.14159265358979.",
            "The IBAN field is required for transfers.",
            "The SSN field must be masked in the UI.",
            "My phone is broken, can you help?",
            "Server error 500 at 10:45, retry later.",
            "The answer is 42 and the question is unknown.",
            "skip-ahead to section three",
            "Serial number SN-2024-00017-B",
            "We hired 1200 people in 2023 and 1500 in 2024.",
            "参考编号 2024-0001，谢谢。",
            "مرحبا، كيف يمكنني المساعدة؟",
            "Café crème, s'il vous plaît ☕",
            "e\u0301e\u0301 combining marks and \u200b zero width",
        ]),
    ]
    return rng.choice(near)()


def corpus() -> list[tuple[str, list[tuple[str, int, int]]]]:
    rng = random.Random(SEED)
    messages: list[tuple[str, list[tuple[str, int, int]]]] = []
    kinds = list(_MAKERS)
    for kind in kinds:
        for _ in range(45):
            prefix, value = _MAKERS[kind](rng)
            template = rng.choice(_TEMPLATES)
            before, after = template.split("{x}")
            text = before + prefix + value + after
            start = len(before) + len(prefix)
            messages.append((text, [(kind, start, start + len(value))]))
    for _ in range(40):  # two kinds in one message
        a, b = rng.sample(kinds, 2)
        (pa, va), (pb, vb) = _MAKERS[a](rng), _MAKERS[b](rng)
        text = f"First {pa}{va} and then {pb}{vb}."
        sa = len("First ") + len(pa)
        sb = sa + len(va) + len(" and then ") + len(pb)
        messages.append((text, [(a, sa, sa + len(va)), (b, sb, sb + len(vb))]))
    positives = len(messages)
    for _ in range(positives + 20):
        messages.append((_clean(rng), []))
    return messages
