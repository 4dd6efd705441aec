"""Database round trips per 1,000 decisions with several sidecars on one limit.

    python bench/round_trips.py [--sidecars 4] [--concurrency 32] [--seconds 10]
                                [--database-url URL | embedded] [--json PATH]

--sidecars sidecars on one fresh database: org `bench` with two apps, each with one app
request rate limit of 10,000,000 (never reached) and its own key: one with a MINUTE window
(0.5 s buckets: every lease ends within half a second), one with an HOUR window (30 s
buckets). After one pair per app on every sidecar (the caches loaded) and STATS_SETTLE_SECONDS
without load, for each window: --seconds of pairs (Authorize, then RecordUsage of the same
request with its reservation and a reported cost) at --concurrency spread over the sidecars,
then STATS_SETTLE_SECONDS without load, and a snapshot. Between snapshots the bench counts
round trips twice: as the sidecars count them (warden_db_round_trips_total, the data plane)
and as the database counts committed transactions (pg_stat_database.xact_commit, which also
counts health checks, the change feed's liveness query and the bench's own reads).

Exits 1 if a call failed or answered wrongly, if the sidecars' decision and usage counts
disagree with the client's, if a journal flush failed or a record was dropped, or if the
database does not hold every decision and usage row at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import harness
from harness import Bench, num, table
from load import Call, WrongAnswer, allowed, problems_of, run_load
from servers import CALL_TIMEOUT, BenchError, Server, fetchval, metric_sums, say

from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

ORG_ID = "bench"
MODEL, PROVIDER = "gpt-4o-mini", "openai"
SHARED_LIMIT = 10_000_000
USAGE = types_pb2.Usage(input_tokens=180, output_tokens=120, cached_input_tokens=40)
REPORTED_COST = 96  # given with the usage: no price needed, and settlement adjusts nothing
WINDOWS = (("MINUTE", types_pb2.WINDOW_MINUTE), ("HOUR", types_pb2.WINDOW_HOUR))
ROUND_TRIP_OPS = ("lease", "adjust", "flush", "expire", "settle")
# PostgreSQL 15+ backends publish their transaction counts at most once a second while busy
# and up to 10 s (PGSTAT_IDLE_INTERVAL) after they go idle: xact_commit is read only after
# this long without load. (A backend whose transactions touched no table, such as the change
# feed's, publishes them only when it next touches one or disconnects.)
STATS_SETTLE_SECONDS = 11.0
XACT_COMMIT = ("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")


@dataclass
class Snapshot:
    at: float
    xact_commit: int
    round_trips: Counter  # by op, summed over the sidecars
    decisions: float
    usage_records: float
    dropped: float  # journal records the database refused, and failed flushes


def snapshot(database_url: str, sidecars: list[Server]) -> Snapshot:
    texts = [s.scrape() for s in sidecars]

    def total(name: str, label: str = "") -> Counter:
        return sum((metric_sums(t, name, label) for t in texts), Counter())

    return Snapshot(time.perf_counter(), asyncio.run(fetchval(database_url, XACT_COMMIT)),
                    total("warden_db_round_trips_total", "op"),
                    sum(total("warden_decisions_total").values()),
                    sum(total("warden_usage_records_total").values()),
                    sum(total("warden_journal_dropped_total").values())
                    + sum(total("warden_journal_flush_failures_total").values()))


async def create_tenant(target: str, auth: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Org `bench` and, per window, an app with one request rate limit and a key."""
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


def pair_call(api_key: str, run_id: str) -> Call:
    """Authorize, then RecordUsage with the reported cost; one operation."""
    def request(n: int) -> warden_pb2.AuthorizeRequest:
        return warden_pb2.AuthorizeRequest(
            request_id=f"bench-{run_id}-{n}", api_key=api_key, model=MODEL, provider=PROVIDER,
            input_tokens=USAGE.input_tokens, max_output_tokens=256)

    async def call(stub: warden_pb2_grpc.WardenStub, n: int, spans: dict[str, float]) -> int:
        r = request(n)
        reply = allowed(await stub.Authorize(r, timeout=CALL_TIMEOUT))
        recorded = await stub.RecordUsage(warden_pb2.RecordUsageRequest(
            request_id=r.request_id, api_key=api_key, usage=USAGE,
            outcome=warden_pb2.OUTCOME_COMPLETED, reservation_id=reply.reservation_id,
            cost_micros=REPORTED_COST), timeout=CALL_TIMEOUT)
        if recorded.cost_micros != REPORTED_COST or recorded.duplicate:
            raise WrongAnswer("USAGE", f"cost_micros {recorded.cost_micros}, duplicate "
                                       f"{recorded.duplicate}")
        return reply.ByteSize() + recorded.ByteSize()

    return call


async def warm(sidecars: list[Server], calls: list[Call]) -> int:
    """One call of each kind on each sidecar, so that every cache is loaded before measuring."""
    done = 0
    for i, sidecar in enumerate(sidecars):
        async with grpc.aio.insecure_channel(sidecar.target) as channel:
            stub = warden_pb2_grpc.WardenStub(channel)
            for j, call in enumerate(calls):
                await call(stub, -1 - i * len(calls) - j, {})
                done += 1
    return done


def figures(before: Snapshot, after: Snapshot, seconds: float) -> dict:
    decisions = after.decisions - before.decisions
    trips = {op: int(after.round_trips[op] - before.round_trips[op]) for op in ROUND_TRIP_OPS}
    xacts = after.xact_commit - before.xact_commit

    def per_1000(n: float) -> float | None:
        return round(n * 1000 / decisions, 1) if decisions else None

    data_plane = sum(trips.values())
    return {"decisions": int(decisions), "round_trips": trips, "data_plane": data_plane,
            "data_plane_per_1000": per_1000(data_plane),
            "round_trips_per_s": round(data_plane / seconds, 1),
            "xact_commit": xacts, "xact_per_1000": per_1000(xacts)}


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say(f"starting {args.sidecars} sidecars ...")
    sidecars = bench.wardens(args.sidecars, database_url)
    run_id = os.urandom(6).hex()
    try:
        keys = asyncio.run(create_tenant(sidecars[0].target, bench.auth))
        calls: dict[str, Callable] = {name: pair_call(keys[name], f"{run_id}-{name}")
                                      for name, _ in WINDOWS}
        pairs = asyncio.run(warm(sidecars, list(calls.values())))
    except (grpc.aio.AioRpcError, WrongAnswer) as exc:
        raise BenchError(f"cannot set up or warm the sidecars: {exc}") from None
    say(f"{STATS_SETTLE_SECONDS:.0f} s without load ...")
    time.sleep(STATS_SETTLE_SECONDS)
    previous = snapshot(database_url, sidecars)
    results: dict = {}
    targets = [s.target for s in sidecars]
    for name, _ in WINDOWS:
        say(f"{name} window: {args.seconds:g} s of load, {STATS_SETTLE_SECONDS:.0f} s to "
            "settle ...")
        load = run_load(targets, calls[name], args.concurrency, 0.0, args.seconds)
        time.sleep(STATS_SETTLE_SECONDS)
        current = snapshot(database_url, sidecars)
        results[name] = {**figures(previous, current, args.seconds), "load": load}
        pairs += load["ops"]
        for p in problems_of(name, load):
            bench.problem(p)
        recorded = current.usage_records - previous.usage_records
        if not results[name]["decisions"] == recorded == load["ops"]:
            bench.problem(f"{name}: the sidecars counted {results[name]['decisions']} "
                          f"decisions and {recorded:g} usage records; the client "
                          f"{load['ops']} pairs")
        if failed := current.dropped - previous.dropped:
            bench.problem(f"{name}: {failed:g} journal flushes failed or records dropped "
                          "(warden_journal_flush_failures_total, warden_journal_dropped_total)")
        previous = current
    harness.check_stored(bench, database_url, {
        "allowed decisions": ("SELECT count(*) FROM requests WHERE decision = 'allow'", pairs),
        "usage rows": ("SELECT count(*) FROM usage", pairs)})
    # What the backends had not published yet, and the sidecars' shutdown (leases given back,
    # last flush): counted once every connection has closed.
    say("stopping the sidecars ...")
    before_stop = asyncio.run(fetchval(database_url, XACT_COMMIT))
    for s in sidecars:
        s.stop()
    results["xact_at_stop"] = asyncio.run(fetchval(database_url, XACT_COMMIT)) - before_stop
    return results


def report(context: dict, results: dict) -> None:
    rows = []
    for name, _ in WINDOWS:
        r = results[name]
        rows.append([name, r["decisions"], num(r["load"]["ops_per_s"], 1),
                     *(r["round_trips"][op] for op in ROUND_TRIP_OPS),
                     r["round_trips_per_s"], f"**{num(r['data_plane_per_1000'], 1)}**",
                     r["xact_commit"], f"**{num(r['xact_per_1000'], 1)}**",
                     f"{r['xact_commit'] / max(r['data_plane'], 1):.2f}"])
    print(table(["window", "decisions:", "decisions/s:", *(f"{op}:" for op in ROUND_TRIP_OPS),
                 "data plane /s:", "data plane per 1,000:", "xact_commit:", "xact per 1,000:",
                 "xact per data-plane call:"], rows,
                f"**Round trips per 1,000 decisions**, {context['sidecars']} sidecars, one app "
                f"request rate limit of {SHARED_LIMIT:,} per window, pairs at concurrency "
                f"{context['concurrency']} spread over the sidecars, {context['seconds_s']:g} s "
                f"of load + {STATS_SETTLE_SECONDS:.0f} s settling"))
    print(f"\nxact_commit also counts each sidecar's health check and the change feed's "
          f"liveness query, and the bench's reads. Published only when the sidecars "
          f"disconnected (their shutdown included): {results['xact_at_stop']}. Pair latency "
          "through the sidecars: " + "; ".join(
              f"{name} p50 {num(results[name]['load']['p50_ms'], 2)} ms, p99 "
              f"{num(results[name]['load']['p99_ms'], 2)} ms" for name, _ in WINDOWS))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--sidecars", type=int, default=4, help="sidecars on the one database")
    p.add_argument("--concurrency", type=int, default=32, help="pairs in flight, all sidecars")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of load per window")
    args = p.parse_args()
    harness.positive(p, args, "sidecars", "concurrency")
    harness.positive(p, args, "seconds", at_least=0.1)
    if args.concurrency < args.sidecars:
        p.error("--concurrency must be at least --sidecars")
    harness.main(p, work, report, lambda a: {
        "sidecars": a.sidecars, "concurrency": a.concurrency, "seconds_s": a.seconds}, args)


if __name__ == "__main__":
    main()
