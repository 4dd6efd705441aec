"""A compiled policy set: everything a decision needs that depends only on the policies of a
scope chain, the provider switches, the prices and the model and provider asked for, worked out
once. `compile_set` runs when the cache first sees a chain and model (and again after a change
to any of its inputs drops the set); `CompiledSet.plan` runs per call and computes only what
depends on the call: the guardrails (engine/guardrails.py: its RAG sources, the injection
scores and the PII of its messages), the token demands, the max_output_tokens cap, the
per-request cost caps.

Settings (model access, routing) resolve most-specific-first: API key, user, app, team, org,
higher priority first within a scope. A locked setting binds every more specific scope: its
lists must also allow the call and its max_tokens cap still applies, so a child can narrow a
locked parent but never widen it. Quotas (rate limits and budgets) are each counted at their
own scope and must all pass. Dry-run policies are evaluated and reported but never deny or
reroute. Static checks run first; a request they deny counts against no quota.

Circuits (circuits.py) are compiled in like provider switches: a target whose circuit is open
is skipped for the next fallback. When one the set skipped could be probed, the set carries
the `Probe`: the set that uses it instead, which the sidecar holding the probe takes for one
call.

A set is immutable once built (its `derived` memo aside, which only adds what adapters work out
from the set), so a call that took a set decides by one version of the policies throughout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warden.engine.audit import DEFAULT, Snapshot, audit_setting, snapshot_of
from warden.engine.guardrails import PiiGuard, injection_results, rag_results
from warden.engine.model import (
    AuditSetting,
    AuthorizeInput,
    Decision,
    Demand,
    Identity,
    Plan,
    PolicyRecord,
    PolicyResult,
    QuotaCheck,
    Reason,
    Route,
    Target,
    result,
)
from warden.engine.pricing import Price, cost_micros, find_price
from warden.engine.routes import (
    Circuit,
    ProviderSwitch,
    access_checks,
    label,
    refusal,
    resolve_alias,
    route_targets,
    token_cap,
    with_note,
)

# The max_output_tokens reserved for a call that names none while a quota counts output tokens.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


class Unpriced(Exception):
    """A budget applies to a model with no price and the budget names no default price."""

    def __init__(self, provider: str, model: str, policy_id: str) -> None:
        super().__init__(provider, model, policy_id)
        self.provider, self.model, self.policy_id = provider, model, policy_id


@dataclass(frozen=True, slots=True)
class QuotaTerm:
    """A quota that counts calls of this set: what a call takes from it is
    ceil((base + per_input * input_tokens + per_output * max_output_tokens) / scale)."""

    policy: PolicyRecord
    base: int
    per_input: int
    per_output: int
    scale: int
    admitted: PolicyResult  # its result when it admits a call and has nothing to say
    check: QuotaCheck | None  # the check itself, when the input tokens do not change it

    def for_call(self, input_tokens: int) -> QuotaCheck:
        if self.check is not None:
            return self.check
        return QuotaCheck(self.policy, Demand(self.base + self.per_input * input_tokens,
                                              self.per_output, self.scale), self.admitted)


def _term(policy: PolicyRecord, price: Price | None) -> QuotaTerm:
    allowed = result(policy, True, Reason.ALLOWED)
    if policy.budget is not None:
        assert price is not None
        return QuotaTerm(policy, 0, price.input_micros_per_million,
                         price.output_micros_per_million, 1_000_000, allowed, None)
    assert policy.rate_limit is not None
    metric = policy.rate_limit.metric
    base = 1 if metric == "REQUESTS" else 0
    per_input = 1 if metric in ("INPUT_TOKENS", "TOTAL_TOKENS") else 0
    per_output = 1 if metric in ("OUTPUT_TOKENS", "TOTAL_TOKENS") else 0
    check = None if per_input else QuotaCheck(policy, Demand(base, per_output), allowed)
    return QuotaTerm(policy, base, per_input, per_output, 1, allowed, check)


@dataclass(frozen=True, slots=True)
class Probe:
    """A circuit a set routes past that may be probed once its retry_time passes, and the set
    of the same calls with that circuit closed."""

    circuit: Circuit
    compiled: CompiledSet


@dataclass(eq=False)
class CompiledSet:
    identity: Identity
    model: str  # as the caller asked for it (maybe an alias)
    provider: str
    # Every result a call of this set reports before its cost caps and quotas: without and
    # with the routing cap's note (a call that asks for more than the cap, or for nothing).
    fixed: tuple[PolicyResult, ...]
    fixed_capped: tuple[PolicyResult, ...]
    route: Route | None  # max_output_tokens 0 (a call's own); None: every target is refused
    cap: int = 0  # the binding max_tokens cap (0: none)
    terms: tuple[QuotaTerm, ...] = ()  # ordered by policy id: the order leases are taken in
    cost_caps: tuple[QuotaTerm, ...] = ()  # enforced budgets with a cost cap per request
    price: Price | None = None  # the route's price (a budget's default when the table has none)
    price_is_default: bool = False
    audit: AuditSetting = DEFAULT
    default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS
    unpriced: Unpriced | None = None  # raised by every plan: an enforced budget cannot count
    pii: PiiGuard | None = None  # the chain's pii policies, checked on each call's messages
    rag: tuple[PolicyRecord, ...] = ()  # the chain's rag_sources policies
    injection: tuple[PolicyRecord, ...] = ()  # the chain's prompt_injection policies
    probe: Probe | None = None
    # What adapters work out from this set once (pre-encoded answer parts, by adapter name):
    # it lives and dies with the set.
    derived: dict[str, Any] = field(default_factory=dict)
    _snapshots: dict[tuple, Snapshot] = field(default_factory=dict)

    def plan(self, request: AuthorizeInput) -> Plan:
        """What this call asks of the quotas; a Plan without a route when a static check or
        a cost cap already denies it. Raises Unpriced (see `unpriced`)."""
        if self.unpriced is not None:
            raise self.unpriced
        route = self.route
        if route is None:
            # Every target refused: a call may try again when the circuit can be probed.
            return Plan(self.identity, request, list(self.fixed), fixed=self.fixed,
                        retry_at=self.probe.circuit.retry_time if self.probe else None)
        wanted, cap = request.max_output_tokens, self.cap
        max_tokens = min(wanted, cap) if cap and wanted else (cap or wanted)
        fixed = self.fixed_capped if max_tokens != wanted else self.fixed
        results = list(fixed)
        redactions = None
        if self.rag:
            said, denied = rag_results(self.rag, request.rag_sources)
            results += said
            if denied:
                return Plan(self.identity, request, results, fixed=fixed)
        if self.injection:
            said, denied = injection_results(self.injection, request.messages)
            results += said
            if denied:
                return Plan(self.identity, request, results, fixed=fixed)
        if self.pii is not None:
            verdict = self.pii.check(request.messages, request.can_redact)
            results += verdict.results
            if verdict.denied:
                return Plan(self.identity, request, results, fixed=fixed)
            redactions = verdict.redactions
        checks = [term.for_call(request.input_tokens) for term in self.terms]
        if not max_tokens and any(t.per_output for t in self.terms):
            max_tokens = self.default_max_output
        least = min(max(request.min_output_tokens, 1), max_tokens) if max_tokens else 0
        for term in self.cost_caps:
            budget = term.policy.budget
            assert budget is not None
            demand = term.for_call(request.input_tokens).demand
            fits = demand.max_output(budget.max_request_cost_micros)
            if fits < least:
                results.append(result(
                    term.policy, False, Reason.REQUEST_COST_CAP,
                    f"this call may cost up to {demand.amount(max_tokens or least)} micros; "
                    f"the cap per request is {budget.max_request_cost_micros}"))
                return Plan(self.identity, request, results, fixed=fixed,
                            redactions=redactions)
            if max_tokens and fits < max_tokens:
                max_tokens = fits
                results.append(result(term.policy, True, Reason.ALLOWED,
                                      f"max_output_tokens lowered to {fits} by the cost cap of "
                                      f"{budget.max_request_cost_micros} micros per request"))
        return Plan(self.identity, request, results, checks,
                    Route(route.provider, route.model, max_tokens, route.fallbacks), least, fixed,
                    redactions)

    def worst_cost(self, plan: Plan, decision: Decision) -> int:
        """What the routed call costs at most at its model's price (0 when it has none)."""
        route = decision.route
        if route is None:
            return 0
        for check in plan.checks:
            if check.policy.budget is not None:
                return check.demand.amount(route.max_output_tokens)
        return cost_micros(self.price, plan.request.input_tokens, route.max_output_tokens, 0) \
            if self.price else 0

    def snapshot(self, plan: Plan, decision: Decision) -> Snapshot:
        """The explanation snapshot of a decision of this set. Its shape varies only with the
        cost caps that spoke and whether quotas were taken: a handful of shapes per set."""
        key = (tuple(r.policy_id for r in plan.results[len(plan.fixed):]), bool(decision.limits))
        found = self._snapshots.get(key)
        if found is None:
            found = self._snapshots[key] = snapshot_of(decision)
        return found


# -- compiling ------------------------------------------------------------------------------------


def _dry_runs(ordered: list[PolicyRecord], requested: str, chosen: Target) -> list[PolicyResult]:
    """What each dry-run setting would have said; none of them changes the decision."""
    results = []
    for policy in ordered:
        if policy.enforced:
            continue
        if policy.model_access is not None and policy.model_access.has_lists:
            why = policy.model_access.refusal(chosen.provider, chosen.model)
            results.append(result(policy, not why,
                                  Reason.MODEL_NOT_ALLOWED if why else Reason.ALLOWED, why))
        elif policy.routing is not None:
            targets = policy.routing.targets(requested)
            notes = [f"would route {requested!r} to {label(targets[0])}"] if targets else []
            if policy.routing.max_tokens_cap:
                notes.append(f"would cap max_output_tokens at {policy.routing.max_tokens_cap}")
            if notes:
                results.append(result(policy, True, Reason.ALLOWED, "; ".join(notes)))
    return results


def compile_set(identity: Identity, model: str, provider: str,
                policies: Sequence[PolicyRecord], switches: Sequence[ProviderSwitch] = (),
                prices: Mapping[tuple[str, str], Price] | None = None,
                default_max_output: int = DEFAULT_MAX_OUTPUT_TOKENS,
                circuits: Sequence[Circuit] = ()) -> CompiledSet:
    ordered = sorted(policies, key=PolicyRecord.specificity)
    access = [p for p in ordered if p.model_access is not None]
    routing = [p for p in ordered if p.routing is not None]
    setting = audit_setting(ordered)
    resolved = resolve_alias(model, access)
    targets, rule_policy = route_targets(model, resolved, provider, routing)
    binding = access_checks(access)

    usable, skipped, probed = [], [], None
    for target in targets:
        denial, circuit = refusal(identity, target, binding, switches, circuits)
        if denial is None:
            usable.append(target)
            continue
        skipped.append((target, denial))
        if probed is None and not usable and circuit is not None and not circuit.forced:
            probed = circuit  # preferred to every usable target, refused only by its circuit
    probe = None
    if probed is not None:
        probe = Probe(probed, compile_set(
            identity, model, provider, policies, switches, prices, default_max_output,
            [c for c in circuits if c is not probed]))
    if not usable:
        # Explain why the first choice was refused, and each fallback after it.
        denial = skipped[0][1]
        for target, other in skipped[1:]:
            denial = with_note(denial, f"fallback {label(target)}: {other.message}")
        return CompiledSet(identity, model, provider, (denial,), (denial,), None, audit=setting,
                           default_max_output=default_max_output, probe=probe)

    chosen = usable[0]
    head = []
    if identity.allowed_models:
        head.append(PolicyResult("", "api_key", identity.api_key_id, "key_models", "enforce",
                                 True, Reason.ALLOWED))
    head += [result(policy, True, Reason.ALLOWED) for policy in binding]
    cap, capping = token_cap(routing)
    notes = []
    if rule_policy is not None:
        notes.append(f"{model!r} routed to {label(chosen)}")
        notes += [f"skipped {label(t)}: {d.message}" for t, d in skipped]
    speakers = list(dict.fromkeys([p for p in (rule_policy,) if p] + capping))
    capped_notes = notes + [f"max_output_tokens capped at {cap}"]
    tail = _dry_runs(ordered, model, chosen)

    price = find_price(prices or {}, chosen.provider, chosen.model)
    terms, unpriced, error, default_price = [], [], None, None
    for policy in ordered:
        quota = policy.rate_limit or policy.budget
        if quota is None or not quota.selector.matches(chosen.provider, chosen.model):
            continue
        policy_price = price
        if policy.budget is not None and price is None:
            policy_price = policy.budget.default_price
            if policy_price is None and policy.enforced:
                error = error or Unpriced(chosen.provider, chosen.model, policy.id)
            if policy_price is None:
                unpriced.append(result(policy, False, Reason.MODEL_NOT_PRICED,
                                       f"model {chosen.model!r} has no price: this budget "
                                       "cannot count it"))
                continue
            default_price = default_price or policy_price
        terms.append(_term(policy, policy_price))
    terms.sort(key=lambda t: t.policy.id)

    def fixed(route_notes: list[str]) -> tuple[PolicyResult, ...]:
        said = [result(p, True, Reason.ALLOWED, "; ".join(route_notes)) for p in speakers]
        return tuple(head + said + tail + unpriced)

    guarded = tuple(p for p in ordered if p.pii is not None)
    rag = tuple(p for p in ordered if p.rag is not None)
    injection = tuple(p for p in ordered if p.injection is not None)
    return CompiledSet(
        identity, model, provider, fixed(notes), fixed(capped_notes),
        Route(chosen.provider, chosen.model, 0, tuple(usable[1:])), cap, tuple(terms),
        tuple(t for t in terms if t.policy.enforced and t.policy.budget is not None
              and t.policy.budget.max_request_cost_micros),
        price or default_price, price is None and default_price is not None, setting,
        default_max_output, error, PiiGuard(guarded) if guarded else None, rag, injection,
        probe)
