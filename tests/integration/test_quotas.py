"""Token limits, budgets, reservations and settlement on one sidecar (several sidecars:
test_quotas_multi.py)."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.conftest import Client, settings_for
from tests.helpers import authorize_request, expect_error, rate_limit, tenant, until
from warden import quota
from warden.app import App
from warden.engine.windows import BUCKETS
from warden.v1 import admin_pb2, types_pb2, warden_pb2

APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
ALLOW, DENY = warden_pb2.DECISION_ALLOW, warden_pb2.DECISION_DENY


async def _policy(client, policy_id: str, **config) -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=APP, **config)), metadata=client.auth)


def _tokens(limit: int, metric=types_pb2.METRIC_TOTAL_TOKENS) -> dict:
    return {"rate_limit": types_pb2.RateLimitConfig(metric=metric, window=types_pb2.WINDOW_HOUR,
                                                    limit=limit)}


def _budget(limit: int, **fields) -> dict:
    return {"budget": types_pb2.BudgetConfig(period=types_pb2.PERIOD_DAY, limit_micros=limit,
                                             **fields)}


async def _price(client, model="gpt-4o-mini", inp=1_000_000, out=2_000_000) -> None:
    """Default: 1 micro per input token, 2 per output token."""
    await client.admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=admin_pb2.ModelPrice(
        model=model, input_micros_per_million=inp, output_micros_per_million=out,
        cached_input_micros_per_million=inp)), metadata=client.auth)


def _usage(key, request_id, inp, out, **fields):
    return warden_pb2.RecordUsageRequest(
        request_id=request_id, api_key=key, outcome=warden_pb2.OUTCOME_COMPLETED,
        usage=types_pb2.Usage(input_tokens=inp, output_tokens=out), **fields)


async def test_a_token_limit_lowers_max_output_tokens_then_denies(client):
    key = await tenant(client)
    await _policy(client, "chat-tph", **_tokens(1000))
    first = await client.warden.Authorize(authorize_request(
        key, "t1", input_tokens=100, max_output_tokens=2000))
    assert first.decision == ALLOW and first.route.max_output_tokens == 900
    [result] = first.results
    assert "max_output_tokens lowered from 2000 to 900" in result.message
    [status] = first.limits
    assert (status.metric, status.limit, status.remaining) == (
        types_pb2.METRIC_TOTAL_TOKENS, 1000, 0)
    # Nothing left, and a caller that cannot go below 50 tokens is denied, not trimmed.
    denied = await client.warden.Authorize(authorize_request(
        key, "t2", input_tokens=10, max_output_tokens=100, min_output_tokens=50))
    assert (denied.decision, denied.reason) == (DENY, types_pb2.REASON_RATE_LIMITED)
    assert "1000 tokens per hour reached at app chat" in denied.results[0].message
    assert 3600 < denied.retry_after.ToTimedelta().total_seconds() <= 3600 + 3600 / BUCKETS
    assert not denied.route.model


async def test_settlement_refunds_what_a_call_did_not_use(client):
    key = await tenant(client)
    await _price(client)
    await _policy(client, "chat-tph", **_tokens(1000))
    first = await client.warden.Authorize(authorize_request(
        key, "s1", input_tokens=100, max_output_tokens=900))
    assert first.limits[0].remaining == 0
    settled = await client.warden.RecordUsage(_usage(key, "s1", 100, 150,
                                                     reservation_id=first.reservation_id))
    assert (settled.cost_micros, settled.duplicate) == (100 + 300, False)
    # 750 reserved output tokens came back: a call of 700 fits again.
    second = await client.warden.Authorize(authorize_request(
        key, "s2", input_tokens=100, max_output_tokens=600))
    assert second.decision == ALLOW and second.route.max_output_tokens == 600
    assert second.limits[0].remaining == 1000 - 250 - 700


async def test_usage_beyond_the_reservation_is_charged(client, db, warden):
    key = await tenant(client)
    await _price(client)
    await _policy(client, "chat-in", **_tokens(1000, types_pb2.METRIC_INPUT_TOKENS))
    await client.warden.Authorize(authorize_request(key, "o1", input_tokens=100))
    # The caller under-estimated its prompt: 300 more input tokens are charged, from the lease
    # as far as it goes and in Postgres with the usage record for the rest.
    await client.warden.RecordUsage(_usage(key, "o1", 400, 10))
    await asyncio.sleep(0.2)  # a background refill may be in flight
    await warden.components.flusher.flush()
    await warden.components.quotas.release()
    # With every lease given back, what the counter holds is what was consumed.
    assert await db.fetchval("SELECT sum(granted) FROM quota_buckets") == 400


async def test_a_budget_reserves_the_worst_case_and_denies_when_spent(client, db, warden):
    key = await tenant(client)
    await _price(client)
    await _policy(client, "chat-daily", **_budget(10_000))
    # Worst case 1000 input + 4000 output tokens = 1000 + 8000 micros.
    first = await client.warden.Authorize(authorize_request(
        key, "b1", input_tokens=1000, max_output_tokens=4000))
    assert first.decision == ALLOW and first.route.max_output_tokens == 4000
    [status] = first.limits
    assert (status.metric, status.limit, status.remaining) == (
        types_pb2.METRIC_COST_MICROS, 10_000, 1000)
    # Only 1000 micros remain: a 1000-token prompt leaves room for no output at all.
    second = await client.warden.Authorize(authorize_request(
        key, "b2", input_tokens=1000, max_output_tokens=100))
    assert (second.decision, second.reason) == (DENY, types_pb2.REASON_BUDGET_EXHAUSTED)
    assert "budget of 10000 micros per day at app chat" in second.results[0].message
    # Settling the first call at its real cost frees the rest of its reservation.
    await client.warden.RecordUsage(_usage(key, "b1", 1000, 500))
    third = await client.warden.Authorize(authorize_request(
        key, "b3", input_tokens=1000, max_output_tokens=100))
    assert third.decision == ALLOW
    await warden.components.flusher.flush()
    row = await db.fetchrow("SELECT reserved_cost_micros, reserved FROM requests"
                            " WHERE request_id = 'b1'")
    assert row["reserved_cost_micros"] == 9000
    assert [(p["policy_id"], p["metric"], p["amount"]) for p in json.loads(row["reserved"])] == [
        ("chat-daily", "COST_MICROS", 9000)]
    assert await db.fetchval("SELECT cost_micros FROM usage WHERE request_id = 'b1'") == 2000


async def test_a_budget_alert_is_raised_once_per_period(client, db, warden, db_url, tmp_path):
    key = await tenant(client)
    await _price(client)
    await _policy(client, "chat-daily", **_budget(10_000, alert_threshold_percent=50))

    async def alerts() -> list:
        return await db.fetch("SELECT org_id, app_id, action, attributes FROM audit_events"
                              " WHERE action = 'budget.alert'")

    # 500 micros reserved; the lease takes an eighth of the budget: 12.5 % counted.
    await client.warden.Authorize(authorize_request(key, "a1", input_tokens=400,
                                                    max_output_tokens=50))
    await warden.components.quotas.raise_alerts()
    assert await alerts() == []
    # 5000 more: the refill brings the count to 55 %.
    await client.warden.Authorize(authorize_request(key, "a2", input_tokens=1000,
                                                    max_output_tokens=2000))
    await warden.components.quotas.raise_alerts()
    [alert] = await alerts()
    attributes = json.loads(alert["attributes"])
    assert (alert["org_id"], alert["app_id"]) == ("acme", "chat")
    assert {k: attributes[k] for k in ("policy_id", "threshold_percent", "limit_micros",
                                       "counted_micros", "period")} == {
        "policy_id": "chat-daily", "threshold_percent": 50, "limit_micros": 10_000,
        "counted_micros": 5500, "period": "DAY"}
    # Another sidecar sees the same period over the threshold: still one event.
    other = App(settings_for(db_url, str(tmp_path / "other")))
    await other.start()
    try:
        async with grpc.aio.insecure_channel(other.target) as channel:
            reply = await Client(channel).warden.Authorize(authorize_request(
                key, "a3", input_tokens=100, max_output_tokens=50))
        assert reply.decision == ALLOW
        # Queued there too (its lease marks the period alerted) ...
        assert other.components.quotas._leases["chat-daily"].alerted is not None
        await other.components.quotas.raise_alerts()
    finally:
        await other.stop()
    assert len(await alerts()) == 1  # ... and stored once


async def test_budget_cost_cap_and_unpriced_models(client):
    key = await tenant(client)
    await _price(client)
    await _policy(client, "chat-daily", **_budget(1_000_000, max_request_cost_micros=1000))
    capped = await client.warden.Authorize(authorize_request(
        key, "c1", input_tokens=200, max_output_tokens=4000))
    assert capped.decision == ALLOW and capped.route.max_output_tokens == 400
    refused = await client.warden.Authorize(authorize_request(
        key, "c2", input_tokens=200, max_output_tokens=4000, min_output_tokens=500))
    assert (refused.decision, refused.reason) == (DENY, types_pb2.REASON_REQUEST_COST_CAP)
    error = await expect_error(client.warden.Authorize(authorize_request(
        key, "c3", model="mystery-model", input_tokens=1)))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "MODEL_NOT_PRICED")
    assert "mystery-model" in error.message and "chat-daily" in error.message
    # A budget may name the price of models the table does not list.
    await client.admin.UpdatePolicy(admin_pb2.UpdatePolicyRequest(policy=types_pb2.Policy(
        id="chat-daily", scope=APP, **_budget(1_000_000, default_input_micros_per_million=3_000_000,
                                              default_output_micros_per_million=3_000_000))),
        metadata=client.auth)
    await asyncio.sleep(0.2)  # the change notification reaches the cache
    priced = await client.warden.Authorize(authorize_request(
        key, "c4", model="mystery-model", input_tokens=10, max_output_tokens=10))
    assert priced.decision == ALLOW and priced.limits[0].remaining <= 1_000_000 - 60


async def test_reservation_mismatch_and_bad_token_counts(client):
    key = await tenant(client)
    await _price(client)
    reply = await client.warden.Authorize(authorize_request(key, "m1", input_tokens=5))
    assert len(reply.reservation_id) == 32
    error = await expect_error(client.warden.RecordUsage(_usage(
        key, "m1", 5, 5, reservation_id="not-it")))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "reservation_id" in error.violations
    error = await expect_error(client.warden.Authorize(authorize_request(
        key, "m2", input_tokens=-1, max_output_tokens=10**12, min_output_tokens=5)))
    assert set(error.violations) == {"input_tokens", "max_output_tokens"}
    error = await expect_error(client.warden.Authorize(authorize_request(
        key, "m3", max_output_tokens=10, min_output_tokens=11)))
    assert list(error.violations) == ["min_output_tokens"]
    error = await expect_error(client.warden.RecordUsage(_usage(key, "m1", -5, 10**12)))
    assert set(error.violations) == {"usage.input_tokens", "usage.output_tokens"}
    # None of that settled anything: the real settlement still goes through once.
    ok = await client.warden.RecordUsage(_usage(key, "m1", 5, 5,
                                                reservation_id=reply.reservation_id))
    assert ok.duplicate is False


@pytest.fixture
async def short_ttl(db_url, tmp_path):
    app = App(settings_for(db_url, str(tmp_path), reservation_ttl_seconds="0.4",
                           journal_flush_seconds="0.05"))
    await app.start()
    async with grpc.aio.insecure_channel(app.target) as channel:
        yield app, Client(channel)
    await app.stop()


async def test_an_unsettled_reservation_expires_at_its_reserved_amount(short_ttl, db):
    app, client = short_ttl
    key = await tenant(client)
    await _price(client)
    await client.warden.Authorize(authorize_request(key, "late", input_tokens=100,
                                                    max_output_tokens=50))
    await client.warden.Authorize(authorize_request(key, "on-time", input_tokens=1))
    await client.warden.RecordUsage(_usage(key, "on-time", 1, 1))
    await asyncio.sleep(0.5)
    error = await expect_error(client.warden.RecordUsage(_usage(key, "late", 100, 10)))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                          "RESERVATION_EXPIRED")
    assert "settled at its reserved amount" in error.message
    for _ in range(50):  # the sweep runs every TTL / 4
        row = await db.fetchrow("SELECT * FROM usage WHERE request_id = 'late'")
        if row is not None:
            break
        await asyncio.sleep(0.1)
    assert (row["outcome"], row["cost_source"], row["input_tokens"], row["output_tokens"],
            row["cost_micros"]) == ("expired", "reserved", 100, 50, 200)
    assert await db.fetchval("SELECT outcome FROM usage WHERE request_id = 'on-time'") == \
        "completed"
    # Another sidecar would answer the same from the database.
    app.components.reservations._recent.clear()
    error = await expect_error(client.warden.RecordUsage(_usage(key, "late", 100, 10)))
    assert error.reason == "RESERVATION_EXPIRED"


async def test_windows_follow_the_database_clock(db):
    """warden_lease's buckets are the ones engine/windows.py describes, whatever a sidecar's
    clock says: the bucket comes from the time the database passes in (p_at here)."""
    from warden.engine.windows import bucket_start, counted_from

    await db.execute("INSERT INTO orgs (id) VALUES ('o')")
    await db.execute(
        "INSERT INTO policies (id, org_id, scope_kind, scope_id, policy_type, mode,"
        " failure_mode, config) VALUES ('p', 'o', 'org', 'o', 'rate_limit', 'enforce',"
        " 'fail_open', '{}')")
    at = datetime(2026, 11, 22, 10, 0, 59, 900_000, tzinfo=UTC)
    for window in (60, 3600, 86400):
        for step in range(3):
            t = at + timedelta(seconds=window / BUCKETS * step * 0.7)
            row = await db.fetchrow(
                "SELECT * FROM warden_lease('p', 10, 1, $1, '', 0, NULL, 0, $2)",
                timedelta(seconds=window), t)
            assert row["bucket_start"].timestamp() == bucket_start(t.timestamp(), window)
            assert (row["bucket_end"] - row["bucket_start"]).total_seconds() == window / BUCKETS
            assert row["db_now"] == t
        used = await db.fetchval(
            "SELECT sum(granted) FROM quota_buckets WHERE bucket_start >= to_timestamp($1)",
            counted_from(t.timestamp(), window))
        assert used >= 1
        await db.execute("DELETE FROM quota_buckets")


async def test_reporting_sees_what_the_data_plane_did(client, warden):
    """Authorize and RecordUsage through the journal, then Admin's reports (their arithmetic
    is tested on hand-written rows in test_reporting.py)."""
    key = await tenant(client)
    await _price(client)
    await _policy(client, "chat-rph", rate_limit=types_pb2.RateLimitConfig(
        metric=types_pb2.METRIC_REQUESTS, window=types_pb2.WINDOW_HOUR, limit=2))
    for i in range(3):
        await client.warden.Authorize(authorize_request(key, f"q{i}", input_tokens=10,
                                                        max_output_tokens=20))
    for i, ms in ((0, 100), (1, 300)):
        latency = duration_pb2.Duration()
        latency.FromMilliseconds(ms)
        await client.warden.RecordUsage(_usage(key, f"q{i}", 10, 5, latency=latency))
    await warden.components.flusher.flush()
    metrics = await client.admin.GetRequestMetrics(admin_pb2.GetRequestMetricsRequest(
        org_id="acme"), metadata=client.auth)
    assert (metrics.requests, metrics.allowed, metrics.denied, metrics.completed) == (3, 2, 1, 2)
    assert (metrics.usage.input_tokens, metrics.usage.output_tokens, metrics.cost_micros) == (
        20, 10, 2 * (10 + 10))
    assert (metrics.latency.count, metrics.latency.p50_ms) == (2, 200.0)
    assert [(r.reason, r.count) for r in metrics.deny_reasons] == [
        (types_pb2.REASON_RATE_LIMITED, 1)]
    usage = await client.admin.GetUsage(admin_pb2.GetUsageRequest(scope=APP),
                                        metadata=client.auth)
    assert (usage.requests, usage.allowed, usage.denied) == (3, 2, 1)
    [limit] = usage.limits
    assert (limit.policy_id, limit.limit, limit.remaining) == ("chat-rph", 2, 0)


async def test_refills_in_quick_succession_keep_the_spending_rate(client, warden):
    """A lease's slice follows its measured spending rate; refills with nothing spent between
    them (each bucket's first, one whose bucket ended in transit) must not shrink it."""
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 10**9, policy_id="rpm")
    await client.warden.Authorize(authorize_request(key, "r1"))
    lease = warden.components.quotas._leases["rpm"]
    lease.rate = 1000.0
    await asyncio.sleep(0.3)
    await warden.components.quotas._refill(lease, 0)  # measured over 0.3 s: the rate may move
    measured = lease.rate
    assert measured >= 500
    for _ in range(4):
        await warden.components.quotas._refill(lease, 0)
    assert lease.rate == measured


async def test_a_lease_that_ended_before_its_bucket_waits_for_the_next(client, warden, db,
                                                                       monkeypatch):
    """A lease is timed from before the call that granted it, so it ends up to one round trip
    before its bucket ends on the database's clock. Here that trip is held up 40 ms (another
    session holds the quota's lock while the call waits for it), and the next grant is asked for
    as soon as the lease ends: it must land in the next bucket, not in the last milliseconds of
    the old one (a lease that dies at once and costs a second call). The wait's cap is raised so
    that a slow machine, which makes the trip longer than the cap, cannot cut it short, and the
    first call starts early in a bucket so that its grant does not end in transit (which would
    take a second, quick grant)."""
    monkeypatch.setattr(quota, "BOUNDARY_WAIT", 0.4)
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 10**9, policy_id="rpm")
    width = timedelta(minutes=1) / BUCKETS
    left = await db.fetchval("SELECT date_bin($1, clock_timestamp(), 'epoch') + $1"
                             " - clock_timestamp()", width)
    if left < width / 2:
        await asyncio.sleep(left.total_seconds() + 0.01)
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended('warden.quota:rpm', 0))")
        first = asyncio.ensure_future(client.warden.Authorize(authorize_request(key, "r1")))
        await until(lambda: db.fetchval(  # the call waits for the lock
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND (classid::bigint << 32 | objid::bigint) = hashtextextended('warden.quota:rpm', 0)"
        ), within=10, step=0.005)
        await asyncio.sleep(0.04)
    await first
    lease = warden.components.quotas._leases["rpm"]
    assert lease.rtt >= 0.04
    bucket = lease.bucket
    await asyncio.sleep(max(lease.until - time.monotonic(), 0))
    await client.warden.Authorize(authorize_request(key, "r2"))
    assert lease.bucket == bucket + width
    assert lease.until - time.monotonic() > 0.3


async def test_a_lease_that_ends_during_a_decision_does_not_deny_it(client, warden,
                                                                    monkeypatch):
    """Found live with room, a lease needs no refill; if the decision then read the clock
    again and found the lease just ended, it was denied RATE_LIMITED with nothing asked for
    (about one call in 30,000 under load). The clock here ends the lease between two reads."""
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 10**9, policy_id="rpm")
    await client.warden.Authorize(authorize_request(key, "r1"))
    lease = warden.components.quotas._leases["rpm"]
    lease.until = time.monotonic() + 10

    class Clock:  # the first read just before the lease's end, every later one after it
        reads = 0

        @classmethod
        def monotonic(cls) -> float:
            cls.reads += 1
            return lease.until - 0.0001 if cls.reads == 1 else lease.until + 0.0001

    monkeypatch.setattr(quota, "time", Clock)
    reply = await client.warden.Authorize(authorize_request(key, "r2"))
    assert Clock.reads >= 1
    assert reply.decision == warden_pb2.DECISION_ALLOW, reply.reason
