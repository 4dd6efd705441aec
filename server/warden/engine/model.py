"""Values the engine reasons about. Enum values are the names of warden.v1 proto enums without
their prefix, so the API layer converts by name and metrics reuse them as labels."""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from warden.engine.pricing import Price
from warden.guardrails.injection import DEFAULT_ROLES, InjectionRules
from warden.guardrails.pii import Finding, PiiRules, pii_rules
from warden.guardrails.rag import RagSources


class Reason(enum.Enum):
    ALLOWED = "ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    MODEL_NOT_ALLOWED = "MODEL_NOT_ALLOWED"
    PROVIDER_DISABLED = "PROVIDER_DISABLED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    REQUEST_COST_CAP = "REQUEST_COST_CAP"
    QUOTA_UNAVAILABLE = "QUOTA_UNAVAILABLE"
    MODEL_NOT_PRICED = "MODEL_NOT_PRICED"  # reported by dry-run budgets only
    PII_DETECTED = "PII_DETECTED"
    PROMPT_INJECTION = "PROMPT_INJECTION"
    RAG_SOURCE_NOT_ALLOWED = "RAG_SOURCE_NOT_ALLOWED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"


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
    metric: str  # REQUESTS, INPUT_TOKENS, OUTPUT_TOKENS or TOTAL_TOKENS
    window: str  # MINUTE, HOUR or DAY (sliding)
    limit: int
    selector: Selector = Selector()

    @property
    def window_seconds(self) -> int:
        return WINDOW_SECONDS[self.window]


@dataclass(frozen=True)
class Budget:
    period: str  # DAY or MONTH, calendar periods in the org's time zone
    limit_micros: int
    max_request_cost_micros: int = 0
    alert_threshold_percent: int = 0
    selector: Selector = Selector()
    default_price: Price | None = None  # for models the price table does not list


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
class AuditSetting:
    """How the trail is written (see engine/audit.py); the defaults apply without a policy."""
    allow_sample_rate: float = 1.0
    deny_sample_rate: float = 1.0
    store_prompts: bool = False
    mask_fields: tuple[str, ...] = ()
    hash_fields: tuple[str, ...] = ()


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
    budget: Budget | None = None
    audit: AuditSetting | None = None
    pii: PiiRules | None = None
    rag: RagSources | None = None
    injection: InjectionRules | None = None
    failure_mode: str = "fail_closed"  # what a quota does when the database is away

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    @property
    def limit(self) -> int:
        """A quota's allowance per window or period."""
        if self.budget is not None:
            return self.budget.limit_micros
        assert self.rate_limit is not None
        return self.rate_limit.limit

    @property
    def metric(self) -> str:
        return "COST_MICROS" if self.budget is not None else \
            self.rate_limit.metric if self.rate_limit else ""

    @property
    def scope(self) -> tuple[str, str]:
        return self.scope_kind, self.scope_id

    def specificity(self) -> tuple[int, int, str]:
        """Sort key: most specific scope first, then higher priority, then id (stable)."""
        return -SCOPE_RANK[self.scope_kind], -self.priority, self.id


def policy_from_row(row: Mapping[str, Any]) -> PolicyRecord:
    """A stored policy (config as proto3 JSON with proto field names) as the engine sees it.
    """
    config = row["config"]
    kind = row["policy_type"]
    parts: dict[str, Any] = {}
    selector = config.get("selector", {})
    selector = Selector(tuple(selector.get("models", ())), tuple(selector.get("providers", ())))
    if kind == "rate_limit":
        parts["rate_limit"] = RateLimit(
            metric=config.get("metric", "").removeprefix("METRIC_"),
            window=config.get("window", "").removeprefix("WINDOW_"),
            limit=int(config.get("limit", 0)), selector=selector)
    elif kind == "budget":
        prices = [int(config.get(f"default_{p}_micros_per_million", 0))
                  for p in ("input", "output")]
        parts["budget"] = Budget(
            period=config.get("period", "").removeprefix("PERIOD_"),
            limit_micros=int(config.get("limit_micros", 0)),
            max_request_cost_micros=int(config.get("max_request_cost_micros", 0)),
            alert_threshold_percent=int(config.get("alert_threshold_percent", 0)),
            selector=selector,
            default_price=Price(prices[0], prices[1], prices[0]) if any(prices) else None)
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
    elif kind == "pii":
        parts["pii"] = pii_rules(config)
    elif kind == "prompt_injection":
        parts["injection"] = InjectionRules(
            "block" if config.get("action") == "GUARDRAIL_ACTION_BLOCK" else "log",
            float(config.get("threshold", 0.5)), tuple(config.get("roles", ())) or DEFAULT_ROLES)
    elif kind == "rag_sources":
        parts["rag"] = RagSources(
            "block" if config.get("action") == "GUARDRAIL_ACTION_BLOCK" else "log",
            tuple(config.get("allowed_sources", ())), tuple(config.get("denied_sources", ())))
    elif kind == "audit":
        parts["audit"] = AuditSetting(
            allow_sample_rate=float(config.get("allow_sample_rate", 1.0)),
            deny_sample_rate=float(config.get("deny_sample_rate", 1.0)),
            store_prompts=bool(config.get("store_prompts", False)),
            mask_fields=tuple(config.get("mask_fields", ())),
            hash_fields=tuple(config.get("hash_fields", ())))
    return PolicyRecord(row["id"], row["scope_kind"], row["scope_id"], kind, row["mode"],
                        row.get("priority", 0), row.get("locked", False),
                        failure_mode=row.get("failure_mode", "fail_closed"), **parts)


@dataclass(slots=True)
class AuthorizeInput:
    request_id: str
    model: str
    provider: str = ""
    input_tokens: int = 0
    max_output_tokens: int = 0
    user_id: str = ""  # the app's end user, when the caller names one
    min_output_tokens: int = 0  # the least max_output_tokens the caller can use (0: 1)
    # The prompt's messages: objects with .role and .content (the request's own, unconverted).
    messages: Sequence[Any] = ()
    # Whether the entry point can send the provider redacted messages (Envoy's ext_authz
    # cannot rewrite a body: a redaction it cannot apply blocks the call instead).
    can_redact: bool = True
    rag_sources: Sequence[str] = ()  # the document collections the prompt draws on
    prompt_chars: int = 0  # the messages' text, in characters


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


def result(policy: PolicyRecord, allowed: bool, reason: Reason,
           message: str = "") -> PolicyResult:
    return PolicyResult(policy.id, policy.scope_kind, policy.scope_id, policy.policy_type,
                        policy.mode, allowed, reason, message)


@dataclass(slots=True)
class Demand:
    """What a call takes from one quota, given the max_output_tokens it may use:
    ceil((fixed + per_output * max_output_tokens) / scale). Token counts have scale 1; a cost
    is tokens times a price per million tokens, so its scale is 10^6."""

    fixed: int
    per_output: int = 0
    scale: int = 1

    def amount(self, max_output: int) -> int:
        return -(-(self.fixed + self.per_output * max_output) // self.scale)

    def max_output(self, available: int) -> int:
        """The largest max_output_tokens whose amount fits `available` (-1 if none does)."""
        room = available * self.scale - self.fixed
        if room < 0:
            return -1
        return room // self.per_output if self.per_output else MAX_OUTPUT


# Stands for "any number of output tokens" where a quota does not count them.
MAX_OUTPUT = 2**62


@dataclass(slots=True)
class QuotaCheck:
    """Take `demand` from `policy`'s allowance (rate limit or budget), all or nothing."""

    policy: PolicyRecord
    demand: Demand
    admitted: PolicyResult | None = None  # its result when it admits with nothing to say


@dataclass(slots=True)
class QuotaOutcome:
    check: QuotaCheck
    admitted: bool
    amount: int  # taken from the quota (0 when not admitted)
    remaining: int | None  # what this sidecar may still admit; None: unknown (database away)
    now: datetime  # the database clock
    reset_time: datetime | None  # when allowance frees up next
    unavailable: bool = False  # more was needed and the database could not be reached
    binding: bool = False  # this quota lowered the call's max_output_tokens
    reset_text: str | None = None  # reset_time in ISO 8601, formatted once per lease grant


@dataclass(slots=True)
class Part:
    """What one call took from one quota: settlement refunds or charges the difference."""

    policy_id: str
    bucket: datetime | None  # None: admitted fail-open, owed rather than leased
    metric: str
    amount: int
    bucket_text: str | None = None  # bucket in ISO 8601 (formatted once per lease grant)


@dataclass(slots=True)
class Route:
    provider: str
    model: str
    max_output_tokens: int
    fallbacks: tuple[Target, ...] = ()


@dataclass(frozen=True, slots=True)
class Redactions:
    """The spans a PII policy replaced, and every message's content with them replaced."""
    spans: tuple[Finding, ...]
    contents: tuple[str, ...]


@dataclass(slots=True)
class Plan:
    identity: Identity
    request: AuthorizeInput
    results: list[PolicyResult] = field(default_factory=list)
    checks: list[QuotaCheck] = field(default_factory=list)
    route: Route | None = None  # None when a static check denied
    # The least max_output_tokens the call may be given (budget-aware answers lower it to fit).
    min_output_tokens: int = 0
    # The results every call of its compiled set starts with (the first of `results`).
    fixed: tuple[PolicyResult, ...] = ()
    redactions: Redactions | None = None
    # When a call refused because every target's circuit is open may try again.
    retry_at: datetime | None = None

    @property
    def denied(self) -> bool:
        return any(not r.allowed and r.mode == "enforce" for r in self.results)


@dataclass(slots=True)
class Decision:
    allowed: bool
    reason: Reason
    results: list[PolicyResult]
    limits: list[QuotaOutcome]
    retry_after: timedelta | None = None
    route: Route | None = None  # where and how to call, when allowed
    redactions: Redactions | None = None  # what the call must send instead, when allowed
