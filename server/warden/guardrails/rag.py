"""What a rag_sources policy lets a prompt draw on: document collections by name, with '*'
patterns (engine/guardrails.py applies every policy of a chain)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


def _matches(patterns: tuple[str, ...], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class RagSources:
    action: str  # log | block
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()

    def refusal(self, source: str) -> str:
        """Why this policy refuses the source ("" when it does not)."""
        if _matches(self.denied, source):
            return f"source {source!r} is denied"
        if self.allowed and not _matches(self.allowed, source):
            return f"source {source!r} is not among the allowed {', '.join(self.allowed)}"
        return ""
