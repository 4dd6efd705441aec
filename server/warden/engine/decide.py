"""Two pure steps around the counter store: plan() resolves settings and says what to count,
decide() turns what the store admitted into a Decision.

Settings (model access, routing) resolve most-specific-first: API key, user, app, team, org,
higher priority first within a scope. A locked setting binds every more specific scope: its
lists must also allow the call and its max_tokens cap still applies, so a child can narrow a
locked parent but never widen it. Quotas (rate limits) are each counted at their own scope and
must all pass. Dry-run policies are evaluated and reported but never deny or reroute.

Static checks run first; a request they deny counts against no limit. Limits are all-or-nothing:
the store takes every check or none, so a denied request consumes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from warden.engine.model import (
    AuthorizeInput,
    Decision,
    Identity,
    LimitCheck,
    LimitOutcome,
    Plan,
    PolicyRecord,
    PolicyResult,
    ProviderSwitch,
    Reason,
    Route,
    Target,
)


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


def plan(identity: Identity, request: AuthorizeInput, policies: Sequence[PolicyRecord],
         switches: Sequence[ProviderSwitch] = ()) -> Plan:
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

    checks = [LimitCheck(p, 1) for p in ordered
              if p.rate_limit is not None and p.rate_limit.metric == "REQUESTS"
              and p.rate_limit.selector.matches(chosen.provider, chosen.model)]
    checks.sort(key=lambda c: c.policy.id)
    route = Route(chosen.provider, chosen.model, max_tokens, tuple(usable[1:]))
    return Plan(identity, request, results, checks, route)


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
            policy, outcome.admitted, Reason.ALLOWED if outcome.admitted else Reason.RATE_LIMITED,
            message))
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
        route=None if denials else plan.route,
    )
