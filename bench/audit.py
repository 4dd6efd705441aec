"""Durable audit events through StreamAudit: events per second acknowledged (durable in the
sidecar's fsync'd journal) and stored in Postgres, and the acknowledgement latency, against a
no-op gRPC server's StreamAudit in the same run.

    python bench/audit.py [--streams 8] [--messages 10] [--events 100] [--seconds 10]
                          [--warmup 2] [--database-url URL | embedded] [--json PATH]

Starts bench/noop_server.py and a real `warden serve` on a fresh database, creates org `bench`,
app `bench-app` and an API key through the Admin API, then drives each server in turn, no-op
first: --streams StreamAudit calls at a time, each of --messages messages of --events events
(an `llm.call` with request, user, model, provider, time and seven attributes; unique ids).
StreamAudit acknowledges once per stream, at its end, after every message of it is fsync'd in
the journal: a message's acknowledgement latency runs from just before it is written to the
stream's answer.

Against Warden the bench also counts audit_events at the start and end of the measured period,
and after the load waits until Warden's journal is empty (every record applied to Postgres):
"stored/s" is every acknowledged event, warm-up included, over the time from the first send to
that moment. It then checks that audit_events holds every acknowledged event id exactly once,
as sent, and no event the bench did not send, and that Warden's metrics count no dropped
record and no failed flush. Streams refused by a full journal (RESOURCE_EXHAUSTED, after
WARDEN_JOURNAL_MAX_BYTES) are counted, not failures: that is the designed pushback.

Prints markdown tables. Exits 1 if a stream failed or any check fails. Every process it starts
is stopped before it exits, and the database it creates is dropped. WARDEN_* variables in the
environment reach the Warden process (e.g. WARDEN_JOURNAL_FLUSH_SECONDS=0.25) and are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import grpc
import harness
from google.protobuf import struct_pb2, timestamp_pb2
from harness import Bench, num, ratio
from load import percentile_ms
from servers import BenchError, cpu_seconds, machine_busy, metric_sums, say, scrape

from warden.v1 import admin_pb2, admin_pb2_grpc, warden_pb2, warden_pb2_grpc

ORG_ID, APP_ID, USER_ID = "bench", "bench-app", "bench-user"
MODEL, PROVIDER = "gpt-4o-mini", "openai"
MAX_EVENTS_PER_MESSAGE = 1000  # the server's limit (api/warden_service.py MAX_AUDIT_BATCH)
STREAM_TIMEOUT = 60.0
# After the load the journal's backlog must shrink at least this often, or the bench gives up.
STORE_STALL_SECONDS = 30.0
POLL_SECONDS = 0.05
REFUSED_PAUSE = 0.1  # before a worker opens a new stream after RESOURCE_EXHAUSTED
# What grpc.aio reports for a client-streaming call whose server answered while the client was
# still writing: the server's status is lost (a known grpc.aio bug, open upstream).
MASKED_STATUS = "Internal error from Core"
ACTION = "llm.call"
# What an app typically attaches to an LLM call's audit event.
ATTRIBUTES = {"status": "ok", "input_tokens": 180, "output_tokens": 120, "latency_ms": 812,
              "route": f"{PROVIDER}/{MODEL}", "prompt_sha256":
              "9f2c1d0b7a5e4c3f8a6b2d1e0f9c8b7a6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"}
# Each must stay 0. (warden_journal_refused_events_total is pushback, reported as "refused".)
DROP_METRICS = ("warden_journal_dropped_total", "warden_journal_flush_failures_total")


# --- load ------------------------------------------------------------------------------------

def message_template(events: int, run_id: str) -> warden_pb2.StreamAuditRequest:
    """One message of `events` events; the worker sets ids, time and api_key before each
    send. The run id in the attributes lets the check compare every stored row with it."""
    attributes = struct_pb2.Struct()
    attributes.update({**ATTRIBUTES, "run": run_id})
    return warden_pb2.StreamAuditRequest(events=[
        warden_pb2.AuditEvent(action=ACTION, request_id=f"bench-{run_id}-req", user_id=USER_ID,
                              model=MODEL, provider=PROVIDER, attributes=attributes)
        for _ in range(events)])


@dataclass
class Load:
    """Shared by the workers of one measurement (times from time.perf_counter)."""

    measure_start: float
    stop_at: float
    events: int = 0  # acknowledged, warm-up included
    events_in_window: int = 0  # ... by an answer within the measured period
    events_by_stop: int = 0  # ... by an answer before the measured period ended
    sent: int = 0  # events written to a stream, acknowledged or not
    messages: int = 0  # acknowledged messages, warm-up included
    streams: int = 0  # acknowledged streams, warm-up included
    message_latencies: list[float] = field(default_factory=list)  # written in the window
    stream_latencies: list[float] = field(default_factory=list)  # first write in the window
    acked: list[tuple[int, int, int]] = field(default_factory=list)  # (worker, first, end) seqs
    errors: Counter = field(default_factory=Counter)
    first_error: str = ""
    refused: int = 0  # streams answered RESOURCE_EXHAUSTED
    masked: int = 0  # streams answered MASKED_STATUS
    first_send: float = 0.0
    last_ack: float = 0.0
    message_bytes: int = 0


async def worker(stub: warden_pb2_grpc.WardenStub, api_key: str, load: Load,
                 args: argparse.Namespace, w: int, prefix: str, run_id: str) -> None:
    """Streams one after another until the measured period ends; a stream open then sends no
    further message and is closed."""
    template = message_template(args.events, run_id)  # one per worker: mutated between sends
    now = timestamp_pb2.Timestamp()
    seq = 0
    while time.perf_counter() < load.stop_at:
        call = stub.StreamAudit(timeout=STREAM_TIMEOUT)
        first, sends = seq, []
        try:
            try:
                for m in range(args.messages):
                    if m and time.perf_counter() >= load.stop_at:
                        break
                    template.api_key = api_key if m == 0 else ""
                    now.GetCurrentTime()
                    for event in template.events:
                        event.event_id = f"{prefix}{w}-{seq}"
                        event.time.CopyFrom(now)
                        seq += 1
                    start = time.perf_counter()
                    load.first_send = load.first_send or start
                    # grpc serializes the message before write() returns: the template may
                    # change.
                    await call.write(template)
                    sends.append(start)
                    load.sent += args.events
                await call.done_writing()
            except asyncio.InvalidStateError:
                pass  # the server has already answered (a refusal): its status follows
            reply = await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED or \
                    exc.details() == MASKED_STATUS:
                # A full journal pushing back (WARDEN_JOURNAL_MAX_BYTES): by design, not a
                # failure. Its events were not acknowledged; the stream's earlier messages may
                # be stored all the same. When the refusal came while this client was still
                # writing, grpc.aio reports MASKED_STATUS instead.
                masked = exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                load.refused += not masked
                load.masked += masked
                await asyncio.sleep(REFUSED_PAUSE)
                continue
            load.errors[exc.code().name] += 1
            load.first_error = load.first_error or f"{exc.code().name}: {exc.details()}"
            continue
        end = time.perf_counter()
        count = seq - first
        if reply.accepted != count:
            load.errors["WRONG_COUNT"] += 1
            load.first_error = load.first_error or (f"WRONG_COUNT: {count} events sent, "
                                                    f"{reply.accepted} accepted")
            continue
        load.events += count
        load.messages += len(sends)
        load.streams += 1
        load.acked.append((w, first, seq))
        load.last_ack = end
        load.message_bytes = load.message_bytes or template.ByteSize()
        if end <= load.stop_at:
            load.events_by_stop += count
            load.events_in_window += count if end >= load.measure_start else 0
        load.message_latencies.extend(end - s for s in sends if s >= load.measure_start)
        if sends[0] >= load.measure_start:
            load.stream_latencies.append(end - sends[0])


# --- what the servers and Postgres spent ------------------------------------------------------

@dataclass
class Probe:
    """Warden's database and metrics, sampled by the sampler during the load."""

    database_url: str
    metrics_target: str
    conn: asyncpg.Connection | None = None

    async def backends(self) -> list[int]:
        """Warden's connections to its database (the bench's own excluded)."""
        assert self.conn is not None
        return [r["pid"] for r in await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")]

    async def rows(self) -> int:
        assert self.conn is not None
        return await self.conn.fetchval("SELECT count(*) FROM audit_events")

    async def pending(self) -> float:
        text = await asyncio.to_thread(scrape, self.metrics_target)
        return sum(metric_sums(text, "warden_journal_pending_records", "").values())


async def sampler(load: Load, server_pid: int, probe: Probe | None, out: dict) -> None:
    """CPU of the server (and of Warden's Postgres backends), rows in audit_events and the
    journal backlog, at the start and the end of the measured period."""
    points = []
    for at in (load.measure_start, load.stop_at):
        await asyncio.sleep(max(at - time.perf_counter(), 0))
        point = {"at": time.perf_counter(), "server_cpu": cpu_seconds([server_pid]),
                 "client_cpu": time.process_time(), "machine_busy": machine_busy(),
                 "pg_cpu": {}}
        if probe is not None:
            point["pg_cpu"] = {pid: cpu_seconds([pid]) for pid in await probe.backends()}
            point["rows"] = await probe.rows()
            point["rows_at"] = time.perf_counter()
            point["pending"] = await probe.pending()
        points.append(point)
    first, last = points
    span = last["at"] - first["at"]
    server_cpu = last["server_cpu"] - first["server_cpu"]
    out["server_cpu_pct"] = round(server_cpu / span * 100)
    # Per event, CPU time does not depend on how much of the machine others took meanwhile.
    out["server_cpu_us_per_event"] = round(server_cpu / max(load.events_in_window, 1) * 1e6, 1)
    # A backend that Warden's pool opened meanwhile counts whole.
    pg_cpu = sum(cpu - first["pg_cpu"].get(pid, 0.0) for pid, cpu in last["pg_cpu"].items())
    # Whatever else ran on the machine (other users, Postgres's own background processes),
    # as a share of one core: the noise behind this run's figures.
    out["rest_cpu_pct"] = round((last["machine_busy"] - first["machine_busy"] - server_cpu
                                 - pg_cpu - (last["client_cpu"] - first["client_cpu"]))
                                / span * 100)
    if probe is not None:
        stored = last["rows"] - first["rows"]
        out["pg_cpu_pct"] = round(pg_cpu / span * 100)
        out["pg_cpu_us_per_stored_event"] = round(pg_cpu / max(stored, 1) * 1e6, 1)
        out["stored_in_window_per_s"] = round(stored / (last["rows_at"] - first["rows_at"]), 1)
        out["pending_records_at_end"] = int(last["pending"])
        out["rows_at_end"] = last["rows"]
        # Acknowledged (durable in the journal) but not in Postgres yet: the flush's backlog.
        out["backlog_at_end"] = load.events_by_stop - last["rows"]


async def drive(target: str, api_key: str, args: argparse.Namespace, server_pid: int,
                prefix: str, run_id: str, probe: Probe | None = None) -> tuple[dict, Load]:
    channel = grpc.aio.insecure_channel(target)
    try:
        stub = warden_pb2_grpc.WardenStub(channel)
        now, cpu = time.perf_counter(), time.process_time()
        load = Load(now + args.warmup, now + args.warmup + args.seconds)
        sampled: dict = {}
        await asyncio.gather(sampler(load, server_pid, probe, sampled),
                             *(worker(stub, api_key, load, args, w, prefix, run_id)
                               for w in range(args.streams)))
        # Near 100% of one core means the generator, not the server, set the pace.
        client_cpu = (time.process_time() - cpu) / (time.perf_counter() - now)
    finally:
        await channel.close()
    messages, streams = sorted(load.message_latencies), sorted(load.stream_latencies)
    return {"events": load.events, "sent": load.sent, "messages": load.messages,
            "streams": load.streams, "refused": load.refused, "masked": load.masked,
            "errors": sum(load.errors.values()),
            "error_codes": dict(load.errors), "first_error": load.first_error,
            "acked_per_s": round(load.events_in_window / args.seconds, 1),
            "message_p50_ms": percentile_ms(messages, 0.50),
            "message_p99_ms": percentile_ms(messages, 0.99),
            "message_max_ms": percentile_ms(messages, 1.0),
            "stream_p50_ms": percentile_ms(streams, 0.50),
            "stream_p99_ms": percentile_ms(streams, 0.99),
            "message_bytes": load.message_bytes, "client_cpu_pct": round(client_cpu * 100),
            **sampled}, load


# --- Warden: tenant, storage, checks ---------------------------------------------------------

async def create_tenant(target: str, auth: tuple[tuple[str, str], ...]) -> str:
    """Org `bench`, app `bench-app` and a key of that app: all StreamAudit needs."""
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id=ORG_ID)),
                              metadata=auth)
        await admin.CreateApp(admin_pb2.CreateAppRequest(
            app=admin_pb2.App(id=APP_ID, org_id=ORG_ID)), metadata=auth)
        key = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            app_id=APP_ID, display_name="bench"), metadata=auth)
    return key.plaintext


async def wait_stored(probe: Probe) -> tuple[float | None, float]:
    """Poll Warden's journal backlog until it is empty (every record applied to Postgres, in a
    committed transaction); return that moment, or None if the backlog stopped shrinking, and
    the last backlog seen."""
    lowest, progress = float("inf"), time.perf_counter()
    while True:
        pending = await probe.pending()
        now = time.perf_counter()
        if pending == 0:
            return now, 0
        if pending < lowest:
            lowest, progress = pending, now
        elif now - progress > STORE_STALL_SECONDS:
            return None, pending
        await asyncio.sleep(POLL_SECONDS)


async def check_stored(probe: Probe, load: Load, prefix: str, run_id: str) -> dict:
    """What audit_events holds against what Warden acknowledged: every acknowledged id once,
    each row as sent, nothing the bench did not send."""
    assert probe.conn is not None
    rows = await probe.conn.fetch(
        "SELECT event_id, (app_id = $2 AND action = $3 AND user_id = $4 AND model = $5"
        " AND provider = $6 AND attributes = $7::jsonb) AS as_sent"
        " FROM audit_events WHERE org_id = $1",
        ORG_ID, APP_ID, ACTION, USER_ID, MODEL, PROVIDER,
        json.dumps({**ATTRIBUTES, "run": run_id}))
    ids = [r["event_id"] for r in rows]
    stored = set(ids)
    acked = {f"{prefix}{w}-{n}" for w, first, end in load.acked for n in range(first, end)}
    return {"rows": len(ids), "distinct": len(stored), "acked": len(acked),
            "missing": len(acked - stored),
            "unknown": sum(not i.startswith(prefix) for i in stored),
            "not_as_sent": sum(not r["as_sent"] for r in rows)}


def warden_metrics(text: str) -> dict[str, float]:
    """Warden's counters at the end of the run: losses, and what was counted."""
    def total(name: str, label: str = "") -> float:
        return sum(metric_sums(text, name, label).values())

    return {**{name: total(name, "kind") for name in DROP_METRICS},
            "warden_journal_refused_events_total": total("warden_journal_refused_events_total"),
            "warden_audit_events_total": total("warden_audit_events_total"),
            "flush_calls": int(metric_sums(text, "warden_db_round_trips_total", "op")["flush"])}


def warden_checks(figures: dict, stored: dict, metrics: dict[str, float], load: Load
                  ) -> list[str]:
    problems = []
    if stored["missing"]:
        problems.append(f"{stored['missing']} of {stored['acked']} acknowledged events are not "
                        "in audit_events")
    if stored["rows"] != stored["distinct"]:
        problems.append(f"audit_events holds {stored['rows'] - stored['distinct']} duplicate "
                        "event ids")
    if stored["unknown"]:
        problems.append(f"audit_events holds {stored['unknown']} events the bench did not send")
    if stored["not_as_sent"]:
        problems.append(f"{stored['not_as_sent']} stored events differ from what was sent")
    if not (load.errors or load.refused or load.masked) and stored["rows"] != stored["acked"]:
        # Without a failed stream every sent event was acknowledged: any extra is a replay.
        problems.append(f"audit_events holds {stored['rows']} events; {stored['acked']} were "
                        "sent and acknowledged")
    if load.masked and not metrics["warden_journal_refused_events_total"]:
        problems.append(f"{load.masked} streams ended with INTERNAL {MASKED_STATUS!r} and "
                        "Warden refused nothing: not a full journal")
    for name in DROP_METRICS:
        if metrics[name]:
            problems.append(f"{name} = {metrics[name]:g}")
    counted = metrics["warden_audit_events_total"]
    if counted != stored["rows"]:
        problems.append(f"warden_audit_events_total = {counted:g}, audit_events holds "
                        f"{stored['rows']}")
    if figures["stored_per_s"] is None:
        problems.append(f"the journal's backlog stopped shrinking for {STORE_STALL_SECONDS:.0f} s "
                        f"after the load ({figures['pending_after']:g} records left)")
    return problems


# --- run ---------------------------------------------------------------------------------------

def work(bench: Bench) -> dict:
    args = bench.args
    run_id = os.urandom(4).hex()
    database_url = bench.database()
    say("starting warden and the no-op server ...")
    warden = bench.warden(database_url)
    noop = bench.noop()
    try:
        api_key = asyncio.run(create_tenant(warden.target, bench.auth))
    except grpc.aio.AioRpcError as exc:
        raise BenchError(f"cannot set up the tenant: {exc.code().name}: "
                                 f"{exc.details()}") from None
    results: dict = {}
    say(f"no-op: {args.warmup:g} s warm-up, {args.seconds:g} s measured ...")
    results["noop"], noop_load = asyncio.run(
        drive(noop.target, api_key, args, noop.pid, f"noop-{run_id}-", run_id))
    say(f"warden: {args.warmup:g} s warm-up, {args.seconds:g} s measured, then the journal's "
        "way into Postgres ...")

    async def warden_run() -> tuple[dict, Load, dict, str]:
        probe = Probe(database_url, warden.metrics)
        probe.conn = await asyncpg.connect(database_url, timeout=10)
        try:
            figures, load = await drive(warden.target, api_key, args, warden.pid,
                                        f"{run_id}-", run_id, probe)
            stored_at, figures["pending_after"] = await wait_stored(probe)
            figures["drain_s"] = None
            figures["stored_per_s"] = None
            if stored_at is not None and load.first_send:
                figures["drain_s"] = round(stored_at - load.last_ack, 2)
                figures["stored_per_s"] = round(load.events / (stored_at - load.first_send), 1)
                figures["store_window_s"] = round(stored_at - load.first_send, 2)
            stored = await check_stored(probe, load, f"{run_id}-", run_id)
        finally:
            await probe.conn.close()
        return figures, load, stored, await asyncio.to_thread(warden.scrape)

    results["warden"], load, stored, metrics_text = asyncio.run(warden_run())
    results["stored"] = stored
    results["metrics"] = warden_metrics(metrics_text)
    for p in warden_checks(results["warden"], stored, results["metrics"], load):
        bench.problem(p)
    for name, r in (("no-op", results["noop"]), ("Warden", results["warden"])):
        if r["errors"]:
            bench.problem(f"{name}: {r['errors']} streams failed {r['error_codes']}, first: "
                          f"{r['first_error']}")
    if noop_load.events != noop_load.sent:
        bench.problem(f"no-op: {noop_load.sent} events sent, {noop_load.events} acknowledged")
    return results


# --- report ----------------------------------------------------------------------------------

def report(context: dict, results: dict) -> None:
    noop, warden = results["noop"], results["warden"]
    rows = (("no-op", noop), ("Warden", warden))
    print(f"\n**StreamAudit**, {context['streams']} streams at a time, {context['messages']} "
          f"messages of {context['events']} events per stream ({noop['message_bytes']:,} B "
          f"per message), {context['warmup_s']:g} s warm-up, {context['seconds_s']:g} s "
          "measured\n")
    print("| server | events acked | streams | refused | errors | **acked events/s** | "
          "msg ack p50 / p99 ms | stream p50 / p99 ms | **stored events/s** |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        refused = f"{r['refused']} + {r['masked']}" if r["masked"] else r["refused"]
        print(f"| {name} | {r['events']:,} | {r['streams']:,} | {refused} | "
              f"{r['errors']} | **{num(r['acked_per_s'])}** | {num(r['message_p50_ms'], 1)} / "
              f"{num(r['message_p99_ms'], 1)} | {num(r['stream_p50_ms'], 1)} / "
              f"{num(r['stream_p99_ms'], 1)} | **{num(r.get('stored_per_s'))}** |")
    print(f"| Warden/no-op | | | | | {ratio(noop['acked_per_s'], warden['acked_per_s'])} | "
          f"{ratio(noop['message_p50_ms'], warden['message_p50_ms'])} / "
          f"{ratio(noop['message_p99_ms'], warden['message_p99_ms'])} | "
          f"{ratio(noop['stream_p50_ms'], warden['stream_p50_ms'])} / "
          f"{ratio(noop['stream_p99_ms'], warden['stream_p99_ms'])} | |")
    print("\nCPU during the measured period, as % of one core and per event acknowledged "
          "(Postgres: the backends of Warden's database, per event stored meanwhile)\n")
    print("| server | server CPU | server us/event | Postgres CPU | Postgres us/stored event "
          "| client CPU | rest of the machine |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        pg = (f"{r['pg_cpu_pct']}% | {num(r['pg_cpu_us_per_stored_event'], 1)}"
              if "pg_cpu_pct" in r else "- | -")
        print(f"| {name} | {r['server_cpu_pct']}% | {num(r['server_cpu_us_per_event'], 1)} | "
              f"{pg} | {r['client_cpu_pct']}% | {r['rest_cpu_pct']}% |")
    s, m = results["stored"], results["metrics"]
    print(f"\nInto Postgres: {num(warden.get('stored_in_window_per_s'))} events/s stored "
          f"during the measured period (count(*) at its start and end); at its end "
          f"{warden['backlog_at_end']:,} acknowledged events were not in Postgres yet; all "
          f"{warden['events']:,} acknowledged events were stored {num(warden['drain_s'], 2)} s "
          f"after the last acknowledgement, {num(warden.get('store_window_s'), 2)} s after "
          f"the first send; {m['flush_calls']:,} flush calls since start "
          f"({num(s['rows'] / max(m['flush_calls'], 1))} events each).")
    print(f"\nChecks: audit_events holds {s['rows']:,} rows ({s['distinct']:,} distinct ids) "
          f"for {s['acked']:,} acknowledged events: missing {s['missing']}, not sent "
          f"{s['unknown']}, not as sent {s['not_as_sent']}; "
          + ", ".join(f"{name} {value:g}" for name, value in m.items() if name != "flush_calls")
          + ".")


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--streams", type=int, default=8, help="StreamAudit calls at a time")
    p.add_argument("--messages", type=int, default=10, help="messages per stream")
    p.add_argument("--events", type=int, default=100,
                   help=f"events per message (1 to {MAX_EVENTS_PER_MESSAGE})")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds measured per server")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds run but not measured before each measurement")
    args = p.parse_args()
    harness.positive(p, args, "streams", "messages", "events")
    harness.positive(p, args, "seconds", at_least=0.1)
    if args.events > MAX_EVENTS_PER_MESSAGE or args.warmup < 0:
        p.error(f"--events must be at most {MAX_EVENTS_PER_MESSAGE}, --warmup >= 0")
    harness.main(p, work, report, lambda a: {
        "streams": a.streams, "messages": a.messages, "events": a.events,
        "warmup_s": a.warmup, "seconds_s": a.seconds}, args)


if __name__ == "__main__":
    main()
