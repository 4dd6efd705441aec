"""Lease arithmetic and settlement (quota.py) against the in-memory counter store: no
database, the same contract (tests/contract/test_counter_store.py holds both stores to it)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from warden.engine import Demand, QuotaCheck, policy_from_row
from warden.quota import Quotas
from warden.store.memory import InMemoryCounterStore


def limit(policy_id: str, metric: str, value: int, window: str = "WINDOW_HOUR",
          failure_mode: str = "fail_closed", mode: str = "enforce"):
    return policy_from_row({
        "id": policy_id, "scope_kind": "app", "scope_id": "chat", "policy_type": "rate_limit",
        "mode": mode, "failure_mode": failure_mode,
        "config": {"metric": f"METRIC_{metric}", "window": window, "limit": value}})


def requests(policy) -> QuotaCheck:
    return QuotaCheck(policy, Demand(1))


def tokens(policy, input_tokens: int) -> QuotaCheck:
    return QuotaCheck(policy, Demand(input_tokens, 1))


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_call_takes_from_every_quota_or_from_none() -> None:
    store = InMemoryCounterStore()
    quotas = Quotas(store, 5)
    rpm, tpm = limit("rpm", "REQUESTS", 100), limit("tpm", "TOTAL_TOKENS", 1000)
    outcomes, got, parts = await quotas.take([requests(rpm), tokens(tpm, 900)], 50, 50, now())
    assert [o.admitted for o in outcomes] == [True, True] and got.max_output == 50
    assert [(p.policy_id, p.amount) for p in parts] == [("rpm", 1), ("tpm", 950)]
    # 50 tokens left: a call that needs 100 at least takes nothing, not even its request.
    held = quotas._leases["rpm"].available
    outcomes, got, parts = await quotas.take([requests(rpm), tokens(tpm, 60)], 40, 40, now())
    assert [o.admitted for o in outcomes] == [True, False] and parts == []
    assert quotas._leases["rpm"].available == held


async def test_max_output_is_lowered_to_what_a_token_limit_can_cover() -> None:
    quotas = Quotas(InMemoryCounterStore(), 5)
    tpm = limit("tpm", "TOTAL_TOKENS", 1000)
    await quotas.take([tokens(tpm, 500)], 300, 1, now())  # 800 taken, 200 left
    outcomes, got, parts = await quotas.take([tokens(tpm, 100)], 300, 1, now())
    assert got.max_output == 100 and outcomes[0].binding and parts[0].amount == 200


async def test_leases_of_two_sidecars_never_admit_more_than_the_limit() -> None:
    store = InMemoryCounterStore()
    cars = [Quotas(store, 5), Quotas(store, 5)]
    rpm = limit("rpm", "REQUESTS", 500)

    async def call(i: int) -> bool:
        outcomes, _, _ = await cars[i % 2].take([requests(rpm)], 0, 0, now())
        return outcomes[0].admitted

    admitted = sum(await asyncio.gather(*(call(i) for i in range(1500))))
    assert admitted == 500
    for car in cars:
        await car.release()
    assert sum(store.buckets["rpm"].values()) == 500


async def test_with_the_store_away_fail_open_admits_and_owes_and_fail_closed_denies() -> None:
    store = InMemoryCounterStore()
    quotas = Quotas(store, 5)
    open_, closed = (limit("open", "REQUESTS", 100, failure_mode="fail_open"),
                     limit("closed", "REQUESTS", 100))
    store.down = True
    outcomes, _, _ = await quotas.take([requests(open_)], 0, 0, now())
    assert outcomes[0].admitted and outcomes[0].remaining is None
    outcomes, _, _ = await quotas.take([requests(closed)], 0, 0, now())
    assert not outcomes[0].admitted and outcomes[0].unavailable
    assert quotas._leases["open"].debt == 1
    store.down = False
    quotas._down_until = 0.0
    await quotas.take([requests(open_)], 0, 0, now())
    await quotas.release()
    assert sum(store.buckets["open"].values()) == 2  # the owed call, charged, and this one


async def test_a_refund_goes_back_into_the_live_lease_and_the_rest_to_the_bucket() -> None:
    store = InMemoryCounterStore()
    quotas = Quotas(store, 5)
    tpm = limit("tpm", "TOTAL_TOKENS", 10_000)
    _, _, parts = await quotas.take([tokens(tpm, 100)], 900, 1, now())
    before = quotas._leases["tpm"].available
    assert quotas.settle(tuple(parts), {"TOTAL_TOKENS": 300}) == []
    assert quotas._leases["tpm"].available == before + 700
    # Once the lease holds another bucket, the difference goes to the part's own bucket.
    quotas._leases["tpm"].until = 0.0
    adjustments = quotas.settle(tuple(parts), {"TOTAL_TOKENS": 1200})
    assert adjustments == [{"policy_id": "tpm", "bucket_start": parts[0].bucket_text,
                            "delta": 200}]


async def test_a_used_lease_is_renewed_when_its_bucket_ends() -> None:
    """A minute window's buckets last half a second: the lease of one that calls took from is
    granted again as the next starts, so the next call finds it held."""
    quotas = Quotas(InMemoryCounterStore(), 5)
    rpm = limit("rpm", "REQUESTS", 10**6, window="WINDOW_MINUTE")
    await quotas.take([requests(rpm)], 0, 0, now())
    lease = quotas._leases["rpm"]
    first, loop = lease.bucket, asyncio.get_running_loop()
    await asyncio.sleep(lease.until - loop.time() + 0.1)
    assert lease.bucket != first and lease.live(loop.time())
    idle = lease.bucket  # not used since: not renewed when it ends
    await asyncio.sleep(lease.until - loop.time() + 0.1)
    assert lease.bucket == idle and not lease.live(loop.time())
    await quotas.release()


class LateFirstGrant(InMemoryCounterStore):
    """Its first grant arrives just after the bucket it was granted in has ended, as on a
    loaded machine near the end of a minute window's half-second bucket."""

    def __init__(self) -> None:
        super().__init__()
        self.late = True

    async def lease(self, *args):
        grant = await super().lease(*args)
        if self.late:
            self.late = False
            await asyncio.sleep((grant.bucket_end - grant.db_now).total_seconds() + 0.02)
        return grant


async def test_a_grant_that_ends_before_it_lands_is_asked_again_for_dry_run_checks_too() -> None:
    """A dry-run limit reports what enforcing it would say: a call must not be reported over
    a limit of 1 because its grant expired on the way, nor the next one under it."""
    quotas = Quotas(LateFirstGrant(), 5)
    rpm = limit("rpm", "REQUESTS", 1, window="WINDOW_MINUTE", mode="dry_run")
    first, _, _ = await quotas.take([requests(rpm)], 0, 0, now())
    second, _, _ = await quotas.take([requests(rpm)], 0, 0, now())
    assert (first[0].admitted, second[0].admitted) == (True, False)
    await quotas.release()
