"""Two pure steps around the counter store: plan() says what to check and count, decide() turns
what the store admitted into a Decision.

Static checks (model access) run first; a request they deny counts against no limit. Limits are
all-or-nothing: the store takes every check or none, so a denied request consumes nothing.
"""

from __future__ import annotations

from warden.engine.model import (
    AuthorizeInput,
    Decision,
    Identity,
    LimitCheck,
    LimitOutcome,
    Plan,
    PolicyRecord,
    PolicyResult,
    Reason,
)


def _result(policy_id: str, scope: tuple[str, str], policy_type: str, mode: str,
            allowed: bool, reason: Reason, message: str = "") -> PolicyResult:
    return PolicyResult(policy_id, scope[0], scope[1], policy_type, mode, allowed, reason, message)


def plan(identity: Identity, request: AuthorizeInput, policies: list[PolicyRecord]) -> Plan:
    results = []
    if identity.allowed_models:
        allowed = request.model in identity.allowed_models
        results.append(_result(
            "", ("api_key", identity.api_key_id), "key_models", "enforce", allowed,
            Reason.ALLOWED if allowed else Reason.MODEL_NOT_ALLOWED,
            "" if allowed else f"this API key may not use model {request.model!r}",
        ))
    checks = [LimitCheck(p, 1) for p in policies
              if p.rate_limit is not None and p.rate_limit.metric == "REQUESTS"]
    result = Plan(identity, request, results, checks)
    if result.denied:
        return Plan(identity, request, results, [])
    return result


def decide(plan: Plan, outcomes: list[LimitOutcome]) -> Decision:
    results = list(plan.results)
    retry_after = None
    for outcome in outcomes:
        policy, limit = outcome.check.policy, outcome.check.policy.rate_limit
        assert limit is not None
        message = "" if outcome.admitted else (
            f"{limit.limit} requests per {limit.window.lower()} reached at "
            f"{policy.scope_kind} {policy.scope_id}")
        results.append(_result(
            policy.id, (policy.scope_kind, policy.scope_id), policy.policy_type, policy.mode,
            outcome.admitted, Reason.ALLOWED if outcome.admitted else Reason.RATE_LIMITED,
            message,
        ))
        if not outcome.admitted and policy.enforced:
            wait = outcome.reset_time - outcome.now
            retry_after = wait if retry_after is None else max(retry_after, wait)
    denials = [r for r in results if not r.allowed and r.mode == "enforce"]
    return Decision(
        allowed=not denials,
        reason=denials[0].reason if denials else Reason.ALLOWED,
        results=results,
        limits=list(outcomes),
        retry_after=retry_after,
    )
