"""Quotas across several real sidecar processes on one real Postgres: the total admitted never
exceeds a limit (requests, tokens, a budget), acknowledged usage survives SIGKILL, and a
database outage fails open or closed as each policy says and recovers within seconds.

Each sidecar is `python -m warden serve` on its own Unix socket and data directory (so its own
journal); the test talks to them over gRPC and reads the outcome from Postgres after SIGTERM.
The single-sidecar details (trimming, settlement arithmetic) are in test_quotas.py.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

from tests.conftest import Client
from tests.helpers import authorize_request, clear_of_utc_midnight, new_key, tenant, until
from warden.v1 import admin_pb2, types_pb2, warden_pb2

ALLOW, DENY = warden_pb2.DECISION_ALLOW, warden_pb2.DECISION_DENY
MODEL = "gpt-4o-mini"
CALL_SECONDS = 30.0
SIDECARS = 4
CONCURRENCY = 64


# -- tenants, policies, calls ----------------------------------------------------------------------


def _app(app_id: str) -> types_pb2.Scope:
    return types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id=app_id)


async def _policy(client: Client, policy_id: str, app_id: str = "chat",
                  failure_mode: int = types_pb2.FAILURE_MODE_UNSPECIFIED, **config) -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=_app(app_id), mode=types_pb2.POLICY_MODE_ENFORCE,
        failure_mode=failure_mode, **config)), metadata=client.auth)


def _per_hour(metric: int, limit: int) -> types_pb2.RateLimitConfig:
    # An hour: a test of a minute or so never sees a window slide past what it counted.
    return types_pb2.RateLimitConfig(metric=metric, window=types_pb2.WINDOW_HOUR, limit=limit)


def _daily(limit_micros: int) -> types_pb2.BudgetConfig:
    return types_pb2.BudgetConfig(period=types_pb2.PERIOD_DAY, limit_micros=limit_micros)


async def _price(client: Client) -> None:
    """1 micro per input token, 2 per output token, for any provider."""
    await client.admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=admin_pb2.ModelPrice(
        provider="", model=MODEL, input_micros_per_million=1_000_000,
        output_micros_per_million=2_000_000)), metadata=client.auth)


def _usage(key: str, request_id: str, inp: int, out: int, **fields
           ) -> warden_pb2.RecordUsageRequest:
    return warden_pb2.RecordUsageRequest(
        request_id=request_id, api_key=key, outcome=warden_pb2.OUTCOME_COMPLETED,
        usage=types_pb2.Usage(input_tokens=inp, output_tokens=out), **fields)


async def _bounded(count: int, call: Callable[[int], Awaitable], limit: int = CONCURRENCY
                   ) -> list:
    """call(0..count-1), at most `limit` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(i: int):
        async with gate:
            return await call(i)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# -- 1. requests ---------------------------------------------------------------------------------


async def test_admitted_requests_never_exceed_the_limit_across_four_sidecars(
        db_url, db, fleet):
    limit = 400
    cars = await fleet.start_many(SIDECARS, db_url)
    admin = cars[0].client
    key = await tenant(admin)
    await _policy(admin, "chat-rph", rate_limit=_per_hour(types_pb2.METRIC_REQUESTS, limit))

    async def call(i: int) -> tuple[int, warden_pb2.AuthorizeResponse]:
        car = i % SIDECARS
        return car, await cars[car].warden.Authorize(authorize_request(key, f"r{i}"),
                                                     timeout=CALL_SECONDS)

    started = time.monotonic()
    replies = await _bounded(3 * limit, call)
    elapsed = time.monotonic() - started
    allowed = [car for car, r in replies if r.decision == ALLOW]
    admitted = len(allowed)
    print(f"\nrequests: admitted {admitted}/{limit} ({admitted / limit:.1%}) of {3 * limit} "
          f"offered in {elapsed:.1f} s; per sidecar {sorted(Counter(allowed).items())}")
    assert {r.reason for _, r in replies if r.decision == DENY} == {types_pb2.REASON_RATE_LIMITED}
    assert admitted <= limit
    # Near the limit every sidecar leases single requests and asks again every 0.1 s while
    # calls keep coming, so little allowance is left stranded when the offer ends.
    assert admitted >= 0.97 * limit

    await fleet.stop_all_cleanly(cars)
    logged = await db.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE decision = 'allow') AS allowed"
        " FROM requests")
    assert (logged["n"], logged["allowed"]) == (3 * limit, admitted)
    granted = await db.fetchval("SELECT sum(granted) FROM quota_buckets")
    print(f"requests: quota_buckets granted {granted} after shutdown")
    # What the database handed out covers every admitted call and never exceeds the limit;
    # unspent leases were given back at SIGTERM.
    assert admitted <= granted <= limit


# -- 2. tokens -----------------------------------------------------------------------------------


async def test_settled_tokens_never_exceed_the_limit_and_refunds_are_reused(db_url, db, fleet):
    limit = 200_000
    offered = 400  # reserving ~2,000 tokens each: 4x the limit, ~3x once settled
    cars = await fleet.start_many(SIDECARS, db_url)
    admin = cars[0].client
    key = await tenant(admin)
    await _policy(admin, "chat-tph", rate_limit=_per_hour(types_pb2.METRIC_TOTAL_TOKENS, limit))
    rng = random.Random(20240501)
    asks = [(rng.randint(1, 2000), rng.randint(1, 2000), rng.random()) for _ in range(offered)]
    settled: dict[str, tuple[int, int]] = {}  # acknowledged RecordUsage: request id -> tokens
    reserved: list[int] = []

    async def call(i: int) -> warden_pb2.AuthorizeResponse:
        inp, max_out, fraction = asks[i]
        car, request_id = cars[i % SIDECARS], f"t{i}"
        # min = max: a call either gets all the output tokens it asked for or is denied.
        reply = await car.warden.Authorize(authorize_request(
            key, request_id, input_tokens=inp, max_output_tokens=max_out,
            min_output_tokens=max_out), timeout=CALL_SECONDS)
        if reply.decision != ALLOW:
            return reply
        assert reply.route.max_output_tokens == max_out
        reserved.append(inp + max_out)
        out = max(1, round(fraction * reply.route.max_output_tokens))
        await asyncio.sleep(fraction * 0.005)  # the LLM call
        await car.warden.RecordUsage(_usage(key, request_id, inp, out, cost_micros=inp + out,
                                            reservation_id=reply.reservation_id),
                                     timeout=CALL_SECONDS)
        settled[request_id] = (inp, out)
        return reply

    replies = await _bounded(offered, call)
    denials = {r.reason for r in replies if r.decision == DENY}
    total = sum(i + o for i, o in settled.values())
    print(f"\ntokens: {len(settled)}/{offered} admitted; settled {total}/{limit} "
          f"({total / limit:.1%}); reserved by admitted calls {sum(reserved)} "
          f"({sum(reserved) / limit:.1%})")
    assert denials == {types_pb2.REASON_RATE_LIMITED}
    assert total <= limit
    # Refunds of settled calls went back into the leases and admitted more calls: the
    # admitted reservations add up to more than the limit itself.
    assert sum(reserved) > limit
    # Utilisation: what is never used is the fragments leases hold that are smaller than the
    # next call's reservation (< 4,000 tokens per sidecar) and the refunds of the last calls
    # in flight when the offer ends; both are small next to 200,000.
    assert total >= 0.9 * limit

    await fleet.stop_all_cleanly(cars)
    rows = await db.fetch("SELECT request_id, input_tokens, output_tokens FROM usage")
    stored = {r["request_id"]: (r["input_tokens"], r["output_tokens"]) for r in rows}
    print(f"tokens: usage rows {len(rows)}, acknowledged RecordUsage {len(settled)}")
    assert len(rows) == len(settled) and stored == settled
    granted = await db.fetchval("SELECT sum(granted) FROM quota_buckets")
    print(f"tokens: quota_buckets granted {granted} after shutdown")
    # Every reservation was settled and every unspent lease given back: the counter holds
    # exactly what was used.
    assert granted == total


# -- 3. budget -----------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # may first wait out a UTC midnight
async def test_settled_spend_never_exceeds_the_budget_with_calls_in_flight(db_url, db, fleet):
    budget = 1_000_000
    offered = 800  # worst case ~3,000 micros each: 2.4x the budget, ~1.6x once settled
    await clear_of_utc_midnight()
    cars = await fleet.start_many(SIDECARS, db_url)
    admin = cars[0].client
    key = await tenant(admin)  # the org's time zone defaults to UTC
    await _price(admin)
    await _policy(admin, "chat-daily", budget=_daily(budget))
    rng = random.Random(20240502)
    asks = []
    for _ in range(offered):
        max_out = rng.randint(1, 2000)
        asks.append((rng.randint(1, 2000), max_out, rng.randint(1, max_out), rng.random()))
    settled: dict[str, int] = {}  # acknowledged RecordUsage: request id -> cost
    trimmed = 0

    async def call(i: int) -> warden_pb2.AuthorizeResponse:
        nonlocal trimmed
        inp, max_out, min_out, fraction = asks[i]
        car, request_id = cars[i % SIDECARS], f"b{i}"
        reply = await car.warden.Authorize(authorize_request(
            key, request_id, input_tokens=inp, max_output_tokens=max_out,
            min_output_tokens=min_out), timeout=CALL_SECONDS)
        if reply.decision != ALLOW:
            return reply
        route_max = reply.route.max_output_tokens
        assert min_out <= route_max <= max_out
        trimmed += route_max < max_out
        await asyncio.sleep(0.001 + 0.009 * rng.random())  # in flight
        out = max(1, round(fraction * route_max))
        answer = await car.warden.RecordUsage(_usage(key, request_id, inp, out),
                                              timeout=CALL_SECONDS)
        assert answer.cost_micros == inp + 2 * out
        settled[request_id] = answer.cost_micros
        return reply

    replies = await _bounded(offered, call)
    denied = [r for r in replies if r.decision == DENY]
    spend = sum(settled.values())
    print(f"\nbudget: {len(settled)}/{offered} admitted ({trimmed} with max_output_tokens "
          f"lowered), {len(denied)} denied; settled spend {spend}/{budget} ({spend / budget:.1%})")
    assert denied, "the offer was meant to exhaust the budget"
    assert {r.reason for r in denied} == {types_pb2.REASON_BUDGET_EXHAUSTED}
    assert all(res.reason == types_pb2.REASON_BUDGET_EXHAUSTED
               for r in denied for res in r.results if not res.allowed)
    assert spend <= budget

    await fleet.stop_all_cleanly(cars)
    stored = await db.fetchrow("SELECT count(*) AS n, coalesce(sum(cost_micros), 0) AS spend"
                               " FROM usage")
    print(f"budget: usage rows {stored['n']}, spend in Postgres {stored['spend']}")
    assert (stored["n"], stored["spend"]) == (len(settled), spend)
    granted = await db.fetchval("SELECT sum(granted) FROM quota_buckets")
    print(f"budget: quota_buckets granted {granted} after shutdown")
    assert granted == spend
    # Each allowed call reserved its worst case at the price: input + 2 x max output tokens.
    wrong = await db.fetchval(
        "SELECT count(*) FROM requests WHERE decision = 'allow'"
        " AND reserved_cost_micros <> input_tokens + 2 * max_output_tokens")
    assert wrong == 0


# -- 4. SIGKILL ------------------------------------------------------------------------------------


async def test_acknowledged_usage_survives_sigkill(db_url, db, fleet, tmp_path):
    count = 2000
    car = await fleet.start("k1", db_url, data_dir=tmp_path / "data")
    key = await tenant(car.client)
    await _bounded(count, lambda i: car.warden.Authorize(
        authorize_request(key, f"k{i}", input_tokens=10, max_output_tokens=20),
        timeout=CALL_SECONDS))
    acknowledged: set[str] = set()
    failed: Counter = Counter()
    killed = asyncio.Event()

    async def record(i: int) -> None:
        if killed.is_set():
            return
        try:
            await car.warden.RecordUsage(_usage(key, f"k{i}", 10, i % 20, cost_micros=i),
                                         timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as exc:
            failed[exc.code().name] += 1
            return
        acknowledged.add(f"k{i}")
        if len(acknowledged) >= count // 4 and not killed.is_set():
            killed.set()
            car.proc.send_signal(signal.SIGKILL)

    await _bounded(count, record, limit=128)
    assert await car.proc.wait() == -signal.SIGKILL
    print(f"\nsigkill: acknowledged {len(acknowledged)}, failed {dict(failed)} "
          f"when killed")
    assert failed, "SIGKILL was meant to cut calls off in flight"

    # A new process on the same data directory applies what the killed one journaled.
    again = await fleet.start("k2", db_url, data_dir=tmp_path / "data")
    await fleet.stop_all_cleanly([again])
    assert await db.fetchval("SELECT count(*) FROM requests") == count
    rows = await db.fetch("SELECT request_id, output_tokens, cost_micros FROM usage")
    stored = {r["request_id"]: r for r in rows}
    print(f"sigkill: acknowledged {len(acknowledged)}, stored {len(stored)}")
    assert not acknowledged - set(stored), "acknowledged usage lost"
    assert len(rows) == len(stored)
    for request_id, row in stored.items():
        i = int(request_id[1:])
        assert (row["output_tokens"], row["cost_micros"]) == (i % 20, i)


# -- 5. outage -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    app: str
    request_id: str
    started: float
    ended: float = 0.0
    decision: int = 0
    reason: int = 0
    error: str = ""  # an RPC error of Authorize or RecordUsage
    acknowledged: bool = False  # RecordUsage answered OK


@pytest.mark.timeout(180)
async def test_outage_fails_open_or_closed_then_recovers(private_pg, fleet):
    # Limits small enough that what the sidecar holds is a couple of seconds of this load, not
    # the whole limit: the first lease of a quota is an eighth of the limit (2.5 s here, spent
    # during the warm-up), later ones about LEASE_HORIZON (2 s) of recent spending, asked for
    # when a quarter of the last one is left. So the sidecar holds at most ~2.5 s of spending
    # when the database goes away, and the outage lasts longer than that. Large enough that
    # neither limit is reached: ~20 calls per second per app for ~12 s.
    per_app_rate, calls_per_limit, outage_seconds = 20.0, 400, 4.0
    cost = 100 + 2 * 100  # worst case = actual: 100 input and 100 output tokens at the price
    await clear_of_utc_midnight()
    car = await fleet.start("w0", private_pg.url, WARDEN_MIGRATE="true",
                            WARDEN_HEALTH_INTERVAL_SECONDS="0.2",
                            WARDEN_METRICS_LISTEN="127.0.0.1:0")
    admin = car.client
    open_key = await tenant(admin, app="open")
    await admin.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="closed", org_id="acme")), metadata=admin.auth)
    closed_key = await new_key(admin, "closed")
    await _price(admin)
    await _policy(admin, "open-rph", "open", types_pb2.FAILURE_MODE_FAIL_OPEN,
                  rate_limit=_per_hour(types_pb2.METRIC_REQUESTS, calls_per_limit))
    await _policy(admin, "closed-daily", "closed", types_pb2.FAILURE_MODE_FAIL_CLOSED,
                  budget=_daily(calls_per_limit * cost))
    keys = {"open": open_key, "closed": closed_key}
    outcomes: list[Outcome] = []
    serial = 0

    async def one(app: str) -> None:
        nonlocal serial
        serial += 1
        o = Outcome(app, f"{app}-{serial}", time.monotonic())
        outcomes.append(o)
        try:
            reply = await car.warden.Authorize(authorize_request(
                keys[app], o.request_id, input_tokens=100, max_output_tokens=100,
                min_output_tokens=100), timeout=CALL_SECONDS)
            o.decision, o.reason = reply.decision, reply.reason
            if reply.decision == ALLOW:
                await car.warden.RecordUsage(_usage(keys[app], o.request_id, 100, 100),
                                             timeout=CALL_SECONDS)
                o.acknowledged = True
        except grpc.aio.AioRpcError as exc:
            o.error = f"{exc.code().name}: {exc.details()}"
        o.ended = time.monotonic()

    running = set()
    stop_load = asyncio.Event()

    async def load() -> None:
        # Paced, not closed-loop: the rate stays the same while the database is away.
        tick = 1 / per_app_rate
        next_at = time.monotonic()
        while not stop_load.is_set():
            for app in ("open", "closed"):
                task = asyncio.create_task(one(app))
                running.add(task)
                task.add_done_callback(running.discard)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    loader = asyncio.create_task(load())
    try:
        await asyncio.sleep(4.0)  # warm-up: caches, prices, leases past their first slice
        assert not [o.error for o in outcomes if o.error]
        fail_open_before = await asyncio.to_thread(car.metric, "warden_fail_open_admits_total")
        stopping = time.monotonic()
        await asyncio.to_thread(private_pg.stop)
        down = time.monotonic()
        await asyncio.sleep(outage_seconds)
        restarting = time.monotonic()
        await asyncio.to_thread(private_pg.start)
        up = time.monotonic()
        # Recovery: a fresh call of the fail-closed app is allowed again.
        recovered, probes = None, 0
        while recovered is None and time.monotonic() - up < 10.0:
            probes += 1
            o = Outcome("probe", f"probe-{probes}", time.monotonic())
            reply = await car.warden.Authorize(authorize_request(
                closed_key, o.request_id, input_tokens=100, max_output_tokens=100,
                min_output_tokens=100), timeout=CALL_SECONDS)
            if reply.decision == ALLOW:
                recovered = time.monotonic() - up
                await car.warden.RecordUsage(_usage(closed_key, o.request_id, 100, 100),
                                             timeout=CALL_SECONDS)
                o.acknowledged = True
                outcomes.append(o)
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.0)  # load goes on after the recovery
    finally:
        stop_load.set()
        await loader
        await asyncio.gather(*running)
    fail_open_admits = await asyncio.to_thread(car.metric, "warden_fail_open_admits_total")

    during = [o for o in outcomes if down <= o.started and o.ended <= restarting]
    summary = {app: Counter(
        f"{warden_pb2.Decision.Name(o.decision)}/{types_pb2.Reason.Name(o.reason)}"
        if not o.error else "error" for o in during if o.app == app)
        for app in ("open", "closed")}
    print(f"\noutage: pg_ctl stop took {down - stopping:.2f} s, start {up - restarting:.2f} s; "
          f"calls while down: {summary}; fail-open admits "
          f"{fail_open_admits - fail_open_before:.0f}; closed app allowed again "
          f"{recovered if recovered is None else round(recovered, 2)} s after Postgres "
          f"accepted connections")
    errors = [(o.app, o.error) for o in outcomes if o.error]
    assert not errors, f"RPC errors: {Counter(errors)}\n{car.log_tail()}"
    assert len([o for o in during if o.app == "closed"]) >= 30, "too few calls during the outage"
    # Fail open: every call allowed, and some of them beyond what the sidecar held.
    assert all(o.decision == ALLOW for o in outcomes if o.app == "open")
    assert fail_open_admits > fail_open_before
    # Fail closed: allowed while the held allowance lasted, then denied as unavailable.
    closed = [o for o in outcomes if o.app == "closed"]
    assert {o.reason for o in closed if o.decision == DENY} == {
        types_pb2.REASON_QUOTA_UNAVAILABLE}
    assert any(o.decision == DENY for o in during if o.app == "closed")
    assert recovered is not None and recovered <= 5.0, (
        f"the fail-closed app was not allowed again within 5 s of the database coming back "
        f"(recovered={recovered})\n{car.log_tail()}")

    # Every acknowledged RecordUsage reaches Postgres once the database is back, once.
    acknowledged = {o.request_id for o in outcomes if o.acknowledged}
    ack_during = sum(o.acknowledged for o in during)
    assert ack_during, "no RecordUsage was acknowledged while the database was down"
    conn = await asyncpg.connect(private_pg.url)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            stored = {r["request_id"] for r in await conn.fetch(
                "SELECT request_id FROM usage WHERE request_id = any($1::text[])",
                list(acknowledged))}
            if stored == acknowledged or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        print(f"outage: {len(stored)}/{len(acknowledged)} acknowledged usage records in "
              f"Postgres {time.monotonic() - up:.1f} s after it came back")
        assert stored == acknowledged
        await fleet.stop_all_cleanly([car])
        rows = await conn.fetchval("SELECT count(*) FROM usage")
        print(f"outage: usage rows {rows}, acknowledged {len(acknowledged)} "
              f"({ack_during} while the database was down)")
        assert rows == len(acknowledged)
        # Fail-open admissions were owed and charged once the database was back: the
        # counter holds exactly the admitted calls (unspent allowance given back at SIGTERM).
        admitted_open = sum(o.app == "open" and o.decision == ALLOW for o in outcomes)
        granted_open = await conn.fetchval(
            "SELECT sum(granted) FROM quota_buckets WHERE policy_id = 'open-rph'")
        print(f"outage: open app admitted {admitted_open}, counted {granted_open}")
        assert granted_open == admitted_open
    finally:
        await conn.close()


@pytest.mark.parametrize("retry_on", ["other_sidecar", "same_sidecar_concurrently"])
async def test_a_retried_settlement_never_refunds_twice(db_url, db, fleet, retry_on):
    """A RecordUsage retried before the first settlement reached Postgres: through another
    sidecar (which reads the reservation back from the database), or twice at once through a
    sidecar that did not make it. Only the sidecar that made a reservation refunds it, so the
    limit holds whichever row is stored."""
    limit = 10_000
    a, b = await fleet.start_many(2, db_url)
    key = await tenant(a.client)
    await _policy(a.client, "chat-tpd", rate_limit=types_pb2.RateLimitConfig(
        metric=types_pb2.METRIC_TOTAL_TOKENS, window=types_pb2.WINDOW_DAY, limit=limit))
    # B takes a lease (limit / 8); A then reserves everything else (100 + 8,650).
    assert (await b.warden.Authorize(authorize_request(
        key, "b-small", input_tokens=1, max_output_tokens=1))).decision == ALLOW
    big = await a.warden.Authorize(authorize_request(
        key, "a-big", input_tokens=100, max_output_tokens=8650))
    assert big.decision == ALLOW and big.route.max_output_tokens == 8650
    await until(lambda: db.fetchval(  # A's decision reaches Postgres (A flushes every 0.25 s)
        "SELECT count(*) FROM requests WHERE request_id = 'a-big'"), within=10.0)
    same = _usage(key, "a-big", 100, 1, cost_micros=0)  # 8,649 unused
    if retry_on == "other_sidecar":
        first = await a.warden.RecordUsage(same)
        retry = await b.warden.RecordUsage(same)  # before A's usage record is flushed
    else:
        first, retry = await asyncio.gather(b.warden.RecordUsage(same),
                                            b.warden.RecordUsage(same))
        assert first.duplicate != retry.duplicate  # one object per request id on B
    await b.warden.RecordUsage(_usage(key, "b-small", 1, 1, cost_micros=0))
    used, i = 2 + 101, 0
    for car in (a, b):  # spend what each sidecar now thinks is left, settled in full
        while True:
            i += 1
            reply = await car.warden.Authorize(authorize_request(
                key, f"x{i}", input_tokens=50, max_output_tokens=50, min_output_tokens=50))
            if reply.decision != ALLOW:
                break
            await car.warden.RecordUsage(_usage(key, f"x{i}", 50, 50, cost_micros=0))
            used += 100
    await fleet.stop_all_cleanly([a, b])
    stored = await db.fetchval("SELECT sum(input_tokens + output_tokens) FROM usage")
    print(f"\n{retry_on}: settled {used} (usage table {stored}) of a {limit} limit")
    assert stored == used <= limit
    assert await db.fetchval("SELECT count(*) FROM usage WHERE request_id = 'a-big'") == 1
