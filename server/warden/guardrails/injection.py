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

Every pattern is bounded; a message is read once per signal (linear time). What it misses:
attacks in other languages than English, paraphrases that use none of these words, and
injections spread over several messages.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass

_I = re.IGNORECASE

_OVERRIDE = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|drop|discard)\b[^.\n]{0,40}?"
    r"\b(?:all|any|every|the|your|my|previous|prior|above|earlier|preceding|initial|original|"
    r"former|system|these|those)\b[^.\n]{0,30}?\b(?:instructions?|prompts?|rules?|guidelines?|"
    r"directives?|directions?|programming|polic(?:y|ies)|restrictions?|guardrails?|"
    r"constraints?|commands?|training)\b|"
    r"\b(?:ignore|disregard|forget)\s+(?:all\s+)?(?:of\s+)?(?:the|everything)\s+(?:above|before|"
    r"previous|prior|preceding)\b", _I)
_VERB = re.compile(r"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|drop|discard)\b",
                   _I)
_CANCELLED = re.compile(r"\b(?:previous|prior|earlier|original|above) instructions (?:are|were|"
                        r"have been) (?:cancel+ed|void|revoked|replaced|obsolete)\b", _I)
# At most this many places are examined per signal: a message repeating a trigger word
# thousands of times costs no more than one that holds it this many times.
_TRIES = 50
_NEW_RULES = re.compile(
    r"\b(?:new|updated|real|actual|true) (?:instructions?|rules|directives?|task)\s*:|"
    r"\bfrom now on\b|\bstarting now\b|\bfor the rest of (?:this|our) conversation\b", _I)
_PERSONA = re.compile(
    r"\byou are (?:now|going to (?:act|be|pretend))\b|\bact as (?:an? )?(?:unfiltered|"
    r"uncensored|evil|unrestricted|jailbroken|amoral)\b|\bpretend (?:to be|you are|that you)\b|"
    r"\b(?:roleplay|role-play|role play) as\b|\bstay in character\b|\bbreak(?:ing)? character\b|"
    r"\bimmerse yourself\b|\bsimulate (?:an?|the)\b", _I)
_JAILBREAK = re.compile(
    r"\bDAN\b|\bdo anything now\b|\bdeveloper mode\b|\bjailbr(?:eak|oken)\b|\bdude mode\b|"
    r"\b(?:no|without any|free (?:of|from)) (?:safety |moral |ethical )?(?:restrictions|limits|"
    r"limitations|filters?|censorship|rules|guidelines|ethics|morals|boundaries)\b|"
    r"\bno longer (?:restricted|bound|limited|constrained)\b|\bunfiltered\b|\buncensored\b|"
    r"\bamoral\b|\bnever refuses?\b|\b(?:can|will) (?:say|do|answer) anything\b|"
    r"\bnot bound by\b|\bopenai(?:'s)? (?:content )?polic(?:y|ies)\b|\bcontent polic(?:y|ies)\b|"
    r"\bwithout (?:any )?(?:warnings?|disclaimers?)\b|\bdoes not (?:care|follow)\b", _I)
_EXTRACT = re.compile(
    r"\b(?:reveal|show|print|repeat|output|display|leak|give me|tell me|what (?:is|are|was|were))"
    r"\b[^.\n]{0,20}?\b(?:your|the|my)\b[^.\n]{0,12}?\b(?:system (?:prompt|message|instructions?)|"
    r"initial (?:prompt|instructions?)|hidden (?:prompt|instructions?)|(?:instructions?|prompt) "
    r"you (?:were|have been) given)|\brepeat (?:the )?(?:words|text) above\b|"
    r"\b(?:instructions?|prompt) you were given\b", _I)
_DELIMITER = re.compile(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|"
    r"\[/?INST\]|<</?SYS>>|</?s>|^\s*#{2,}\s*(?:system|instruction|new instructions?)\b|"
    r"^\s*(?:system|assistant)\s*:|```\s*system\b|<(?:system|instructions?)>", _I | re.M)
_ADDRESSED = re.compile(
    r"\b(?:note|message|instructions?) (?:to|for) (?:the )?(?:ai|llm|assistant|model|chatbot)\b|"
    r"\bif you are (?:an? )?(?:ai|llm|language model|assistant|chatbot)\b|"
    r"\b(?:ai|assistant|model),? (?:please )?(?:ignore|disregard|instead|you must)\b|"
    r"\bimportant(?: instructions?)?\s*[:!]\s*(?:ignore|disregard|you must)\b", _I)
_COMPLY = re.compile(
    r"\byou (?:must|will|shall) (?:now |always )?(?:answer|comply|obey|respond|do)\b|"
    r"\bwithout (?:question|hesitation|refusing)\b|\bdo not (?:refuse|decline)\b|"
    r"\bnever (?:say|tell me) (?:no|you can't|that you cannot)\b|\bremember to always\b", _I)
_BLOB = re.compile(r"[A-Za-z0-9+/=]{24}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,4000}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :]?){16,2000}")
_LEET = str.maketrans("013457@$!|", "oieastasil")
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\U000e0000-\U000e007f]")
_TAGS = re.compile("[\U000e0000-\U000e007f]")
_WORD = re.compile(r"\w{3,40}")

# Weights of the signals: the chance alone that a message showing it is an attack.
WEIGHTS = {"override": 0.85, "new_rules": 0.3, "persona": 0.4, "jailbreak": 0.45,
           "extract": 0.8, "delimiter": 0.45, "addressed": 0.7, "comply": 0.35,
           "encoded": 0.75, "leet": 0.75, "invisible": 0.4, "tags": 0.9, "homoglyph": 0.5}


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    signals: tuple[str, ...]


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
    return len(text) >= 8 and printable >= 0.9 * len(text) and bool(
        _overrides(text) or _JAILBREAK.search(text) or _EXTRACT.search(text)
        or _PERSONA.search(text))


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


def _overrides(text: str) -> bool:
    """An instruction override: tried where each of the first _TRIES override verbs is."""
    for n, verb in enumerate(_VERB.finditer(text)):
        if n == _TRIES:
            break
        if _OVERRIDE.match(text, verb.start()):
            return True
    return bool(_CANCELLED.search(text))


def _distinct(pattern: re.Pattern[str], text: str) -> int:
    """How many different phrases of the signal the text holds (at most three), reading at
    most _TRIES matches."""
    seen: set[str] = set()
    for n, match in enumerate(pattern.finditer(text)):
        seen.add(match.group().lower())
        if len(seen) == 3 or n == _TRIES:
            break
    return len(seen)


# Words at least one of which every phrase of a signal holds (lower case): a signal's pattern
# runs only on a message that has one, found with str's own search, which costs a fraction
# of a pattern's pass (most messages hold none of them).
_VERBS = ("ignore", "disregard", "forget", "override", "bypass", "skip", "abandon", "drop",
          "discard")
_TRIGGERS = {
    "new_rules": ("instruction", "rules", "directive", "task", "from now on", "starting now",
                  "for the rest of"),
    "persona": ("you are", "act as", "pretend", "role", "character", "immerse", "simulate"),
    "jailbreak": ("dan", "anything", "developer mode", "jailbr", "dude", "restrict", "limit",
                  "filter", "censor", "rules", "guideline", "ethic", "moral", "boundar",
                  "no longer", "never refuse", "not bound", "polic", "warning", "disclaimer",
                  "does not"),
    "extract": ("system", "initial", "hidden", "were given", "have been given", "repeat"),
    "delimiter": ("<|", "[inst", "[/inst", "<<sys", "<</sys", "</s>", "<s>", "##", "system",
                  "assistant", "```", "<instruction"),
    "addressed": ("ai", "llm", "assistant", "model", "chatbot", "important"),
    "comply": ("you must", "you will", "you shall", "without", "do not", "never say",
               "never tell", "remember to always"),
}
_PATTERNS = {"new_rules": _NEW_RULES, "persona": _PERSONA, "jailbreak": _JAILBREAK,
             "extract": _EXTRACT, "delimiter": _DELIMITER, "addressed": _ADDRESSED,
             "comply": _COMPLY}


def _has(lowered: str, words: tuple[str, ...]) -> bool:
    return any(word in lowered for word in words)


# How far a signal's phrase may reach before and after its trigger word.
_BEFORE, _AFTER = 80, 120


def _windowed(pattern: re.Pattern[str], text: str, lowered: str,
              words: tuple[str, ...]) -> int:
    """_distinct(), searched only around the first _TRIES occurrences of the trigger words:
    Python's `re` costs 100 ns and more a character for these patterns; a phrase of the
    signal holds a trigger, and a window around each is all it can span."""
    if len(lowered) != len(text):  # a few characters lower-case to two: no offsets
        return _distinct(pattern, text)
    spans = []
    for word in words:
        at = lowered.find(word)
        while at != -1 and len(spans) < _TRIES:
            spans.append((max(at - _BEFORE, 0), at + len(word) + _AFTER))
            at = lowered.find(word, at + 1)
    seen: set[str] = set()
    end = -1
    for lo, hi in sorted(spans):
        lo = max(lo, end)
        if lo >= hi:
            continue
        for match in pattern.finditer(text, lo, hi):
            seen.add(match.group().lower())
            if len(seen) == 3:
                return 3
        end = hi
    return len(seen)


def score(text: str) -> Score:
    lowered = text.lower()
    found = ["override"] if (_has(lowered, _VERBS) or "instructions" in lowered) \
        and _overrides(text) else []
    for name, pattern in _PATTERNS.items():
        # A signal seen in several different phrases counts again (up to three times): one
        # "developer mode" is a settings screen, with "content policy" and "unfiltered" it
        # is a jailbreak.
        found += [name] * _windowed(pattern, text, lowered, _TRIGGERS[name])
    if "override" not in found and any(ch in text for ch in "013457@$|!"):
        folded = lowered.translate(_LEET)
        if folded != lowered and _has(folded, _VERBS) and _overrides(folded):
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


DEFAULT_ROLES = ("user", "tool", "function")


@dataclass(frozen=True)
class InjectionRules:
    """What a prompt_injection policy checks."""

    action: str  # log | block
    threshold: float
    roles: tuple[str, ...] = DEFAULT_ROLES
