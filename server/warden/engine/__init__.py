"""The decision engine: plain dataclasses in, a Decision out. No I/O imports here
(tests/unit/test_engine_purity.py enforces it)."""

from warden.engine.decide import decide, plan
from warden.engine.model import (
    AuthorizeInput,
    Decision,
    Identity,
    LimitCheck,
    LimitOutcome,
    Plan,
    PolicyRecord,
    PolicyResult,
    RateLimit,
    Reason,
)

__all__ = [
    "AuthorizeInput",
    "Decision",
    "Identity",
    "LimitCheck",
    "LimitOutcome",
    "Plan",
    "PolicyRecord",
    "PolicyResult",
    "RateLimit",
    "Reason",
    "decide",
    "plan",
]
