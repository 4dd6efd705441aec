"""Values the engine reasons about. Enum values are the names of warden.v1 proto enums without
their prefix, so the API layer converts by name and metrics reuse them as labels."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class Reason(enum.Enum):
    ALLOWED = "ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    MODEL_NOT_ALLOWED = "MODEL_NOT_ALLOWED"


WINDOW_SECONDS = {"MINUTE": 60, "HOUR": 3600, "DAY": 86400}


@dataclass(frozen=True)
class Identity:
    org_id: str
    app_id: str
    api_key_id: str
    user_id: str = ""
    allowed_models: tuple[str, ...] = ()

    def scopes(self) -> list[tuple[str, str]]:
        """The request's chain of scopes, outermost first."""
        chain = [("org", self.org_id), ("app", self.app_id)]
        if self.user_id:
            chain.append(("user", self.user_id))
        chain.append(("api_key", self.api_key_id))
        return chain


@dataclass(frozen=True)
class RateLimit:
    metric: str  # REQUESTS (token metrics come with reservations)
    window: str  # MINUTE, HOUR or DAY
    limit: int

    @property
    def window_seconds(self) -> int:
        return WINDOW_SECONDS[self.window]


@dataclass(frozen=True)
class PolicyRecord:
    id: str
    scope_kind: str
    scope_id: str
    policy_type: str
    mode: str  # enforce | dry_run
    rate_limit: RateLimit | None = None

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"


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
class Plan:
    identity: Identity
    request: AuthorizeInput
    results: list[PolicyResult] = field(default_factory=list)
    checks: list[LimitCheck] = field(default_factory=list)

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
