"""Quota leases under load: what Authorize + RecordUsage cost against a no-op gRPC server, and
how many database round trips the data plane makes per 1,000 decisions with several sidecars
on one limit.

    python bench/quotas.py [--concurrency 32] [--seconds 10] [--sidecars 4]
                           [--database-url URL | --database-url embedded]

Part 1, one sidecar: starts bench/noop_server.py and a real `warden serve`, creates the tenant
of bench/authorize.py (org model access with an alias, team routing, app and user request rate
limits) plus an app TOTAL_TOKENS rate limit, an org monthly budget and a price for the routed
model, all too large to deny. It then drives, at --concurrency, in turn:
- Authorize alone, against the no-op and against Warden;
- pairs: Authorize, then RecordUsage of the same request_id (one operation). The no-op server
  implements Authorize only, so its pair is two Authorize calls: it pays two RPCs too.

Part 2, --sidecars sidecars on one database: two apps, each with one app request rate limit of
10,000,000 (one a MINUTE window, whose 0.5 s buckets make every lease end within half a
second; one an HOUR window, 30 s buckets). Pairs go through all sidecars for --seconds per
window, and the bench reports round trips per 1,000 decisions twice: as the sidecars count them
(warden_db_round_trips_total, the data plane) and as the database counts committed transactions
(pg_stat_database.xact_commit, which also counts health checks, the change feed's liveness
query and the bench's own reads).

Prints markdown tables. Exits 1 if any call failed or answered wrongly (a DENY, a cost that is
not the price's, a duplicate), if the sidecars' counts disagree with the client's, or if the
database does not hold every decision and usage record at the end. Every process it starts is
stopped before it exits, and the databases it creates are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc

# Beside this file, which is on sys.path when run as `python bench/quotas.py`.
from authorize import (
    CALL_TIMEOUT,
    HERE,
    HOST,
    BenchError,
    admin_metadata,
    create_tenant,
    free_ports,
    fresh_database,
    machine,
    percentile_ms,
    request_factory,
    running,
    scrape_metrics,
    secrets_env,
    start_server,
    unwind_on_signals,
    wait_healthy,
    warden_command,
)
from noop_server import APP_ID, MODEL, ORG_ID, PROVIDER
from propagation import embedded_postgres

from warden.engine.pricing import Price, cost_micros
from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

T = TypeVar("T")

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKEN_LIMIT_ID = "bench-app-tokens"
TOKEN_LIMIT = 10**12  # total tokens a minute: the largest limit Warden accepts
BUDGET_ID = "bench-org-budget"
BUDGET_MICROS = 10**15  # a month
AUDIT_POLICY_ID = "bench-decision-log-off"
# Empty provider: the price applies to the route and to its fallback alike.
PRICE = admin_pb2.ModelPrice(provider="", model=MODEL, input_micros_per_million=150_000,
                             output_micros_per_million=600_000,
                             cached_input_micros_per_million=75_000)
USAGE = types_pb2.Usage(input_tokens=180, output_tokens=120, cached_input_tokens=40)
EXPECTED_COST = cost_micros(Price(PRICE.input_micros_per_million,
                                  PRICE.output_micros_per_million,
                                  PRICE.cached_input_micros_per_million),
                            USAGE.input_tokens, USAGE.output_tokens, USAGE.cached_input_tokens)
# Part 2: one request rate limit per app, never reached.
SHARED_LIMIT = 10_000_000
WINDOWS = (("MINUTE", types_pb2.WINDOW_MINUTE), ("HOUR", types_pb2.WINDOW_HOUR))
ROUND_TRIP_OPS = ("lease", "adjust", "flush", "expire", "settle")
# PostgreSQL 15+ backends publish their transaction counts at most once a second while busy
# and up to 10 s (PGSTAT_IDLE_INTERVAL) after they go idle: xact_commit is read only after
# this long without load. (A backend whose transactions touched no table, such as the change
# feed's, publishes them only when it next touches one or disconnects.)
STATS_SETTLE_SECONDS = 11.0
FLUSH_WAIT_SECONDS = 10.0


class WrongAnswer(Exception):
    """A call succeeded but answered something the bench did not expect."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


# --- load ------------------------------------------------------------------------------------

Call = Callable[[warden_pb2_grpc.WardenStub, int], Awaitable[int]]


@dataclass
class Load:
    """Shared by the workers of one measurement. Errors count whenever they happen, warm-up
    included: the bench checks every answer, not only the measured ones."""

    measure_start: float
    stop_at: float
    ops: int = 0  # operations that succeeded, warm-up included
    completed: int = 0  # ... completed within the measured period
    latencies: list[float] = field(default_factory=list)  # ... started within it
    errors: Counter = field(default_factory=Counter)
    first_error: str = ""
    response_bytes: int = 0


async def worker(stub: warden_pb2_grpc.WardenStub, call: Call, load: Load, n: int,
                 step: int) -> None:
    while (start := time.perf_counter()) < load.stop_at:
        try:
            size = await call(stub, n)
        except grpc.aio.AioRpcError as exc:
            kind, detail = exc.code().name, exc.details()
        except WrongAnswer as exc:
            kind, detail = exc.kind, str(exc)
        else:
            end = time.perf_counter()
            load.ops += 1
            load.response_bytes = load.response_bytes or size
            load.completed += load.measure_start <= end <= load.stop_at
            if start >= load.measure_start:
                load.latencies.append(end - start)
            n += step
            continue
        n += step
        load.errors[kind] += 1
        load.first_error = load.first_error or f"{kind}: {detail}"


async def drive(targets: list[str], call: Call, concurrency: int, warmup: float,
                seconds: float) -> dict:
    """`concurrency` workers spread over one channel per target, for warmup + seconds."""
    channels = [grpc.aio.insecure_channel(t, options=[("grpc.use_local_subchannel_pool", 1)])
                for t in targets]
    try:
        stubs = [warden_pb2_grpc.WardenStub(c) for c in channels]
        now, cpu = time.perf_counter(), time.process_time()
        load = Load(now + warmup, now + warmup + seconds)
        await asyncio.gather(*(worker(stubs[i % len(stubs)], call, load, i, concurrency)
                               for i in range(concurrency)))
        # Near 100% of one core means the generator, not the server, set the pace.
        client_cpu = (time.process_time() - cpu) / (time.perf_counter() - now)
    finally:
        for channel in channels:
            await channel.close()
    ok = sorted(load.latencies)
    return {"ops": load.ops, "errors": sum(load.errors.values()),
            "error_codes": dict(load.errors), "first_error": load.first_error,
            "ops_per_s": round(load.completed / seconds, 1),
            "p50_ms": percentile_ms(ok, 0.50), "p99_ms": percentile_ms(ok, 0.99),
            "response_bytes": load.response_bytes, "client_cpu_pct": round(client_cpu * 100)}


def allowed(reply: warden_pb2.AuthorizeResponse) -> warden_pb2.AuthorizeResponse:
    """The reply, if it allows the call: no limit of the bench's is meant to deny."""
    if reply.decision != warden_pb2.DECISION_ALLOW:
        refused = "; ".join(f"{r.policy_id} {types_pb2.Reason.Name(r.reason)} {r.message!r}"
                            for r in reply.results if not r.allowed)
        remaining = ", ".join(f"{limit.policy_id} {limit.remaining}" for limit in reply.limits)
        raise WrongAnswer("DENY", f"{warden_pb2.Decision.Name(reply.decision)} "
                                  f"{types_pb2.Reason.Name(reply.reason)} by {refused} "
                                  f"(remaining: {remaining})")
    return reply


def authorize_call(make_request: Callable[[int], warden_pb2.AuthorizeRequest]) -> Call:
    async def call(stub: warden_pb2_grpc.WardenStub, n: int) -> int:
        return allowed(await stub.Authorize(make_request(n), timeout=CALL_TIMEOUT)).ByteSize()

    return call


def noop_pair_call(make_request: Callable[[int], warden_pb2.AuthorizeRequest]) -> Call:
    """The no-op server answers Authorize only: its pair is two Authorize calls."""
    async def call(stub: warden_pb2_grpc.WardenStub, n: int) -> int:
        request = make_request(n)
        first = allowed(await stub.Authorize(request, timeout=CALL_TIMEOUT))
        second = allowed(await stub.Authorize(request, timeout=CALL_TIMEOUT))
        return first.ByteSize() + second.ByteSize()

    return call


def pair_call(make_request: Callable[[int], warden_pb2.AuthorizeRequest], api_key: str,
              reported_cost: int | None = None) -> Call:
    """Authorize, then RecordUsage of the same request_id with its reservation_id."""
    expected = EXPECTED_COST if reported_cost is None else reported_cost

    async def call(stub: warden_pb2_grpc.WardenStub, n: int) -> int:
        request = make_request(n)
        reply = allowed(await stub.Authorize(request, timeout=CALL_TIMEOUT))
        usage = warden_pb2.RecordUsageRequest(
            request_id=request.request_id, api_key=api_key, usage=USAGE,
            outcome=warden_pb2.OUTCOME_COMPLETED, reservation_id=reply.reservation_id,
            cost_micros=reported_cost)
        recorded = await stub.RecordUsage(usage, timeout=CALL_TIMEOUT)
        if recorded.cost_micros != expected or recorded.duplicate:
            raise WrongAnswer("USAGE", f"cost_micros {recorded.cost_micros} (expected "
                                       f"{expected}), duplicate {recorded.duplicate}")
        return reply.ByteSize() + recorded.ByteSize()

    return call


# --- metrics and the database ----------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$", re.MULTILINE)


def metric_sums(text: str, name: str, label: str) -> Counter:
    """A counter's samples summed by one label's value."""
    sums: Counter = Counter()
    for sample, labels, value in _SAMPLE.findall(text):
        if sample == name:
            sums[dict(re.findall(r'(\w+)="([^"]*)"', labels)).get(label, "")] += float(value)
    return sums


@dataclass
class Snapshot:
    at: float
    xact_commit: int
    round_trips: Counter  # by op, summed over the sidecars
    decisions: Counter  # by decision
    usage_records: float
    dropped: float  # journal records the database refused, and failed flushes


async def xact_commit(database_url: str) -> int:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await conn.fetchval("SELECT xact_commit FROM pg_stat_database"
                                   " WHERE datname = current_database()")
    finally:
        await conn.close()


def snapshot(database_url: str, metrics_targets: list[str]) -> Snapshot:
    texts = [scrape_metrics(t) for t in metrics_targets]

    def total(name: str, label: str) -> Counter:
        return sum((metric_sums(t, name, label) for t in texts), Counter())

    return Snapshot(time.perf_counter(), asyncio.run(xact_commit(database_url)),
                    total("warden_db_round_trips_total", "op"),
                    total("warden_decisions_total", "decision"),
                    sum(total("warden_usage_records_total", "duplicate").values()),
                    sum(total("warden_journal_dropped_total", "kind").values())
                    + sum(total("warden_journal_flush_failures_total", "").values()))


async def stored_rows(database_url: str, want_requests: int, want_usage: int
                      ) -> tuple[int, int]:
    """Allowed decisions and usage rows in the database, once they reach the wanted counts
    (the journals flush every 0.25 s) or after FLUSH_WAIT_SECONDS."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        deadline = time.monotonic() + FLUSH_WAIT_SECONDS
        while True:
            got = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM requests WHERE decision = 'allow') AS requests,"
                " (SELECT count(*) FROM usage) AS usage")
            if (got["requests"], got["usage"]) == (want_requests, want_usage) \
                    or time.monotonic() > deadline:
                return got["requests"], got["usage"]
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


# --- part 1: one sidecar against the no-op server ---------------------------------------------

async def add_quotas(target: str, admin_token: str) -> None:
    """On top of bench/authorize.py's tenant: a price for the routed model, an app token rate
    limit and an org budget, none of which denies during a run."""
    auth = admin_metadata(admin_token)
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.SetModelPrice(admin_pb2.SetModelPriceRequest(price=PRICE), metadata=auth)
        for policy in (
            types_pb2.Policy(
                id=TOKEN_LIMIT_ID, name="never denies during a bench",
                scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id=APP_ID),
                rate_limit=types_pb2.RateLimitConfig(metric=types_pb2.METRIC_TOTAL_TOKENS,
                                                     window=types_pb2.WINDOW_MINUTE,
                                                     limit=TOKEN_LIMIT)),
            types_pb2.Policy(
                id=BUDGET_ID, name="never denies during a bench",
                scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id=ORG_ID),
                budget=types_pb2.BudgetConfig(period=types_pb2.PERIOD_MONTH,
                                              limit_micros=BUDGET_MICROS)),
        ):
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=policy),
                                     metadata=auth)


async def decision_log(target: str, admin_token: str, allow_rate: float = 1.0,
                       deny_rate: float = 1.0) -> None:
    """Sample the decision log's explanations at these rates: both 1 is the default (no
    audit policy: everything is explained), otherwise an org audit setting."""
    auth = admin_metadata(admin_token)
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        try:
            await admin.DeletePolicy(admin_pb2.DeletePolicyRequest(id=AUDIT_POLICY_ID),
                                     metadata=auth)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if (allow_rate, deny_rate) != (1.0, 1.0):
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
                id=AUDIT_POLICY_ID, scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG,
                                                          id=ORG_ID),
                audit=types_pb2.AuditConfig(allow_sample_rate=allow_rate,
                                            deny_sample_rate=deny_rate))),
                metadata=auth)


async def stored_explanations(database_url: str) -> int:
    """Explanations in Postgres (stored in the flush transaction of their decisions)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'authorize.decision'")
    finally:
        await conn.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes (all threads) so far; 0 for one that is gone."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


async def check_policy_set(target: str, request: warden_pb2.AuthorizeRequest) -> list[str]:
    """The policies Warden evaluated for one call: every quota of the set must be among them."""
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await warden_pb2_grpc.WardenStub(channel).Authorize(request,
                                                                     timeout=CALL_TIMEOUT)
    allowed(reply)
    evaluated = [r.policy_id for r in reply.results]
    if missing := {TOKEN_LIMIT_ID, BUDGET_ID} - set(evaluated):
        raise BenchError(f"Warden did not evaluate {sorted(missing)}; results: {evaluated}")
    return evaluated


def one_sidecar(args: argparse.Namespace, base_url: str, tmp: Path, problems: list[str]
                ) -> dict:
    noop_port, warden_port, metrics_port = free_ports(3)
    noop_target, warden_target = f"{HOST}:{noop_port}", f"{HOST}:{warden_port}"
    admin_token, env = secrets_env()
    tmp.mkdir()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(base_url))
        print("part 1: starting warden and the no-op server ...", file=sys.stderr)
        servers = {
            "warden": start_server(
                stack, "warden", warden_command(warden_target, tmp / "warden", database_url,
                                                f"{HOST}:{metrics_port}"),
                warden_target, tmp / "warden.log", env),
            "noop": start_server(
                stack, "noop server",
                [sys.executable, str(HERE / "noop_server.py"), "--listen", noop_target],
                noop_target, tmp / "noop.log"),
        }
        try:
            api_key = asyncio.run(create_tenant(warden_target, admin_token))
            asyncio.run(add_quotas(warden_target, admin_token))
            make_request = request_factory(api_key)
            check = make_request(0)
            check.request_id += "-check"
            evaluated = asyncio.run(check_policy_set(warden_target, check))
        except grpc.aio.AioRpcError as exc:
            raise BenchError(f"cannot set up the tenant: {exc.code().name}: {exc.details()}"
                             ) from None
        # A factory per run: request ids must not repeat across runs on Warden. Each mode runs
        # against the no-op, Warden (every decision explained in the decision log, the
        # default), and Warden with the org's audit setting sampling no explanation.
        runs = {
            "authorize": {server: authorize_call(request_factory(api_key))
                          for server in ("noop", "warden", "unlogged")},
            "pair": {"noop": noop_pair_call(request_factory(api_key)),
                     **{server: pair_call(request_factory(api_key), api_key)
                        for server in ("warden", "unlogged")}},
        }
        targets = {"noop": noop_target, "warden": warden_target, "unlogged": warden_target}
        results: dict = {"policies": evaluated}
        for mode, calls in runs.items():
            for server, target in targets.items():
                print(f"part 1: {mode} against {server} ...", file=sys.stderr)
                asyncio.run(decision_log(warden_target, admin_token,
                                         *((0.0, 0.0) if server == "unlogged" else ())))
                proc = servers["noop" if server == "noop" else "warden"]
                cpu = cpu_seconds([proc.pid])
                results[f"{mode}/{server}"] = r = asyncio.run(
                    drive([target], calls[server], args.concurrency, args.warmup,
                          args.seconds))
                r["server_cpu_ms"] = round(
                    (cpu_seconds([proc.pid]) - cpu) * 1000 / max(r["ops"], 1), 3)
        authorized = 1 + sum(results[f"{mode}/{server}"]["ops"] for mode in runs
                             for server in ("warden", "unlogged"))
        recorded = sum(results[f"pair/{server}"]["ops"] for server in ("warden", "unlogged"))
        stored = asyncio.run(stored_rows(database_url, authorized, recorded))
        if stored != (authorized, recorded):
            problems.append(f"part 1: the database holds {stored[0]} allowed decisions and "
                            f"{stored[1]} usage rows; Warden answered {authorized} and "
                            f"{recorded}")
        explained = asyncio.run(stored_explanations(database_url))
        logged = 1 + results["authorize/warden"]["ops"] + results["pair/warden"]["ops"]
        if explained != logged:
            problems.append(f"part 1: {explained} decisions explained in audit_events; the "
                            f"runs with the decision log on made {logged}")
        for key, r in results.items():
            if key != "policies" and r["errors"]:
                problems.append(f"part 1 {key}: {r['errors']} errors {r['error_codes']}, "
                                f"first: {r['first_error']}")
        return results


# --- part 2: round trips with several sidecars on one limit -----------------------------------

async def create_shared_tenant(target: str, admin_token: str) -> dict[str, str]:
    """Org `bench` and, per window, an app with one request rate limit and a key."""
    auth = admin_metadata(admin_token)
    keys = {}
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id=ORG_ID)),
                              metadata=auth)
        for name, window in WINDOWS:
            app_id = f"bench-{name.lower()}"
            await admin.CreateApp(admin_pb2.CreateAppRequest(
                app=admin_pb2.App(id=app_id, org_id=ORG_ID)), metadata=auth)
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
                id=f"{app_id}-requests", name="shared by every sidecar",
                scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id=app_id),
                rate_limit=types_pb2.RateLimitConfig(metric=types_pb2.METRIC_REQUESTS,
                                                     window=window, limit=SHARED_LIMIT))),
                metadata=auth)
            reply = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id=app_id),
                                             metadata=auth)
            keys[name] = reply.plaintext
    return keys


def shared_request_factory(api_key: str, run_id: str
                           ) -> Callable[[int], warden_pb2.AuthorizeRequest]:
    def make(n: int) -> warden_pb2.AuthorizeRequest:
        return warden_pb2.AuthorizeRequest(
            request_id=f"bench-{run_id}-{n}", api_key=api_key, model=MODEL, provider=PROVIDER,
            input_tokens=USAGE.input_tokens, max_output_tokens=256)

    return make


async def warm(targets: list[str], calls: list[Call]) -> int:
    """One call of each kind on each sidecar, so that every cache is loaded before measuring."""
    done = 0
    for i, target in enumerate(targets):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = warden_pb2_grpc.WardenStub(channel)
            for j, call in enumerate(calls):
                await call(stub, -1 - i * len(calls) - j)
                done += 1
    return done


def start_sidecars(stack: contextlib.ExitStack, count: int, database_url: str, tmp: Path,
                   env: dict[str, str]) -> tuple[list[str], list[str]]:
    ports = free_ports(2 * count)
    targets = [f"{HOST}:{p}" for p in ports[:count]]
    metrics = [f"{HOST}:{p}" for p in ports[count:]]

    def launch(i: int):
        log = tmp / f"sidecar{i}.log"
        cmd = warden_command(targets[i], tmp / f"sidecar{i}", database_url, metrics[i])
        return stack.enter_context(running(cmd, log, env)), log

    async def healthy(started: list) -> None:
        await asyncio.gather(*(wait_healthy(f"sidecar {i}", targets[i], proc, log)
                               for i, (proc, log) in started))

    # The first applies the migrations and records the key pepper; the others then start
    # together.
    asyncio.run(healthy([(0, launch(0))]))
    asyncio.run(healthy([(i, launch(i)) for i in range(1, count)]))
    return targets, metrics


def round_trip_figures(before: Snapshot, after: Snapshot) -> dict:
    decisions = sum((after.decisions - before.decisions).values())
    trips = {op: after.round_trips[op] - before.round_trips[op] for op in ROUND_TRIP_OPS}
    span = after.at - before.at
    xacts = after.xact_commit - before.xact_commit
    per_k = (lambda n: round(n * 1000 / decisions, 1)) if decisions else (lambda n: None)
    return {"decisions": int(decisions), "span_s": round(span, 1),
            "round_trips": {op: int(n) for op, n in trips.items()},
            "data_plane": int(sum(trips.values())),
            "data_plane_per_1000": per_k(sum(trips.values())),
            "xact_commit": xacts, "xact_per_1000": per_k(xacts)}


def shared_limit(args: argparse.Namespace, base_url: str, tmp: Path, problems: list[str]
                 ) -> dict:
    admin_token, env = secrets_env()
    run_id = os.urandom(6).hex()
    tmp.mkdir()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(base_url))
        print(f"part 2: starting {args.sidecars} sidecars ...", file=sys.stderr)
        sidecars = stack.enter_context(contextlib.ExitStack())
        targets, metrics = start_sidecars(sidecars, args.sidecars, database_url, tmp, env)
        try:
            keys = asyncio.run(create_shared_tenant(targets[0], admin_token))
            # Reported cost: no price is needed, and settlement has nothing to adjust.
            calls = {name: pair_call(shared_request_factory(keys[name], f"{run_id}-{name}"),
                                     keys[name], reported_cost=EXPECTED_COST)
                     for name, _ in WINDOWS}
            setup_pairs = asyncio.run(warm(targets, list(calls.values())))
        except (grpc.aio.AioRpcError, WrongAnswer) as exc:
            raise BenchError(f"part 2: cannot set up or warm the sidecars: {exc}") from None
        print(f"part 2: {STATS_SETTLE_SECONDS:.0f} s without load ...", file=sys.stderr)
        time.sleep(STATS_SETTLE_SECONDS)
        previous = snapshot(database_url, metrics)
        results: dict = {}
        pairs = setup_pairs
        for name, _ in WINDOWS:
            print(f"part 2: {name} window, {args.seconds:g} s of load and "
                  f"{STATS_SETTLE_SECONDS:.0f} s to settle ...", file=sys.stderr)
            load = asyncio.run(drive(targets, calls[name], args.concurrency, 0.0, args.seconds))
            time.sleep(STATS_SETTLE_SECONDS)
            current = snapshot(database_url, metrics)
            figures = round_trip_figures(previous, current)
            figures.update(load=load, round_trips_per_s=round(
                figures["data_plane"] / args.seconds, 1))
            results[name] = figures
            pairs += load["ops"]
            if load["errors"]:
                problems.append(f"part 2 {name}: {load['errors']} errors "
                                f"{load['error_codes']}, first: {load['first_error']}")
            recorded = current.usage_records - previous.usage_records
            if not figures["decisions"] == recorded == load["ops"]:
                problems.append(f"part 2 {name}: the sidecars counted {figures['decisions']} "
                                f"decisions and {recorded:g} usage records; the client "
                                f"{load['ops']} pairs")
            if failed := current.dropped - previous.dropped:
                problems.append(f"part 2 {name}: {failed:g} journal flushes failed or records "
                                "dropped (see warden_journal_flush_failures_total)")
            previous = current
        stored = asyncio.run(stored_rows(database_url, pairs, pairs))
        if stored != (pairs, pairs):
            problems.append(f"part 2: the database holds {stored[0]} allowed decisions and "
                            f"{stored[1]} usage rows; the sidecars answered {pairs} pairs")
        # What the backends had not published yet, and the sidecars' shutdown (leases given
        # back, last flush): counted once every connection has closed.
        print("part 2: stopping the sidecars ...", file=sys.stderr)
        before_stop = asyncio.run(xact_commit(database_url))
        sidecars.close()
        results["xact_at_stop"] = asyncio.run(xact_commit(database_url)) - before_stop
        return results


# --- report ----------------------------------------------------------------------------------

def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or b is None else f"{b / a:.2f}x"


def report(context: dict, part1: dict, part2: dict) -> None:
    print("  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"\nWarden's policies on each call: {', '.join(part1['policies'])} "
          f"(price {PRICE.input_micros_per_million}/{PRICE.output_micros_per_million}/"
          f"{PRICE.cached_input_micros_per_million} micros per million input/output/cached "
          f"for {MODEL}; usage {USAGE.input_tokens}/{USAGE.output_tokens}/"
          f"{USAGE.cached_input_tokens} tokens = {EXPECTED_COST} micros)")
    for mode, title in (("pair", "Authorize + RecordUsage (one op = the pair; the no-op's "
                                 "pair is two Authorize calls)"),
                        ("authorize", "Authorize alone")):
        noop, warden = part1[f"{mode}/noop"], part1[f"{mode}/warden"]
        unlogged = part1[f"{mode}/unlogged"]
        print(f"\n**{title}**, concurrency {context['concurrency']}\n")
        print("| server | ops | errors | ops/s | p50 ms | p99 ms | resp B | client CPU | "
              "server CPU ms/op |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, r in (("no-op", noop), ("Warden", warden),
                        ("Warden, decision log sampled out", unlogged)):
            print(f"| {name} | {r['ops']} | {r['errors']} | {r['ops_per_s']:.1f} | "
                  f"{ms(r['p50_ms'])} | {ms(r['p99_ms'])} | {r['response_bytes']} | "
                  f"{r['client_cpu_pct']}% | {r['server_cpu_ms']} |")
        print(f"| Warden/no-op | | | {ratio(noop['ops_per_s'], warden['ops_per_s'])} | "
              f"{ratio(noop['p50_ms'], warden['p50_ms'])} | "
              f"{ratio(noop['p99_ms'], warden['p99_ms'])} | | | "
              f"{ratio(noop['server_cpu_ms'], warden['server_cpu_ms'])} |")
        print(f"| logged/sampled out | | | "
              f"{ratio(unlogged['ops_per_s'], warden['ops_per_s'])} | "
              f"{ratio(unlogged['p50_ms'], warden['p50_ms'])} | "
              f"{ratio(unlogged['p99_ms'], warden['p99_ms'])} | | | "
              f"{ratio(unlogged['server_cpu_ms'], warden['server_cpu_ms'])} |")
    print(f"\n**Round trips per 1,000 decisions**, {context['sidecars']} sidecars, one app "
          f"request rate limit of {SHARED_LIMIT:,}, pairs at concurrency "
          f"{context['concurrency']} spread over the sidecars, {context['seconds_s']:g} s of "
          f"load + {STATS_SETTLE_SECONDS:.0f} s settling\n")
    print("| window | decisions | decisions/s | " + " | ".join(ROUND_TRIP_OPS)
          + " | data plane /s | **data plane per 1,000** | xact_commit | "
            "**xact per 1,000** | xact per data-plane call |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in ROUND_TRIP_OPS)
          + " | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in WINDOWS:
        r = part2[name]
        print(f"| {name} | {r['decisions']} | {r['load']['ops_per_s']:.1f} | "
              + " | ".join(str(r["round_trips"][op]) for op in ROUND_TRIP_OPS)
              + f" | {r['round_trips_per_s']} | **{r['data_plane_per_1000']}** | "
                f"{r['xact_commit']} | **{r['xact_per_1000']}** | "
                f"{r['xact_commit'] / max(r['data_plane'], 1):.2f} |")
    print(f"\nxact_commit also counts each sidecar's health check and change-feed liveness "
          f"query (every 2 s) and the bench's reads. Published only when the sidecars "
          f"disconnected (their shutdown included): {part2['xact_at_stop']}. Pair latency "
          f"through the sidecars: "
          + "; ".join(f"{name} p50 {ms(part2[name]['load']['p50_ms'])} ms, p99 "
                      f"{ms(part2[name]['load']['p99_ms'])} ms" for name, _ in WINDOWS))


# --- main ------------------------------------------------------------------------------------

@contextlib.contextmanager
def database_server(url: str, tmp: Path) -> Iterator[str]:
    """The server the bench creates its databases on: the one given, or a private embedded
    Postgres (the `pgserver` package Warden embeds) the bench starts and stops."""
    if url != "embedded":
        yield url
        return
    print("starting embedded Postgres ...", file=sys.stderr)
    with embedded_postgres(tmp / "pg") as embedded_url:
        yield embedded_url


def on_database_server(url: str, work: Callable[[str, Path], T]) -> T:
    """work(base_url, tmp) in a temporary directory, on the server --database-url names
    (database_server); a BenchError or ^C ends the bench with its message."""
    try:
        with (tempfile.TemporaryDirectory(prefix="warden-bench-",
                                          ignore_cleanup_errors=True) as tmp,
              database_server(url, Path(tmp)) as base_url):
            return work(base_url, Path(tmp))
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; servers stopped")


def database_kind(url: str) -> str:
    """How a bench's context names the server --database-url gave."""
    return "embedded" if url == "embedded" else "external"


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """--database-url, as database_server() reads it."""
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="Postgres server on which the bench creates (and drops) its fresh "
                             "databases; 'embedded' starts a private one "
                             f"(default {DEFAULT_DATABASE_URL})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds measured per server and mode (part 1) and per window "
                             "(part 2)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds run but not measured before each part 1 measurement")
    parser.add_argument("--sidecars", type=int, default=4, help="sidecars in part 2")
    add_database_url(parser)
    args = parser.parse_args(argv)
    if min(args.concurrency, args.sidecars) < 1 or args.warmup < 0 or \
            not 0 < args.seconds <= 300:
        parser.error("--concurrency and --sidecars must be >= 1, --warmup >= 0, "
                     "--seconds in (0, 300]")
    if args.concurrency < args.sidecars:
        parser.error("--concurrency must be at least --sidecars")
    return args


def main() -> None:
    args = parse_args()
    unwind_on_signals()
    context = {
        **machine(),
        "database": database_kind(args.database_url),
        "concurrency": args.concurrency, "warmup_s": args.warmup, "seconds_s": args.seconds,
        "sidecars": args.sidecars,
    }
    problems: list[str] = []
    part1, part2 = on_database_server(args.database_url, lambda base_url, tmp: (
        one_sidecar(args, base_url, tmp / "part1", problems),
        shared_limit(args, base_url, tmp / "part2", problems)))
    report(context, part1, part2)
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
