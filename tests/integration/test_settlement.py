"""Settlement wherever it lands, and a journal replayed after a crash: real sidecars, real
Postgres.

- A replayed journal (a crash after its flush committed, before the segment was removed) is
  no request-id reuse: nothing is counted as a conflict and nothing is logged twice.
- With four sidecars and a fifth of the settlements sent to another sidecar than the one that
  authorized the call, a token limit and a budget are used to within a few per cent, and
  never beyond: refunds are neither stranded nor made twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil

import grpc
import pytest
from prometheus_client import REGISTRY

from tests.conftest import Client, settings_for
from tests.helpers import authorize_request, clear_of_utc_midnight, tenant, until
from warden.app import App
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ALLOW = warden_pb2.DECISION_ALLOW
SIDECARS = 4
CONCURRENCY = 64
ELSEWHERE = 0.2


def _conflicts() -> float:
    return REGISTRY.get_sample_value("warden_journal_dropped_total", {"kind": "conflict"}) or 0.0


async def test_a_replayed_journal_is_no_request_id_reuse(db_url, db, tmp_path, caplog):
    settings = settings_for(db_url, str(tmp_path), journal_flush_seconds="3600")
    app = App(settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.target) as channel:
            client = Client(channel)
            key = await tenant(client)
            for i in range(200):
                reply = await client.warden.Authorize(authorize_request(key, f"r{i}"))
                assert reply.decision == ALLOW
        journal, saved = tmp_path / "journal", tmp_path / "saved"
        saved.mkdir()
        for segment in journal.glob("*.wal"):
            shutil.copy(segment, saved / segment.name)
        await app.components.flusher.flush()
    finally:
        await app.stop()
    assert await db.fetchval("SELECT count(*) FROM requests") == 200

    # As if killed after the flush committed: the next start finds the segments again.
    for segment in saved.glob("*.wal"):
        shutil.copy(segment, journal / segment.name)
    before = _conflicts()
    caplog.set_level(logging.WARNING, logger="warden.flusher")
    again = App(settings)
    await again.start()
    try:
        assert again.components.journal.pending() == 0
    finally:
        await again.stop()
    assert _conflicts() == before
    assert not [r for r in caplog.records if "another" in r.getMessage()]
    assert await db.fetchval("SELECT count(*) FROM requests") == 200


async def _offer(cars, key: str, count: int, seed: int, cost_of=None) -> dict[str, int]:
    """`count` calls spread over the sidecars, each settled with a random share of its
    max_output_tokens used, one in five through another sidecar than the one that authorized
    it (retried there until that sidecar's flush has brought it the decision). Returns what
    was settled: request id -> tokens, or cost with `cost_of`."""
    rng = random.Random(seed)
    asks = [(rng.randint(1, 2000), rng.randint(1, 2000), rng.random(),
             rng.random() < ELSEWHERE, rng.randrange(1, SIDECARS)) for _ in range(count)]
    settled: dict[str, int] = {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def call(i: int) -> None:
        inp, max_out, fraction, elsewhere, shift = asks[i]
        car, request_id = i % SIDECARS, f"s{seed}-{i}"
        async with gate:
            reply = await cars[car].warden.Authorize(authorize_request(
                key, request_id, input_tokens=inp, max_output_tokens=max_out,
                min_output_tokens=max_out), timeout=30)
            if reply.decision != ALLOW:
                return
            await asyncio.sleep(fraction * 0.005)  # the LLM call
            out = max(1, round(fraction * max_out))
            usage = warden_pb2.RecordUsageRequest(
                request_id=request_id, api_key=key, outcome=warden_pb2.OUTCOME_COMPLETED,
                usage=types_pb2.Usage(input_tokens=inp, output_tokens=out),
                reservation_id=reply.reservation_id)
            settler = cars[(car + shift) % SIDECARS] if elsewhere else cars[car]
            for _ in range(100):
                try:
                    answer = await settler.warden.RecordUsage(usage, timeout=30)
                    break
                except grpc.aio.AioRpcError as exc:
                    # The decision reaches the other sidecar with the first one's next flush.
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{request_id} never reached the other sidecar")
            settled[request_id] = answer.cost_micros if cost_of else inp + out

    await asyncio.gather(*(call(i) for i in range(count)))
    return settled


@pytest.mark.timeout(300)
@pytest.mark.parametrize("quota", ["tokens", "budget"])
async def test_a_limit_is_used_whichever_sidecar_settles(db_url, db, fleet, quota):
    limit = 200_000 if quota == "tokens" else 1_000_000
    if quota == "budget":
        await clear_of_utc_midnight()
    cars = await fleet.start_many(SIDECARS, db_url)
    admin = cars[0].client
    key = await tenant(admin)
    if quota == "tokens":
        config = {"rate_limit": types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_TOTAL_TOKENS, window=types_pb2.WINDOW_HOUR, limit=limit)}
    else:
        # 1 micro per input token, 2 per output token: a call costs about 1.5x its tokens.
        await admin.admin.SetModelPrice(admin_pb2.SetModelPriceRequest(
            price=admin_pb2.ModelPrice(model="gpt-4o-mini", input_micros_per_million=10**6,
                                       output_micros_per_million=2 * 10**6)),
            metadata=admin.auth)
        config = {"budget": types_pb2.BudgetConfig(period=types_pb2.PERIOD_DAY,
                                                   limit_micros=limit)}
    await admin.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="chat-quota", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat"),
        mode=types_pb2.POLICY_MODE_ENFORCE, **config)), metadata=admin.auth)

    # Offered in waves until the limit stops admitting: refunds made meanwhile admit more.
    settled: dict[str, int] = {}
    for wave in range(8):
        settled.update(await _offer(cars, key, 250, wave, cost_of=quota == "budget"))
        await asyncio.sleep(1.5)  # every sidecar's flush hands settlements to their owners
    used = sum(settled.values())
    print(f"\n{quota}: {len(settled)} calls settled, {used}/{limit} used ({used / limit:.1%})")
    assert used <= limit
    assert used >= 0.97 * limit

    await fleet.stop_all_cleanly(cars)
    stored = await db.fetchval("SELECT count(*) FROM usage")
    assert stored == len(settled)
    granted = await db.fetchval("SELECT sum(granted) FROM quota_buckets")
    print(f"{quota}: quota_buckets granted {granted} after shutdown")
    # Every reservation was settled once, by its owner, and every unspent lease given back.
    assert granted == used
    await until(lambda: db.fetchval("SELECT count(*) = 0 FROM usage WHERE refund_pending"))


async def test_the_owner_is_told_at_once_when_usage_is_held_for_it(db_url, db, tmp_path):
    """A settles its reservation itself, though it flushes nothing for an hour: the change feed
    tells it the moment B's flush holds the usage."""
    a = App(settings_for(db_url, str(tmp_path / "a"), journal_flush_seconds="3600"))
    b = App(settings_for(db_url, str(tmp_path / "b"), journal_flush_seconds="0.2"))
    await a.start()
    await b.start()
    try:
        async with grpc.aio.insecure_channel(a.target) as ca, \
                grpc.aio.insecure_channel(b.target) as cb:
            admin, other = Client(ca), Client(cb)
            key = await tenant(admin)
            await admin.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(
                policy=types_pb2.Policy(
                    id="tph", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat"),
                    rate_limit=types_pb2.RateLimitConfig(
                        metric=types_pb2.METRIC_TOTAL_TOKENS, window=types_pb2.WINDOW_HOUR,
                        limit=100_000))), metadata=admin.auth)
            reply = await admin.warden.Authorize(authorize_request(
                key, "r1", input_tokens=100, max_output_tokens=900))
            assert reply.decision == ALLOW
            await a.components.flusher.flush()  # the decision reaches Postgres
            lease = a.components.quotas._leases["tph"]
            held = lease.available
            await other.warden.RecordUsage(warden_pb2.RecordUsageRequest(
                request_id="r1", api_key=key, outcome=warden_pb2.OUTCOME_COMPLETED,
                usage=types_pb2.Usage(input_tokens=100, output_tokens=100),
                reservation_id=reply.reservation_id))
            # 800 of the 1,000 reserved were not used: back in A's lease, not in B's.
            await until(lambda: _true(lease.available == held + 800), within=3.0)
            assert await db.fetchval("SELECT refund_pending FROM usage") is False
    finally:
        await b.stop()
        await a.stop()


async def _true(value: bool) -> bool:
    return value
