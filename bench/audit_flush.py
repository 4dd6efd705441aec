"""The audit part of Warden's journal flush in isolation, on a fresh migrated database: what
Postgres spends per stored event in the flush Warden runs (decision_log.store: COPY of the
events' text rows straight into audit_events, or into a temporary table and then
decision_log._FLUSH), and what the alternatives would.

    python bench/audit_flush.py [--events 100000] [--database-url URL | embedded] [--json PATH]

Each variant stores --events events of the shape bench/audit.py sends, in journal records of
100 events (one StreamAudit message), 5,000 events per call (flusher.BATCH), one call after
another on one connection set up as Warden's pool sets up its own. Each call is one
transaction, as a flush is. Each variant first makes one call on its connection that is not
measured (a connection's first call of the statement costs up to a second more), then empties
the table. Per variant: the Python time to build a call's data from what the journal holds,
the wall time per call, the CPU of the Postgres backend per event (from /proc), and events per
second on one connection. Variants:

- `Warden, caller's time`: the bench's events, each with its time, so no id probe: COPY'd
  straight into audit_events, as Warden does with the records it journaled. The journal holds
  each record's COPY rows (built by records.copy_rows when the events are acknowledged), so the
  flush builds nothing.
- `Warden the careful way, caller's time`: the same through the temporary table and _FLUSH
  (its sort, org check and ON CONFLICT), as Warden applies a journal an earlier run left, or a
  batch after one that held a copy already stored.
- `Warden, time assigned`: the events marked as Warden marks an event sent with an id and no
  time, the careful way: each is looked for in every partition first. Run with the partitions a
  new database has, then with 12 (the default 180 days of retention, 3 months ahead, the
  default partition).
- `Warden, caller's time, with the foreign key to orgs`: the per-row foreign key check that
  migrations 0001-0004 had (0005 dropped it).
- `binary COPY of rows built at the flush`: the alternative of journaling the events as JSON
  (as Warden did before it used COPY) and building binary COPY rows from the decoded records
  at the flush, into a temporary table with attributes as text, cast on the way in.

The report also times what acknowledging a record costs the sidecar per event: the COPY rows
Warden journals, against the JSON of the events that Warden journaled before.

Everything runs twice, alternating, so that a burst of load elsewhere shows as a disagreement.
Exits 1 if a variant did not store exactly the events it sent. Figures: bench/audit.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import harness
from audit import ACTION, APP_ID, ATTRIBUTES, MODEL, ORG_ID, PROVIDER, USER_ID
from harness import Bench, table
from servers import cpu_seconds, execute, migrate, say

# This bench times Warden's flush in process, so unlike the others it imports Warden's
# internals, all of them here: when server/ moves them, this block is what changes.
from warden.journal import _encode
from warden.records import rows_of_events
from warden.store.decision_log import store
from warden.store.postgres import AUDIT_COLUMNS, init_connection

PER_RECORD = 100  # events per journal record (one StreamAudit message of bench/audit.py)
PER_CALL = 5000  # flusher.BATCH
COLUMNS = AUDIT_COLUMNS[:-1]  # without time_assigned, which only Warden's flush reads
_COLS = ", ".join(COLUMNS)
# Warden's jsonb codec is text only (asyncpg has no binary encoder for it), so binary COPY
# sends attributes as text, cast on the way in.
BINARY_TABLE = (f"CREATE TEMP TABLE IF NOT EXISTS audit_in ({' text, '.join(COLUMNS)} text)"
                " ON COMMIT DELETE ROWS")
_CAST = _COLS.replace("event_time", "event_time::timestamptz").replace("attributes",
                                                                      "attributes::jsonb")
BINARY_INSERT = (f"INSERT INTO audit_events ({_COLS}) SELECT {_CAST} FROM audit_in i"
                 " WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = i.org_id)"
                 " ON CONFLICT (org_id, event_time, event_id) DO NOTHING")
ADD_FK = ("ALTER TABLE audit_events ADD CONSTRAINT audit_events_org_id_fkey"
          " FOREIGN KEY (org_id) REFERENCES orgs (id)")
DROP_FK = "ALTER TABLE audit_events DROP CONSTRAINT audit_events_org_id_fkey"
# The months before the current one that 180 days of retention keeps.
PAST_MONTHS = ("SELECT warden_audit_partition(date_trunc('month', now() AT TIME ZONE 'UTC')"
               " - make_interval(months => m)) FROM generate_series(2, 7) m")

Apply = Callable[[asyncpg.Connection, list[bytes]], Awaitable[float]]


def records(prefix: str, count: int, time_assigned: bool) -> list[dict]:
    """`count` events as Ledger.audit takes them, in records of PER_RECORD with their org and
    app (the form Warden journaled them in before it used COPY)."""
    when = datetime.now(UTC).isoformat()
    events = [{"event_id": f"{prefix}-{i}", "event_time": when, "action": ACTION,
               "request_id": f"bench-{prefix}-req", "user_id": USER_ID, "model": MODEL,
               "provider": PROVIDER, "attributes": {**ATTRIBUTES, "run": prefix},
               **({"time_assigned": True} if time_assigned else {})}
              for i in range(count)]
    return [{"kind": "audit", "org_id": ORG_ID, "app_id": APP_ID,
             "events": events[i:i + PER_RECORD]} for i in range(0, count, PER_RECORD)]


def events_json(record: dict) -> bytes:
    """The record with its events as JSON, as Warden journaled it before it used COPY."""
    return _encode(record).encode()


async def apply_warden(conn: asyncpg.Connection, batch: list[bytes]) -> float:
    """decision_log.store for a batch of records' COPY rows, straight into audit_events as Warden
    stores events with the caller's time. Returns the Python time spent building the call's
    data from what the journal holds: none."""
    await store(conn, "[]", "[]", [], batch)
    return 0.0


async def apply_careful(conn: asyncpg.Connection, batch: list[bytes]) -> float:
    """decision_log.store the careful way: COPY into the temporary table, then _FLUSH (events whose
    time Warden assigned, a journal an earlier run left, a batch after a copy already stored)."""
    await store(conn, "[]", "[]", batch)
    return 0.0


async def apply_binary(conn: asyncpg.Connection, bodies: list[bytes]) -> float:
    """Binary COPY of rows built from the records' JSON into a temporary table, then one
    INSERT ... SELECT with the flush's org check and ON CONFLICT, and warden_apply_journal for
    decisions and usage (none here), in one transaction."""
    started = time.process_time()
    rows = [(r["org_id"], r["app_id"], e["event_id"], e["event_time"], e["action"],
             e["request_id"], e["user_id"], e["model"], e["provider"],
             json.dumps(e["attributes"], separators=(",", ":")))
            for r in map(json.loads, bodies) for e in r["events"]]
    encode = time.process_time() - started
    async with conn.transaction():
        await conn.execute(BINARY_TABLE)
        await conn.copy_records_to_table("audit_in", records=rows, columns=COLUMNS)
        await conn.execute(BINARY_INSERT)
        await conn.fetchrow("SELECT * FROM warden_flush('[]'::jsonb, '[]'::jsonb)")
    return encode


def encode_costs(rounds: int = 200) -> dict:
    """Python µs per event to journal a record of PER_RECORD events: its COPY rows and the
    record's JSON (what Ledger.audit does; attributes encoded from dicts here, where Warden
    writes them from each event's Struct), against the JSON of the events in the record
    (what Warden did before it used COPY)."""
    record = records("encode", PER_RECORD, False)[0]
    figures = {}
    for name, encode in (
            ("COPY rows", lambda: _encode({"kind": "audit", "rows": PER_RECORD}).encode()
             + rows_of_events(record)),
            ("events as JSON", lambda: events_json(record))):
        started = time.process_time()
        for _ in range(rounds):
            encode()
        figures[name] = round((time.process_time() - started) / rounds / PER_RECORD * 1e6, 2)
    return figures


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, timeout=10)
    await init_connection(conn)
    return conn


# name, what the journal holds of a record, apply, events marked time_assigned, DDL before,
# DDL after
TIME_ASSIGNED = ("Warden, time assigned", rows_of_events, apply_careful, True, (), ())
VARIANTS = (
    ("Warden, caller's time", rows_of_events, apply_warden, False, (), ()),
    ("Warden the careful way, caller's time", rows_of_events, apply_careful, False, (), ()),
    TIME_ASSIGNED,
    ("Warden, caller's time, with the foreign key to orgs", rows_of_events, apply_warden, False,
     (ADD_FK,), (DROP_FK,)),
    ("binary COPY of rows built at the flush, caller's time", events_json, apply_binary, False,
     (), ()),
)


async def variant(url: str, name: str, journal: Callable[[dict], bytes], apply: Apply,
                  time_assigned: bool, before: tuple, after: tuple, total: int,
                  problems: list[str]) -> dict:
    conn = await connect(url)
    try:
        for statement in before:
            await conn.execute(statement)
        # A connection's first call of a statement costs up to a second more (planning, and
        # JIT compilation while the new partitions have no statistics): Warden's pooled
        # connections pay it once, so it is made here and not measured.
        await apply(conn, [journal(r) for r in records(f"warm-{time.monotonic_ns()}", PER_CALL,
                                                       time_assigned)])
        await conn.execute("TRUNCATE audit_events")
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        encode = wall = 0.0
        calls = 0
        cpu = cpu_seconds([pid])
        for start in range(0, total, PER_CALL):
            batch = [journal(r) for r in records(f"{calls}-{time.monotonic_ns()}",
                                                 min(PER_CALL, total - start), time_assigned)]
            began = time.perf_counter()
            encode += await apply(conn, batch)
            wall += time.perf_counter() - began
            calls += 1
        cpu = cpu_seconds([pid]) - cpu
        stored = await conn.fetchval("SELECT count(*) FROM audit_events")
        for statement in after:
            await conn.execute(statement)
    finally:
        await conn.close()
    if stored != total:
        problems.append(f"{name}: {stored} events stored of {total}")
    return {"variant": name, "partitions": partitions, "calls": calls,
            "encode_us": round(encode / total * 1e6, 1),
            "wall_ms_per_call": round(wall / calls * 1000, 1),
            "pg_cpu_us": round(cpu / total * 1e6, 1), "events_per_s": round(total / wall)}


async def add_org(url: str) -> None:
    await execute(url, "INSERT INTO orgs (id) VALUES ($1)", ORG_ID)


def report(context: dict, results: dict) -> None:
    print(f"\n**Building a record of {PER_RECORD} events** (Python µs per event): "
          + ", ".join(f"{name} {us}" for name, us in results["encoding"].items()))
    print(table(["variant", "partitions:", "calls:", "encode µs/event (Python):",
                 "wall ms/call:", "Postgres CPU µs/event:", "events/s:"],
                [[r["variant"], r["partitions"], r["calls"], r["encode_us"],
                  r["wall_ms_per_call"], r["pg_cpu_us"], f"{r['events_per_s']:,}"]
                 for r in results["flush"]],
                f"**One flush call after another on one connection**, {context['events']:,} "
                f"events per variant, {PER_CALL:,} per call"))


def work(bench: Bench) -> dict:
    args = bench.args
    encoding = encode_costs()
    results: list[dict] = []
    url = bench.database()
    migrate(url)
    asyncio.run(add_org(url))

    def run(v: tuple) -> None:
        say(f"{v[0]} ...")
        results.append(asyncio.run(variant(url, *v, args.events, bench.problems)))

    for _ in range(2):
        for v in VARIANTS:
            run(v)
    asyncio.run(execute(url, PAST_MONTHS))
    for _ in range(2):
        run(TIME_ASSIGNED)
    return {"encoding": encoding, "flush": results}


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=int, default=100_000, help="events per variant")
    args = p.parse_args()
    harness.positive(p, args, "events", at_least=PER_CALL)
    harness.main(p, work, report, lambda a: {"events": a.events}, args)


if __name__ == "__main__":
    main()
