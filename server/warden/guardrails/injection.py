"""Prompt injection: a score in [0, 1] for one message, from signals a reviewer can read.

A heuristic, not a model: each signal is a pattern of how injections are written, with a
weight, and a message's score is the noisy-or of the signals it shows (1 - the product of
1 - weight), so two weak signals together count more than either. The signals:

- instruction override: ignore / disregard / forget ... previous / above ... instructions;
- role-play to escape the system prompt: "you are now", "DAN", "developer mode", "no
  restrictions", "stay in character", "never refuse", a persona that "can do anything";
- system-prompt extraction: reveal / repeat / print your system prompt or the text above;
- delimiter tricks: chat-template tokens and fake role headers (`<|im_start|>`, `[INST]`,
  `### System:`) inside a message;
- encoded payloads: base64 or hex that decodes to text holding instruction words, leetspeak
  of them;
- invisible characters (zero width, bidi overrides, Unicode tag characters) and words that
  mix Latin with Cyrillic or Greek look-alikes;
- text addressed to the model from inside a document or tool output ("note to the AI",
  "new instructions:", "if you are an AI assistant").

Every pattern runs on RE2 (linear time); a message is read once per signal. What it misses:
attacks in other languages than English, paraphrases that use none of these words, and
injections spread over several messages.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import re2


def _compile(pattern: str, multiline: bool = False) -> re2._Regexp:
    return re2.compile(("(?im)" if multiline else "(?i)") + pattern)


# The phrases of each signal, as RE2 patterns (case-insensitive): RE2 reads a text in one
# linear pass of a few nanoseconds a character, where Python's `re` takes 100 ns and more a
# character for alternations like these.
_SOURCES = {
    "override": (
        r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|drop|discard)\b[^.\n]{0,40}?"
        r"\b(?:all|any|every|the|your|my|previous|prior|above|earlier|preceding|initial|"
        r"original|former|system|these|those)\b[^.\n]{0,30}?\b(?:instructions?|prompts?|"
        r"rules?|guidelines?|directives?|directions?|programming|polic(?:y|ies)|restrictions?|"
        r"guardrails?|constraints?|commands?|training)\b|"
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+)?(?:of\s+)?(?:the|everything)\s+"
        r"(?:above|before|previous|prior|preceding)\b|"
        r"\b(?:previous|prior|earlier|original|above) instructions (?:are|were|have been) "
        r"(?:cancel+ed|void|revoked|replaced|obsolete)\b"),
    "new_rules": (
        r"\b(?:new|updated|real|actual|true) (?:instructions?|rules|directives?|task)\s*:|"
        r"\bfrom now on\b|\bstarting now\b|\bfor the rest of (?:this|our) conversation\b"),
    "persona": (
        r"\byou are (?:now|going to (?:act|be|pretend))\b|\bact as (?:an? )?(?:unfiltered|"
        r"uncensored|evil|unrestricted|jailbroken|amoral)\b|\bpretend (?:to be|you are|that "
        r"you)\b|\b(?:roleplay|role-play|role play) as\b|\bstay in character\b|"
        r"\bbreak(?:ing)? character\b|\bimmerse yourself\b|\bsimulate (?:an?|the)\b"),
    "jailbreak": (
        r"\bDAN\b|\bdo anything now\b|\bdeveloper mode\b|\bjailbr(?:eak|oken)\b|\bdude mode\b|"
        r"\b(?:no|without any|free (?:of|from)) (?:safety |moral |ethical )?(?:restrictions|"
        r"limits|limitations|filters?|censorship|rules|guidelines|ethics|morals|boundaries)\b|"
        r"\bno longer (?:restricted|bound|limited|constrained)\b|\bunfiltered\b|\buncensored\b|"
        r"\bamoral\b|\bnever refuses?\b|\b(?:can|will) (?:say|do|answer) anything\b|"
        r"\bnot bound by\b|\bopenai(?:'s)? (?:content )?polic(?:y|ies)\b|"
        r"\bcontent polic(?:y|ies)\b|\bwithout (?:any )?(?:warnings?|disclaimers?)\b|"
        r"\bdoes not (?:care|follow)\b"),
    "extract": (
        r"\b(?:reveal|show|print|repeat|output|display|leak|give me|tell me|what (?:is|are|was|"
        r"were))\b[^.\n]{0,20}?\b(?:your|the|my)\b[^.\n]{0,12}?\b(?:system (?:prompt|message|"
        r"instructions?)|initial (?:prompt|instructions?)|hidden (?:prompt|instructions?)|"
        r"(?:instructions?|prompt) you (?:were|have been) given)|"
        r"\brepeat (?:the )?(?:words|text) above\b|\b(?:instructions?|prompt) you were given\b"),
    "delimiter": (
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|"
        r"\[/?INST\]|<</?SYS>>|</?s>|^\s*#{2,}\s*(?:system|instruction|new instructions?)\b|"
        r"^\s*(?:system|assistant)\s*:|```\s*system\b|<(?:system|instructions?)>"),
    "addressed": (
        r"\b(?:note|message|instructions?) (?:to|for) (?:the )?(?:ai|llm|assistant|model|"
        r"chatbot)\b|\bif you are (?:an? )?(?:ai|llm|language model|assistant|chatbot)\b|"
        r"\b(?:ai|assistant|model),? (?:please )?(?:ignore|disregard|instead|you must)\b|"
        r"\bimportant(?: instructions?)?\s*[:!]\s*(?:ignore|disregard|you must)\b"),
    "comply": (
        r"\byou (?:must|will|shall) (?:now |always )?(?:answer|comply|obey|respond|do)\b|"
        r"\bwithout (?:question|hesitation|refusing)\b|\bdo not (?:refuse|decline)\b|"
        r"\bnever (?:say|tell me) (?:no|you can't|that you cannot)\b|\bremember to always\b"),
}
_PHRASES = {name: _compile(source, name == "delimiter") for name, source in _SOURCES.items()}
# Any phrase of any signal: most texts hold none, and one pass says so.
_ANY = _compile("|".join(f"(?:{source})" for source in _SOURCES.values()), multiline=True)
_OVERRIDE = _PHRASES["override"]
_BLOB = re2.compile(r"[A-Za-z0-9+/=]{24}")
# Run only where _BLOB found one; RE2 repeats at most 1000 times.
_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,4000}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :]?){16,2000}")
_LEET = str.maketrans("013457@$!|", "oieastasil")
_LEET_CHARS = "013457@$|!"
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\U000e0000-\U000e007f]")
_TAGS = re.compile("[\U000e0000-\U000e007f]")
_WORD = re.compile(r"\w{3,40}")
# At most this many matches are read per signal and text: a text repeating a phrase
# thousands of times costs no more than one that holds it this many times.
_TRIES = 50

# Weights of the signals: the chance alone that a message showing it is an attack.
WEIGHTS = {"override": 0.85, "new_rules": 0.3, "persona": 0.4, "jailbreak": 0.45,
           "extract": 0.8, "delimiter": 0.45, "addressed": 0.7, "comply": 0.35,
           "encoded": 0.75, "leet": 0.75, "invisible": 0.4, "tags": 0.9, "homoglyph": 0.5}


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    signals: tuple[str, ...]


_NONE = Score(0.0, ())


def _decoded_instructions(text: str) -> bool:
    """Base64 or hex in the message that decodes to text with an override or a jailbreak."""
    for n, match in enumerate(_BASE64.finditer(text)):
        if n == _TRIES:
            return False
        blob = match.group()
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False)
        except (binascii.Error, ValueError):
            continue
        if _plain(decoded):
            return True
    for n, match in enumerate(_HEX.finditer(text)):
        if n == _TRIES:
            return False
        try:
            decoded = bytes.fromhex(re.sub(r"[ :]", "", match.group()))
        except ValueError:
            continue
        if _plain(decoded):
            return True
    return False


def _plain(data: bytes) -> bool:
    text = data.decode("utf-8", "ignore")
    printable = sum(ch.isprintable() for ch in text)
    return len(text) >= 8 and printable >= 0.9 * len(text) and any(
        _PHRASES[name].search(text) for name in ("override", "jailbreak", "extract", "persona"))


def _mixed_script(text: str) -> bool:
    """A word of Latin letters with a Cyrillic or Greek look-alike inside."""
    for match in _WORD.finditer(text):
        word = match.group()
        if word.isascii() or word.isalpha() and not any(ch.isascii() for ch in word):
            continue
        scripts = set()
        for ch in word:
            if ch.isalpha():
                name = unicodedata.name(ch, "")
                scripts.add(name.split(" ", 1)[0])
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            return True
    return False


def _distinct(pattern: re2._Regexp, text: str) -> int:
    """How many different phrases of the signal the text holds (at most three), reading at
    most _TRIES matches."""
    seen: set[str] = set()
    for n, match in enumerate(pattern.finditer(text)):
        seen.add(match.group().lower())
        if len(seen) == 3 or n == _TRIES:
            break
    return len(seen)


def _folded(text: str) -> str | None:
    """The text with leetspeak read as letters, when it holds any."""
    if not any(ch in text for ch in _LEET_CHARS):
        return None
    lowered = text.lower()
    folded = lowered.translate(_LEET)
    return folded if folded != lowered else None


def score(text: str) -> Score:
    found = []
    if _ANY.search(text):
        found += ["override"] if _OVERRIDE.search(text) else []
        for name, pattern in _PHRASES.items():
            if name != "override":
                # A signal seen in several different phrases counts again (up to three
                # times): one "developer mode" is a settings screen, with "content policy"
                # and "unfiltered" it is a jailbreak.
                found += [name] * _distinct(pattern, text)
    if "override" not in found:
        folded = _folded(text)
        if folded is not None and _OVERRIDE.search(folded):
            found.append("leet")
    if _BLOB.search(text) and _decoded_instructions(text):
        found.append("encoded")
    if not text.isascii():
        if _TAGS.search(text):
            found.append("tags")
        elif _INVISIBLE.search(text):
            found.append("invisible")
        if _mixed_script(text):
            found.append("homoglyph")
    miss = 1.0
    for name in found:
        miss *= 1.0 - WEIGHTS[name]
    return Score(round(1.0 - miss, 3), tuple(found))


def scores(texts: Sequence[str]) -> list[Score]:
    """score() of each text. Most prompts show no signal at all, and the passes that find
    that run once over all the texts joined (an RE2 pass costs a few microseconds, most of it
    per call rather than per character); only when one finds something is each text read on
    its own. The blank line between texts ends every phrase, so joining adds no finding."""
    joined = "\n\n".join(texts)
    folded = _folded(joined)
    if (_ANY.search(joined) is None and (folded is None or _OVERRIDE.search(folded) is None)
            and _BLOB.search(joined) is None and joined.isascii()):
        return [_NONE] * len(texts)
    return [score(text) for text in texts]


DEFAULT_ROLES = ("user", "tool", "function")


@dataclass(frozen=True)
class InjectionRules:
    """What a prompt_injection policy checks."""

    action: str  # log | block
    threshold: float
    roles: tuple[str, ...] = DEFAULT_ROLES
