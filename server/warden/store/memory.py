"""An in-memory CounterStore: warden_lease and warden_adjust (migrations/0003_quotas.sql) in
Python, for one process. Tests use it to check lease arithmetic and settlement without a
database; the contract suite (tests/contract) holds it to the same behaviour as Postgres."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from warden.engine.windows import BUCKETS
from warden.errors import StoreUnavailable
from warden.store.base import BudgetAlert, Grant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _period(t: datetime, period: str, zone: str) -> tuple[datetime, datetime]:
    """The calendar day or month holding t in the time zone, as UTC instants. (Arithmetic on
    aware datetimes is wall-clock arithmetic: a day across a DST change is 23 or 25 hours.)"""
    z = ZoneInfo(zone)
    local = t.astimezone(z)
    if period == "month":
        start = datetime(local.year, local.month, 1, tzinfo=z)
        end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=z)
    else:
        start = datetime(local.year, local.month, local.day, tzinfo=z)
        end = start + timedelta(days=1)
    return start.astimezone(UTC), end.astimezone(UTC)


class InMemoryCounterStore:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 zones: dict[str, str] | None = None) -> None:
        self.clock = clock
        self.zones = zones or {}  # policy id -> its org's time zone (default UTC)
        self.buckets: dict[str, dict[datetime, int]] = defaultdict(dict)
        self.alerts: dict[str, BudgetAlert] = {}
        self.deleted: set[str] = set()  # policies whose positive adjustments are dropped
        self.down = False  # while True every call raises StoreUnavailable
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the in-memory counter store is marked down")

    async def lease(self, policy_id: str, limit: int, want: int, window: timedelta | None,
                    period: str, debt: int, returned: tuple[datetime, int] | None) -> Grant:
        self._check()
        async with self._locks[policy_id]:
            buckets = self.buckets[policy_id]
            if returned and returned[1] > 0 and returned[0] in buckets:
                buckets[returned[0]] = max(buckets[returned[0]] - returned[1], 0)
            t = self.clock()
            if period:
                start, end = _period(t, period, self.zones.get(policy_id, "UTC"))
                counted_from = start
                width = None
            else:
                assert window is not None
                width = window / BUCKETS
                start = _EPOCH + (t - _EPOCH) // width * width
                end = start + width
                counted_from = start - window
            counted = {b: g for b, g in buckets.items() if counted_from <= b <= start}
            used = sum(counted.values())
            oldest = min((b for b, g in counted.items() if g > 0), default=None)
            granted = min(max(want, 0), max(limit - used - debt, 0))
            if granted + debt > 0:
                buckets[start] = buckets.get(start, 0) + granted + debt
                oldest = min(oldest, start) if oldest else start
            reset = end if width is None or oldest is None else oldest + window + width
            return Grant(granted, used + granted + debt, start, end, reset, t)

    async def adjust(self, deltas: Sequence[tuple[str, datetime, int]]) -> None:
        self._check()
        summed: dict[tuple[str, datetime], int] = defaultdict(int)
        for policy_id, bucket, delta in deltas:
            summed[(policy_id, bucket)] += delta
        for (policy_id, bucket), delta in summed.items():
            buckets = self.buckets[policy_id]
            if delta < 0 and bucket in buckets:
                buckets[bucket] = max(buckets[bucket] + delta, 0)
            elif delta > 0 and policy_id not in self.deleted:
                buckets[bucket] = buckets.get(bucket, 0) + delta

    async def raise_alert(self, alert: BudgetAlert) -> bool:
        self._check()
        if alert.event_id in self.alerts:
            return False
        self.alerts[alert.event_id] = alert
        return True
