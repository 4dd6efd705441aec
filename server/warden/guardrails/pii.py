"""Personal data and secrets in a prompt: where they are, by kind, never what they are.

A detector finds candidates with a pattern and keeps those a validator confirms: a card number
passes Luhn and has a card network's prefix, an IBAN its ISO 7064 checksum, an SSN the SSA's
rules, a national id its country's check digits (python-stdnum), a phone number
libphonenumber's rules for its region, an IP address Python's parser;
a secret has the shape of a provider's key or is a high-entropy token right after a word such
as key, secret, token or password. What looks like one of these but is not (an order number
failing Luhn, a version string, a date, an ISBN) is left alone: a guardrail that fires on
ordinary text gets turned off.

The built-in detectors (pii_kinds.py) do bounded work at each start position, so a message is
scanned in linear time (tests/unit/test_pii.py times crafted messages). Patterns from policies
run on RE2 (`google-re2`), which is linear by construction; one RE2 cannot compile is refused
when the policy is written.

Offsets are in Unicode code points of the message's content (Python string indices).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import re2

from warden.guardrails.pii_kinds import DETECTORS, KINDS, ORDER, REPLACEMENTS, Detector

__all__ = ["KINDS", "REPLACEMENTS", "Finding", "PiiRules", "compile_custom", "pii_rules",
           "redact", "replacement", "scan"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # a built-in kind, or a policy pattern's name
    message: int  # index of the message in the request
    start: int
    end: int


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
             d: Detector) -> list[tuple[int, int]]:
    """The parts of the text where the detector can match, merged, in order. Where anchors
    are dense (a crafted message) the whole text is one window: the patterns are linear, a
    Python loop over every anchor would not be cheaper."""
    dense = len(text) // 64 + 1
    if d.whole:
        return [(0, len(text))]
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


def _at_numbers(text: str, starts: list[tuple[int, int]], detectors: list[Detector],
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
    position; where two overlap, the most specific kind (ORDER, then custom) keeps the span.
    The messages are scanned as one text (one pass of each pattern, not one per message)."""
    detectors = [d for kind in ORDER if kind in kinds for d in DETECTORS[kind]]
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
