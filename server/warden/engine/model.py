"""Values the engine reasons about. Enum values are the names of warden.v1 proto enums without
their prefix, so the API layer converts by name and metrics reuse them as labels."""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class Reason(enum.Enum):
    ALLOWED = "ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    MODEL_NOT_ALLOWED = "MODEL_NOT_ALLOWED"
    PROVIDER_DISABLED = "PROVIDER_DISABLED"


WINDOW_SECONDS = {"MINUTE": 60, "HOUR": 3600, "DAY": 86400}
# How specific a scope is: settings resolve most specific first.
SCOPE_RANK = {"org": 0, "team": 1, "app": 2, "user": 3, "api_key": 4}


@dataclass(frozen=True)
class Identity:
    org_id: str
    app_id: str
    api_key_id: str
    user_id: str = ""
    # The app's team and the user's teams, sorted.
    team_ids: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] = ()

    def scopes(self) -> list[tuple[str, str]]:
        """The request's chain of scopes, outermost first."""
        chain = [("org", self.org_id)]
        chain += [("team", t) for t in self.team_ids]
        chain.append(("app", self.app_id))
        if self.user_id:
            chain.append(("user", self.user_id))
        if self.api_key_id:
            chain.append(("api_key", self.api_key_id))
        return chain


def name_matches(patterns: tuple[str, ...], name: str) -> bool:
    """Names in policies may use '*' for any characters ("gpt-4o*")."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class Selector:
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    def matches(self, provider: str, model: str) -> bool:
        return ((not self.models or name_matches(self.models, model))
                and (not self.providers or name_matches(self.providers, provider)))


@dataclass(frozen=True)
class RateLimit:
    metric: str  # REQUESTS (token metrics come with reservations)
    window: str  # MINUTE, HOUR or DAY
    limit: int
    selector: Selector = Selector()

    @property
    def window_seconds(self) -> int:
        return WINDOW_SECONDS[self.window]


@dataclass(frozen=True)
class ModelAccess:
    allow_models: tuple[str, ...] = ()
    deny_models: tuple[str, ...] = ()
    allow_providers: tuple[str, ...] = ()
    deny_providers: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def has_lists(self) -> bool:
        return bool(self.allow_models or self.deny_models or self.allow_providers
                    or self.deny_providers)

    def refusal(self, provider: str, model: str) -> str:
        """Why this policy refuses (provider, model), or "" when it allows it. An unnamed
        provider is checked only by the model lists."""
        if name_matches(self.deny_models, model):
            return f"model {model!r} is denied"
        if self.allow_models and not name_matches(self.allow_models, model):
            return f"model {model!r} is not in the allowed models"
        if provider and name_matches(self.deny_providers, provider):
            return f"provider {provider!r} is denied"
        if provider and self.allow_providers and not name_matches(self.allow_providers,
                                                                  provider):
            return f"provider {provider!r} is not in the allowed providers"
        return ""


@dataclass(frozen=True)
class Target:
    provider: str
    model: str


@dataclass(frozen=True)
class Routing:
    rules: tuple[tuple[str, tuple[Target, ...]], ...] = ()  # (alias, targets in order)
    max_tokens_cap: int = 0

    def targets(self, alias: str) -> tuple[Target, ...]:
        return next((t for a, t in self.rules if a == alias), ())


@dataclass(frozen=True)
class PolicyRecord:
    id: str
    scope_kind: str
    scope_id: str
    policy_type: str
    mode: str  # enforce | dry_run
    priority: int = 0
    locked: bool = False
    rate_limit: RateLimit | None = None
    model_access: ModelAccess | None = None
    routing: Routing | None = None

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    @property
    def scope(self) -> tuple[str, str]:
        return self.scope_kind, self.scope_id

    def specificity(self) -> tuple[int, int, str]:
        """Sort key: most specific scope first, then higher priority, then id (stable)."""
        return -SCOPE_RANK[self.scope_kind], -self.priority, self.id


def policy_from_row(row: Mapping[str, Any]) -> PolicyRecord:
    """A stored policy (config as proto3 JSON with proto field names) as the engine sees it.
    Guardrail configs (pii, prompt_injection, rag_sources) are carried by type only until their
    checks exist."""
    config = row["config"]
    kind = row["policy_type"]
    parts: dict[str, Any] = {}
    if kind == "rate_limit":
        selector = config.get("selector", {})
        parts["rate_limit"] = RateLimit(
            metric=config.get("metric", "").removeprefix("METRIC_"),
            window=config.get("window", "").removeprefix("WINDOW_"),
            limit=int(config.get("limit", 0)),
            selector=Selector(tuple(selector.get("models", ())),
                              tuple(selector.get("providers", ()))))
    elif kind == "model_access":
        parts["model_access"] = ModelAccess(
            *(tuple(config.get(name, ())) for name in
              ("allow_models", "deny_models", "allow_providers", "deny_providers")),
            aliases=tuple(sorted(config.get("aliases", {}).items())))
    elif kind == "routing":
        parts["routing"] = Routing(
            rules=tuple((rule["alias"], tuple(Target(t.get("provider", ""), t.get("model", ""))
                                              for t in rule.get("targets", ())))
                        for rule in config.get("rules", ())),
            max_tokens_cap=int(config.get("max_tokens_cap", 0)))
    return PolicyRecord(row["id"], row["scope_kind"], row["scope_id"], kind, row["mode"],
                        row.get("priority", 0), row.get("locked", False), **parts)


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


@dataclass(frozen=True)
class AuthorizeInput:
    request_id: str
    model: str
    provider: str = ""
    input_tokens: int = 0
    max_output_tokens: int = 0
    user_id: str = ""  # the app's end user, when the caller names one


@dataclass(frozen=True)
class PolicyResult:
    policy_id: str
    scope_kind: str
    scope_id: str
    policy_type: str
    mode: str
    allowed: bool
    reason: Reason
    message: str = ""


@dataclass(frozen=True)
class LimitCheck:
    """Ask the counter store to take `amount` of `policy`'s current window, if it fits."""

    policy: PolicyRecord
    amount: int


@dataclass(frozen=True)
class LimitOutcome:
    check: LimitCheck
    admitted: bool
    used: int  # in the window, after this request if admitted
    now: datetime  # the database clock
    reset_time: datetime


@dataclass(frozen=True)
class Route:
    provider: str
    model: str
    max_output_tokens: int
    fallbacks: tuple[Target, ...] = ()


@dataclass(frozen=True)
class Plan:
    identity: Identity
    request: AuthorizeInput
    results: list[PolicyResult] = field(default_factory=list)
    checks: list[LimitCheck] = field(default_factory=list)
    route: Route | None = None  # None when a static check denied

    @property
    def denied(self) -> bool:
        return any(not r.allowed and r.mode == "enforce" for r in self.results)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason
    results: list[PolicyResult]
    limits: list[LimitOutcome]
    retry_after: timedelta | None = None
    route: Route | None = None  # where and how to call, when allowed
