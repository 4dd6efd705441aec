"""Where a call may go: the targets a routing rule names for the model asked for (after
aliases), and what rules a target out: the API key's models, the binding access lists, the
provider switches and the circuits. compiled.py works these out once per set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from warden.engine.model import Identity, PolicyRecord, PolicyResult, Reason, Target, result


@dataclass(frozen=True)
class ProviderSwitch:
    provider: str
    model: str = ""  # "" = every model of the provider
    org_id: str = ""  # "" = every org
    enabled: bool = False
    reason: str = ""

    def disables(self, org_id: str, target: Target) -> bool:
        if self.enabled or self.org_id not in ("", org_id):
            return False
        if not target.provider:
            # The caller named no provider: only a switch on this very model can apply.
            return self.model == target.model
        return self.provider == target.provider and self.model in ("", target.model)


@dataclass(frozen=True, slots=True)
class Circuit:
    """A provider's model that is failing (its reported outcomes crossed a threshold) or that
    an operator closed off: calls are routed past it. Closed circuits are not in the view."""

    provider: str
    model: str
    state: str  # "open", or "half_open" while one sidecar holds its probe
    forced: bool  # an operator opened it: no probe is tried
    reason: str
    # When a probe may be claimed (open) or an unsettled one is given up (half_open).
    retry_time: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.provider, self.model

    def refuses(self, target: Target) -> bool:
        return self.provider == target.provider and self.model == target.model


def resolve_alias(model: str, access: list[PolicyRecord]) -> str:
    """The most specific enforced alias for `model` (aliases resolve one step)."""
    for policy in access:
        assert policy.model_access is not None
        if policy.enforced:
            for alias, target in policy.model_access.aliases:
                if alias == model:
                    return target
    return model


def route_targets(requested: str, model: str, provider: str,
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


def token_cap(routing: list[PolicyRecord]) -> tuple[int, list[PolicyRecord]]:
    """The most specific cap, tightened by every locked cap; and the policies that set it."""
    caps = [p for p in routing if p.enforced and p.routing and p.routing.max_tokens_cap]
    binding = caps[:1] + [p for p in caps[1:] if p.locked]
    values = [p.routing.max_tokens_cap for p in binding if p.routing]
    return (min(values) if values else 0), binding


def access_checks(access: list[PolicyRecord]) -> list[PolicyRecord]:
    """The enforced access policies that bind: the most specific with lists, plus every locked
    one (a locked parent keeps binding a child that narrowed it)."""
    with_lists = [p for p in access if p.enforced and p.model_access and p.model_access.has_lists]
    return with_lists[:1] + [p for p in with_lists[1:] if p.locked]


def refusal(identity: Identity, target: Target, binding: list[PolicyRecord],
             switches: Sequence[ProviderSwitch], circuits: Sequence[Circuit]
             ) -> tuple[PolicyResult | None, Circuit | None]:
    """The denial that rules `target` out (None when it may be used), and the circuit it
    comes from when only a circuit refuses it."""
    if identity.allowed_models and target.model not in identity.allowed_models:
        return PolicyResult("", "api_key", identity.api_key_id, "key_models", "enforce", False,
                            Reason.MODEL_NOT_ALLOWED,
                            f"this API key may not use model {target.model!r}"), None
    for policy in binding:
        assert policy.model_access is not None
        why = policy.model_access.refusal(target.provider, target.model)
        if why:
            return result(policy, False, Reason.MODEL_NOT_ALLOWED, why), None
    for switch in switches:
        if switch.disables(identity.org_id, target):
            where = f"for org {switch.org_id}" if switch.org_id else "globally"
            what = f"model {switch.model!r} of provider {switch.provider!r}" if switch.model \
                else f"provider {switch.provider!r}"
            return PolicyResult("", "org", identity.org_id, "provider_switch", "enforce", False,
                                Reason.PROVIDER_DISABLED,
                                f"{what} is switched off {where}: "
                                f"{switch.reason or 'no reason given'}"), None
    for circuit in circuits:
        if circuit.refuses(target):
            how = "forced open by an operator" if circuit.forced else (
                "open" if circuit.state == "open" else "half-open, probed by another call")
            return PolicyResult("", "org", identity.org_id, "circuit", "enforce", False,
                                Reason.PROVIDER_UNAVAILABLE,
                                f"the circuit of {label(target)} is {how}: "
                                f"{circuit.reason or 'no reason given'}"), circuit
    return None, None


def label(target: Target) -> str:
    return f"{target.provider}/{target.model}" if target.provider else target.model


def with_note(denial: PolicyResult, note: str) -> PolicyResult:
    return replace(denial, message=f"{denial.message}; {note}" if denial.message else note)


