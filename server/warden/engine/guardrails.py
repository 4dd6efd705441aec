"""The guardrails of a compiled set, checked per call: the PII policies on the prompt's
messages, the rag_sources policies on the document collections it draws on, the
prompt_injection policies on the scores of its messages (guardrails/injection.py).

Every pii policy of the chain applies (restrict-only, like quotas: a child scope adds checks,
it cannot remove a parent's). The messages are scanned once for every kind any of them checks;
then, per finding, the strongest action of the enforced policies that check its kind decides:
block (the call is denied, REASON_PII_DETECTED), else redact (the call is allowed and the
answer carries the messages with the span replaced), else log. A dry-run policy reports what
it would have done and changes nothing. Each policy's result names the kinds it found and
where (message index and code-point offsets), never the text itself, so the decision log and
the audit trail can hold it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from warden.engine.model import PolicyRecord, PolicyResult, Reason, Redactions
from warden.guardrails.injection import scores
from warden.guardrails.pii import KINDS, Finding, redact, scan

# "unredactable": a redaction the entry point cannot apply, which blocks.
_RANK = {"log": 0, "redact": 1, "block": 2, "unredactable": 2}
_VERBS = {"log": "found", "redact": "redacted", "block": "blocked",
          "unredactable": "blocked, as redacting needs a rewritten body (Authorize or ext_proc)"}
_WOULD = {"log": "found", "redact": "would redact", "block": "would block",
          "unredactable": "would block, as redacting needs a rewritten body"}


def _where(findings: Sequence[Finding]) -> str:
    return ", ".join(f"{f.kind} in message {f.message} at {f.start}-{f.end}" for f in findings)


@dataclass(frozen=True)
class Verdict:
    results: list[PolicyResult]
    denied: bool
    redactions: Redactions | None


@dataclass(frozen=True)
class PiiGuard:
    policies: tuple[PolicyRecord, ...]  # most specific first

    def __post_init__(self) -> None:
        kinds = {k for p in self.policies for k, _ in p.pii.actions}  # type: ignore[union-attr]
        object.__setattr__(self, "_kinds", frozenset(k for k in kinds if k in KINDS))
        object.__setattr__(self, "_custom", tuple(
            c for p in self.policies for c in p.pii.patterns))  # type: ignore[union-attr]

    def check(self, messages: Sequence[Any], can_redact: bool = True) -> Verdict:
        """What the policies say of these messages (objects with .content). Where the entry
        point cannot send redacted messages, a redaction blocks instead."""
        contents = [m.content for m in messages]
        findings = scan(contents, self._kinds, self._custom)  # type: ignore[attr-defined]
        results, strongest = [], {}
        for policy in self.policies:
            assert policy.pii is not None
            own = [(f, "unredactable" if a == "redact" and not can_redact else a)
                   for f in findings if (a := policy.pii.action(f.kind)) is not None]
            if policy.enforced:
                for f, a in own:
                    if _RANK[a] > _RANK[strongest.get(f, "log")] or f not in strongest:
                        strongest[f] = a
            results.append(self._result(policy, own))
        if any(_RANK[a] == 2 for a in strongest.values()):
            return Verdict(results, True, None)
        spans = tuple(f for f, a in strongest.items() if a == "redact")
        if not spans:
            return Verdict(results, False, None)
        return Verdict(results, False, Redactions(spans, tuple(
            redact(text, [f for f in spans if f.message == i]) for i, text in
            enumerate(contents))))

    @staticmethod
    def _result(policy: PolicyRecord, own: list[tuple[Finding, str]]) -> PolicyResult:
        if not own:
            return PolicyResult(policy.id, policy.scope_kind, policy.scope_id, "pii",
                                policy.mode, True, Reason.ALLOWED)
        words = _VERBS if policy.enforced else _WOULD
        parts = []
        for action in ("block", "unredactable", "redact", "log"):
            these = [f for f, a in own if a == action]
            if these:
                parts.append(f"{words[action]}: {_where(these)}")
        blocked = any(_RANK[a] == 2 for _, a in own)
        return PolicyResult(policy.id, policy.scope_kind, policy.scope_id, "pii", policy.mode,
                            not blocked, Reason.PII_DETECTED if blocked else Reason.ALLOWED,
                            "; ".join(parts))


def rag_results(policies: Sequence[PolicyRecord], sources: Sequence[str]
                ) -> tuple[list[PolicyResult], bool]:
    """Every rag_sources policy of the chain applies to every source the call names: (their
    results, whether an enforced one blocks)."""
    results, denied = [], False
    for policy in policies:
        assert policy.rag is not None
        why = "; ".join(filter(None, (policy.rag.refusal(s) for s in sources)))
        blocks = bool(why) and policy.rag.action == "block"
        denied = denied or (blocks and policy.enforced)
        results.append(PolicyResult(
            policy.id, policy.scope_kind, policy.scope_id, "rag_sources", policy.mode,
            not blocks, Reason.RAG_SOURCE_NOT_ALLOWED if blocks else Reason.ALLOWED,
            why if blocks else f"found: {why}" if why else ""))
    return results, denied


def injection_results(policies: Sequence[PolicyRecord], messages: Sequence[Any]
                      ) -> tuple[list[PolicyResult], bool]:
    """Each prompt_injection policy on the highest score of the messages of its roles (each
    message scored once, all of them together): (their results, whether an enforced one
    blocks). The result names the message, its score and the signals, never the text."""
    roles = {role for p in policies if p.injection for role in p.injection.roles}
    read = [i for i, m in enumerate(messages) if m.role in roles]
    scored = dict(zip(read, scores([messages[i].content for i in read]), strict=True))
    results, denied = [], False
    for policy in policies:
        rules = policy.injection
        assert rules is not None
        best: tuple[float, int, tuple[str, ...]] = (0.0, -1, ())
        for i, s in scored.items():
            if messages[i].role in rules.roles:
                best = max(best, (s.value, i, s.signals))
        value, index, signals = best
        hit = index >= 0 and value >= rules.threshold
        blocks = hit and rules.action == "block"
        denied = denied or (blocks and policy.enforced)
        where = (f"message {index} scored {value:.2f} ({', '.join(dict.fromkeys(signals))})"
                 if signals else "no signal" if index >= 0 else "no message of its roles")
        verb = ("blocked: " if policy.enforced else "would block: ") if blocks else \
            "found: " if hit else ""
        results.append(PolicyResult(
            policy.id, policy.scope_kind, policy.scope_id, "prompt_injection", policy.mode,
            not blocks, Reason.PROMPT_INJECTION if blocks else Reason.ALLOWED,
            f"{verb}{where}; threshold {rules.threshold:g}"))
    return results, denied
