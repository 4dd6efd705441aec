"""Two pure steps around the counter store: plan() resolves settings and says what to count,
decide() turns what the store admitted into a Decision.

Settings (model access, routing) resolve most-specific-first: API key, user, app, team, org,
higher priority first within a scope. A locked setting binds every more specific scope: its
lists must also allow the call and its max_tokens cap still applies, so a child can narrow a
locked parent but never widen it. Quotas (rate limits and budgets) are each counted at their
own scope and must all pass. Dry-run policies are evaluated and reported but never deny or
reroute.

Static checks run first; a request they deny counts against no quota. Quotas are all or
nothing: fit() says what every check can cover, and the quota layer takes all or none, so a
denied request consumes nothing. A call whose token quotas or budgets cannot cover its
max_output_tokens is given a lower one (never below the caller's min_output_tokens) instead of
being denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from warden.engine.model import (
    MAX_OUTPUT,
    AuthorizeInput,
    Decision,
    Demand,
    Identity,
    Plan,
    PolicyRecord,
    PolicyResult,
    ProviderSwitch,
    QuotaCheck,
    QuotaOutcome,
    Reason,
    Route,
    Target,
)
from warden.engine.pricing import Price, find_price

# The max_output_tokens reserved for a call that names none while a quota counts output tokens.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
_METRIC_WORDS = {"REQUESTS": "requests", "INPUT_TOKENS": "input tokens",
                 "OUTPUT_TOKENS": "output tokens", "TOTAL_TOKENS": "tokens"}


class Unpriced(Exception):
    """A budget applies to a model with no price and the budget names no default price."""

    def __init__(self, provider: str, model: str, policy_id: str) -> None:
        super().__init__(provider, model, policy_id)
        self.provider, self.model, self.policy_id = provider, model, policy_id


def _result(policy: PolicyRecord, allowed: bool, reason: Reason,
            message: str = "") -> PolicyResult:
    return PolicyResult(policy.id, policy.scope_kind, policy.scope_id, policy.policy_type,
                        policy.mode, allowed, reason, message)


def _resolve_alias(model: str, access: list[PolicyRecord]) -> str:
    """The most specific enforced alias for `model` (aliases resolve one step)."""
    for policy in access:
        assert policy.model_access is not None
        if policy.enforced:
            for alias, target in policy.model_access.aliases:
                if alias == model:
                    return target
    return model


def _route_targets(requested: str, model: str, provider: str,
                   routing: list[PolicyRecord]) -> tuple[tuple[Target, ...], PolicyRecord | None]:
    """Targets in preference order and the routing policy they come from. A locked rule (the
    outermost) beats any child's rule for the same alias; otherwise the most specific wins."""
    enforced = [p for p in routing if p.enforced]
    locked = [p for p in reversed(enforced) if p.locked]
    for policy in locked + enforced:
        assert policy.routing is not None
        for alias in (requested, model):
            targets = policy.routing.targets(alias)
            if targets:
                return targets, policy
    return (Target(provider, model),), None


def _token_cap(routing: list[PolicyRecord]) -> tuple[int, list[PolicyRecord]]:
    """The most specific cap, tightened by every locked cap; and the policies that set it."""
    caps = [p for p in routing if p.enforced and p.routing and p.routing.max_tokens_cap]
    binding = caps[:1] + [p for p in caps[1:] if p.locked]
    values = [p.routing.max_tokens_cap for p in binding if p.routing]
    return (min(values) if values else 0), binding


def _access_checks(access: list[PolicyRecord]) -> list[PolicyRecord]:
    """The enforced access policies that bind: the most specific with lists, plus every locked
    one (a locked parent keeps binding a child that narrowed it)."""
    with_lists = [p for p in access if p.enforced and p.model_access and p.model_access.has_lists]
    return with_lists[:1] + [p for p in with_lists[1:] if p.locked]


def _refusal(identity: Identity, target: Target, binding: list[PolicyRecord],
             switches: Sequence[ProviderSwitch]) -> PolicyResult | None:
    """The denial that rules `target` out, or None when it may be used."""
    if identity.allowed_models and target.model not in identity.allowed_models:
        return PolicyResult("", "api_key", identity.api_key_id, "key_models", "enforce", False,
                            Reason.MODEL_NOT_ALLOWED,
                            f"this API key may not use model {target.model!r}")
    for policy in binding:
        assert policy.model_access is not None
        why = policy.model_access.refusal(target.provider, target.model)
        if why:
            return _result(policy, False, Reason.MODEL_NOT_ALLOWED, why)
    for switch in switches:
        if switch.disables(identity.org_id, target):
            where = f"for org {switch.org_id}" if switch.org_id else "globally"
            what = f"model {switch.model!r} of provider {switch.provider!r}" if switch.model \
                else f"provider {switch.provider!r}"
            return PolicyResult("", "org", identity.org_id, "provider_switch", "enforce", False,
                                Reason.PROVIDER_DISABLED,
                                f"{what} is switched off {where}: "
                                f"{switch.reason or 'no reason given'}")
    return None


def _label(target: Target) -> str:
    return f"{target.provider}/{target.model}" if target.provider else target.model


def _with_note(result: PolicyResult, note: str) -> PolicyResult:
    return replace(result, message=f"{result.message}; {note}" if result.message else note)


def _demand(policy: PolicyRecord, input_tokens: int, price: Price | None) -> Demand:
    if policy.budget is not None:
        assert price is not None
        return Demand(input_tokens * price.input_micros_per_million,
                      price.output_micros_per_million, 1_000_000)
    assert policy.rate_limit is not None
    metric = policy.rate_limit.metric
    return Demand(1 if metric == "REQUESTS" else 0 if metric == "OUTPUT_TOKENS" else input_tokens,
                  1 if metric in ("OUTPUT_TOKENS", "TOTAL_TOKENS") else 0)


def _quota_checks(ordered: list[PolicyRecord], request: AuthorizeInput, chosen: Target,
                  prices: Mapping[tuple[str, str], Price]
                  ) -> tuple[list[QuotaCheck], list[PolicyResult]]:
    """Every quota that counts this call, ordered by policy id (a stable order to take in),
    and what dry-run budgets that cannot price the call say about it."""
    price = find_price(prices, chosen.provider, chosen.model)
    checks, unpriced = [], []
    for policy in ordered:
        quota = policy.rate_limit or policy.budget
        if quota is None or not quota.selector.matches(chosen.provider, chosen.model):
            continue
        policy_price = price
        if policy.budget is not None and price is None:
            policy_price = policy.budget.default_price
            if policy_price is None and policy.enforced:
                raise Unpriced(chosen.provider, chosen.model, policy.id)
            if policy_price is None:
                unpriced.append(_result(policy, False, Reason.MODEL_NOT_PRICED,
                                        f"model {chosen.model!r} has no price: this budget "
                                        "cannot count it"))
                continue
        checks.append(QuotaCheck(policy, _demand(policy, request.input_tokens, policy_price)))
    checks.sort(key=lambda c: c.policy.id)
    return checks, unpriced


def plan(identity: Identity, request: AuthorizeInput, policies: Sequence[PolicyRecord],
         switches: Sequence[ProviderSwitch] = (),
         prices: Mapping[tuple[str, str], Price] | None = None,
         default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS) -> Plan:
    """Raises Unpriced when a budget applies to a model without a price."""
    ordered = sorted(policies, key=PolicyRecord.specificity)
    access = [p for p in ordered if p.model_access is not None]
    routing = [p for p in ordered if p.routing is not None]
    model = _resolve_alias(request.model, access)
    targets, rule_policy = _route_targets(request.model, model, request.provider, routing)
    binding = _access_checks(access)

    usable, skipped = [], []
    for target in targets:
        denial = _refusal(identity, target, binding, switches)
        if denial is None:
            usable.append(target)
        else:
            skipped.append((target, denial))
    if not usable:
        # Explain why the first choice was refused, and each fallback after it.
        denial = skipped[0][1]
        for target, other in skipped[1:]:
            denial = _with_note(denial, f"fallback {_label(target)}: {other.message}")
        return Plan(identity, request, [denial])

    chosen = usable[0]
    results = []
    if identity.allowed_models:
        results.append(PolicyResult("", "api_key", identity.api_key_id, "key_models", "enforce",
                                    True, Reason.ALLOWED))
    results += [_result(policy, True, Reason.ALLOWED) for policy in binding]
    cap, capping = _token_cap(routing)
    wanted = request.max_output_tokens
    max_tokens = min(wanted, cap) if cap and wanted else (cap or wanted)
    notes = []
    if rule_policy is not None:
        notes.append(f"{request.model!r} routed to {_label(chosen)}")
        notes += [f"skipped {_label(t)}: {d.message}" for t, d in skipped]
    if max_tokens != wanted:
        notes.append(f"max_output_tokens capped at {cap}")
    for policy in dict.fromkeys([p for p in (rule_policy,) if p] + capping):
        results.append(_result(policy, True, Reason.ALLOWED, "; ".join(notes)))
    results += _dry_runs(ordered, request, chosen)

    checks, unpriced = _quota_checks(ordered, request, chosen, prices or {})
    results += unpriced
    if not max_tokens and any(c.demand.per_output for c in checks):
        max_tokens = default_max_output
    least = min(max(request.min_output_tokens, 1), max_tokens) if max_tokens else 0
    for check in checks:
        budget = check.policy.budget
        if not (budget and budget.max_request_cost_micros and check.policy.enforced):
            continue
        fits = check.demand.max_output(budget.max_request_cost_micros)
        if fits < least:
            results.append(_result(
                check.policy, False, Reason.REQUEST_COST_CAP,
                f"this call may cost up to {check.demand.amount(max_tokens or least)} micros; "
                f"the cap per request is {budget.max_request_cost_micros}"))
            return Plan(identity, request, results)
        if max_tokens and fits < max_tokens:
            max_tokens = fits
            results.append(_result(check.policy, True, Reason.ALLOWED,
                                   f"max_output_tokens lowered to {fits} by the cost cap of "
                                   f"{budget.max_request_cost_micros} micros per request"))
    route = Route(chosen.provider, chosen.model, max_tokens, tuple(usable[1:]))
    return Plan(identity, request, results, checks, route, least)


def _dry_runs(ordered: list[PolicyRecord], request: AuthorizeInput,
              chosen: Target) -> list[PolicyResult]:
    """What each dry-run setting would have said; none of them changes the decision."""
    results = []
    for policy in ordered:
        if policy.enforced:
            continue
        if policy.model_access is not None and policy.model_access.has_lists:
            why = policy.model_access.refusal(chosen.provider, chosen.model)
            results.append(_result(policy, not why,
                                   Reason.MODEL_NOT_ALLOWED if why else Reason.ALLOWED, why))
        elif policy.routing is not None:
            targets = policy.routing.targets(request.model)
            notes = [f"would route {request.model!r} to {_label(targets[0])}"] if targets else []
            if policy.routing.max_tokens_cap:
                notes.append(f"would cap max_output_tokens at {policy.routing.max_tokens_cap}")
            if notes:
                results.append(_result(policy, True, Reason.ALLOWED, "; ".join(notes)))
    return results


@dataclass(frozen=True)
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
           max_output: int | None = None) -> Decision:
    """The decision for a plan whose quota checks came out as `outcomes`; `max_output` is
    what fit() allowed (default: the plan's)."""
    results = list(plan.results)
    retry_after = None
    route = plan.route
    lowered = route is not None and max_output is not None and \
        max_output < route.max_output_tokens
    for outcome in outcomes:
        policy = outcome.check.policy
        if outcome.admitted:
            message = ""
            if lowered and outcome.binding and route:
                message = (f"max_output_tokens lowered from {route.max_output_tokens} to "
                           f"{max_output} to fit the remaining allowance")
            results.append(_result(policy, True, Reason.ALLOWED, message))
            continue
        reason = (Reason.QUOTA_UNAVAILABLE if outcome.unavailable else
                  Reason.BUDGET_EXHAUSTED if policy.budget is not None else Reason.RATE_LIMITED)
        results.append(_result(policy, False, reason, _quota_message(outcome)))
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
    )
