"""One sidecar's lease of one quota: the allowance it was granted in the quota's current bucket
and what it knows of the quota since (quota.py grants, spends and renews leases)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from warden.engine import PolicyRecord


def lease_setting(policy: PolicyRecord) -> tuple:
    """Leases are per policy setting: a changed limit or window starts a new lease."""
    return policy.limit, lease_window(policy)


def lease_window(policy: PolicyRecord) -> tuple[timedelta | None, str]:
    if policy.budget is not None:
        return None, policy.budget.period.lower()
    assert policy.rate_limit is not None
    return timedelta(seconds=policy.rate_limit.window_seconds), ""


@dataclass
class Lease:
    policy: PolicyRecord
    available: int = 0  # granted and not yet spent
    debt: int = 0  # admitted fail-open, to charge at the next grant
    bucket: datetime | None = None
    until: float = 0.0  # monotonic end of the bucket
    rtt: float = 0.0  # how long the last grant took
    unleased: int = 0  # what no sidecar held at the last grant
    reset_time: datetime | None = None
    # The bucket and reset time in ISO 8601, formatted once per grant for every call's record.
    bucket_text: str | None = None
    reset_text: str | None = None
    last_grant: int = 0
    short_at: float = float("-inf")  # when a grant last came back short
    unavailable: bool = False  # the last attempt could not reach the database
    spent: int = 0  # since the last grant, for the spending rate
    granted_at: float = 0.0
    rate: float = 0.0  # spent per second, smoothed
    wanted: int = 0  # what callers waiting for the next refill are short of, together
    used: bool = False  # a call took from it since its bucket was granted
    alerted: datetime | None = None  # the budget period whose alert this sidecar has queued
    refill: asyncio.Future | None = field(default=None, repr=False)

    def live(self, now: float) -> bool:
        return self.bucket is not None and now < self.until

    def room(self, now: float) -> int:
        return self.available if self.live(now) else 0

    def remaining(self, now: float) -> int:
        return self.room(now) + self.unleased
