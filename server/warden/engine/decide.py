"""What the quotas can cover, and the Decision: fit() says what every quota check of a plan
(engine/compiled.py) can cover given what each may still take, the quota layer takes all of
it or none, and decide() turns what was taken into the Decision.

Quotas are all or nothing, so a denied request consumes nothing. A call whose token quotas or
budgets cannot cover its max_output_tokens is given a lower one (never below the caller's
min_output_tokens) instead of being denied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from warden.engine.model import (
    MAX_OUTPUT,
    Decision,
    Plan,
    QuotaCheck,
    QuotaOutcome,
    Reason,
    result,
)

_METRIC_WORDS = {"REQUESTS": "requests", "INPUT_TOKENS": "input tokens",
                 "OUTPUT_TOKENS": "output tokens", "TOTAL_TOKENS": "tokens"}


@dataclass(slots=True)
class Fit:
    max_output: int  # the max_output_tokens every enforced quota can cover
    fits: list[bool]  # per check: it can cover its amount at max_output
    binding: list[bool]  # per check: it is what lowered max_output


def fit(checks: Sequence[QuotaCheck], available: Sequence[int | None], want_output: int,
        least_output: int) -> Fit:
    """What the quotas can cover, given what each may still take (None: no bound, e.g. a
    fail_open quota with the database away). Pure; the quota layer takes the amounts."""
    out, bounds = want_output, []
    for check, room in zip(checks, available, strict=True):
        bound = MAX_OUTPUT
        if check.policy.enforced and room is not None and check.demand.per_output:
            bound = check.demand.max_output(room)
        bounds.append(bound)
        out = min(out, bound)
    out = max(out, least_output)
    return Fit(out, [room is None or c.demand.amount(out) <= room
                     for c, room in zip(checks, available, strict=True)],
               [b < want_output and b == out for b in bounds])


def _quota_message(outcome: QuotaOutcome) -> str:
    policy = outcome.check.policy
    where = f"{policy.scope_kind} {policy.scope_id}"
    if outcome.unavailable:
        return (f"the database is unreachable and this sidecar holds too little of "
                f"{policy.id}'s allowance; the policy fails closed")
    need = outcome.check.demand.amount(0) if not outcome.check.demand.per_output else None
    if policy.budget is not None:
        return (f"budget of {policy.budget.limit_micros} micros per "
                f"{policy.budget.period.lower()} at {where} cannot cover this call "
                f"({outcome.remaining} micros remain)")
    assert policy.rate_limit is not None
    limit = policy.rate_limit
    text = (f"{limit.limit} {_METRIC_WORDS[limit.metric]} per {limit.window.lower()} reached "
            f"at {where}")
    if limit.metric != "REQUESTS":
        text += f" ({outcome.remaining} remain{'' if need is None else f', {need} needed'})"
    return text


def decide(plan: Plan, outcomes: Sequence[QuotaOutcome],
           max_output: int | None = None, now: datetime | None = None) -> Decision:
    """The decision for a plan whose quota checks came out as `outcomes`; `max_output` is
    what fit() allowed (default: the plan's); `now` dates a plan's retry_at."""
    results = list(plan.results)
    retry_after = None
    if plan.retry_at is not None and now is not None:
        retry_after = max(plan.retry_at - now, timedelta(seconds=1))
    route = plan.route
    lowered = route is not None and max_output is not None and \
        max_output < route.max_output_tokens
    for outcome in outcomes:
        policy = outcome.check.policy
        if outcome.admitted:
            if lowered and outcome.binding and route:
                results.append(result(policy, True, Reason.ALLOWED, (
                    f"max_output_tokens lowered from {route.max_output_tokens} to "
                    f"{max_output} to fit the remaining allowance")))
            else:
                results.append(outcome.check.admitted or result(policy, True, Reason.ALLOWED))
            continue
        reason = (Reason.QUOTA_UNAVAILABLE if outcome.unavailable else
                  Reason.BUDGET_EXHAUSTED if policy.budget is not None else Reason.RATE_LIMITED)
        results.append(result(policy, False, reason, _quota_message(outcome)))
        if policy.enforced:
            wait = (timedelta(seconds=1) if outcome.unavailable or outcome.reset_time is None
                    else outcome.reset_time - outcome.now)
            retry_after = wait if retry_after is None else max(retry_after, wait)
    denials = [r for r in results if not r.allowed and r.mode == "enforce"]
    if route is not None and lowered and max_output is not None:
        route = replace(route, max_output_tokens=max_output)
    return Decision(
        allowed=not denials,
        reason=denials[0].reason if denials else Reason.ALLOWED,
        results=results,
        limits=list(outcomes),
        retry_after=retry_after,
        route=None if denials else route,
        redactions=None if denials else plan.redactions,
    )
