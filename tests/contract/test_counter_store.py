"""The CounterStore contract (store/base.py), held against every implementation: Postgres
(the embedded server, or WARDEN_TEST_DATABASE_URL's) and the in-memory store. Leases never hand
out more than a limit however many ask at once; what is given back or charged moves the count;
windows and periods bucket as documented; an alert is stored once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from warden.store.base import BudgetAlert, CounterStore
from warden.store.counters import PostgresCounterStore
from warden.store.memory import InMemoryCounterStore
from warden.store.postgres import create_pool

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@dataclass
class Subject:
    store: CounterStore
    # Makes a quota policy the store can count (its org in the given time zone).
    policy: Callable[[str, str], object]
    delete: Callable[[str], object]
    granted: Callable[[str], object]  # everything counted for a policy, all buckets


@pytest.fixture(params=["postgres", "memory"])
async def subject(request, db_url) -> AsyncIterator[Subject]:
    if request.param == "memory":
        store = InMemoryCounterStore()

        async def policy(policy_id: str, zone: str = "UTC") -> None:
            store.zones[policy_id] = zone

        async def delete(policy_id: str) -> None:
            store.deleted.add(policy_id)
            store.buckets.pop(policy_id, None)

        async def granted(policy_id: str) -> int:
            return sum(store.buckets[policy_id].values())

        yield Subject(store, policy, delete, granted)
        return
    pool = await create_pool(db_url, 1, 8, 30)
    conn: asyncpg.Connection = await asyncpg.connect(db_url)

    async def policy(policy_id: str, zone: str = "UTC") -> None:
        org = f"org-{policy_id}"
        await conn.execute("INSERT INTO orgs (id, time_zone) VALUES ($1, $2)", org, zone)
        await conn.execute(
            "INSERT INTO policies (id, org_id, scope_kind, scope_id, policy_type, mode,"
            " failure_mode, config) VALUES ($1, $2, 'org', $2, 'rate_limit', 'enforce',"
            " 'fail_open', '{}')", policy_id, org)

    async def delete(policy_id: str) -> None:
        await conn.execute("DELETE FROM policies WHERE id = $1", policy_id)

    async def granted(policy_id: str) -> int:
        return await conn.fetchval(
            "SELECT coalesce(sum(granted), 0) FROM quota_buckets WHERE policy_id = $1",
            policy_id)

    try:
        yield Subject(PostgresCounterStore(pool), policy, delete, granted)
    finally:
        await conn.close()
        await pool.close()


async def test_a_lease_hands_out_what_is_left_and_never_more(subject: Subject) -> None:
    await subject.policy("p")
    got = [await subject.store.lease("p", 25, 10, HOUR, "", 0, None) for _ in range(4)]
    assert [g.granted for g in got] == [10, 10, 5, 0]
    assert [g.used for g in got] == [10, 20, 25, 25]
    assert await subject.granted("p") == 25


async def test_concurrent_leases_never_over_grant(subject: Subject) -> None:
    await subject.policy("p")
    grants = await asyncio.gather(*(subject.store.lease("p", 100, 3, HOUR, "", 0, None)
                                    for _ in range(60)))
    assert sum(g.granted for g in grants) == 100
    assert max(g.used for g in grants) == 100


async def test_what_a_lease_gives_back_can_be_granted_again(subject: Subject) -> None:
    await subject.policy("p")
    first = await subject.store.lease("p", 10, 10, HOUR, "", 0, None)
    again = await subject.store.lease("p", 10, 10, HOUR, "", 0, (first.bucket_start, 4))
    assert again.granted == 4
    assert await subject.granted("p") == 10


async def test_debt_is_charged_past_the_limit(subject: Subject) -> None:
    await subject.policy("p")
    await subject.store.lease("p", 10, 10, HOUR, "", 0, None)
    owed = await subject.store.lease("p", 10, 5, HOUR, "", 3, None)
    assert (owed.granted, owed.used) == (0, 13)
    assert (await subject.store.lease("p", 10, 5, HOUR, "", 0, None)).granted == 0


async def test_adjustments_give_back_and_charge_but_never_below_zero(subject: Subject) -> None:
    await subject.policy("p")
    grant = await subject.store.lease("p", 100, 50, HOUR, "", 0, None)
    bucket = grant.bucket_start
    await subject.store.adjust([("p", bucket, -20), ("p", bucket, -5), ("p", bucket, 2)])
    assert await subject.granted("p") == 27
    await subject.store.adjust([("p", bucket, -1000)])
    assert await subject.granted("p") == 0
    earlier = bucket - HOUR / 120
    await subject.store.adjust([("p", earlier, 7)])  # a bucket with nothing yet
    assert await subject.granted("p") == 7
    assert (await subject.store.lease("p", 100, 100, HOUR, "", 0, None)).granted == 93


async def test_a_deleted_policy_is_charged_nothing(subject: Subject) -> None:
    await subject.policy("p")
    grant = await subject.store.lease("p", 100, 10, HOUR, "", 0, None)
    await subject.delete("p")
    await subject.store.adjust([("p", grant.bucket_start, 5)])
    assert await subject.granted("p") == 0


async def test_a_window_counts_in_buckets_of_a_120th(subject: Subject) -> None:
    await subject.policy("p")
    grant = await subject.store.lease("p", 100, 1, MINUTE, "", 0, None)
    width = MINUTE / 120
    assert grant.bucket_end - grant.bucket_start == width
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (grant.bucket_start - epoch) % width == timedelta(0)
    assert grant.bucket_start <= grant.db_now < grant.bucket_end
    # The oldest counted bucket frees up once a whole window has passed after it.
    assert grant.reset_time == grant.bucket_start + MINUTE + width


async def test_a_period_is_a_calendar_day_or_month_in_the_org_time_zone(subject: Subject
                                                                        ) -> None:
    zone = "Asia/Kolkata"
    await subject.policy("p", zone)
    day = await subject.store.lease("p", 100, 1, None, "day", 0, None)
    local = day.bucket_start.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute) == (0, 0)
    assert day.bucket_end - day.bucket_start == timedelta(days=1)
    assert day.reset_time == day.bucket_end
    month = await subject.store.lease("p", 100, 1, None, "month", 0, None)
    local = month.bucket_start.astimezone(ZoneInfo(zone))
    assert (local.day, local.hour) == (1, 0)
    assert month.bucket_end.astimezone(ZoneInfo(zone)).day == 1
    assert month.bucket_start <= month.db_now < month.bucket_end


async def test_an_alert_is_stored_once(subject: Subject) -> None:
    await subject.policy("b")
    alert = BudgetAlert("b", "budget-alert:b:2026-12-01", datetime.now(UTC), {"n": 1})
    assert await subject.store.raise_alert(alert) is True
    later = BudgetAlert("b", alert.event_id, alert.time + timedelta(seconds=1), {"n": 2})
    assert await subject.store.raise_alert(later) is False
