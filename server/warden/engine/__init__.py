"""The decision engine: plain dataclasses in, a Decision out. No I/O imports here
(tests/unit/test_engine_purity.py enforces it)."""

from warden.engine.decide import decide, plan
from warden.engine.model import (
    AuthorizeInput,
    Decision,
    Identity,
    LimitCheck,
    LimitOutcome,
    ModelAccess,
    Plan,
    PolicyRecord,
    PolicyResult,
    ProviderSwitch,
    RateLimit,
    Reason,
    Route,
    Routing,
    Selector,
    Target,
    policy_from_row,
)

__all__ = [
    "AuthorizeInput",
    "Decision",
    "Identity",
    "LimitCheck",
    "LimitOutcome",
    "ModelAccess",
    "Plan",
    "PolicyRecord",
    "PolicyResult",
    "ProviderSwitch",
    "RateLimit",
    "Reason",
    "Route",
    "Routing",
    "Selector",
    "Target",
    "decide",
    "plan",
    "policy_from_row",
]
