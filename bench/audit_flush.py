"""The audit part of Warden's journal flush in isolation, on a fresh migrated database: what
Postgres spends per stored event in the statement Warden runs (ledger._FLUSH), and what the
alternatives would.

    python bench/audit_flush.py [--events 100000] [--database-url URL | embedded] [--json PATH]

Each variant stores --events events of the shape bench/audit.py sends, in journal records of
100 events (one StreamAudit message), 5,000 events per call (ledger.BATCH), one call after
another on one connection set up as Warden's pool sets up its own. Each call is one
transaction, as a flush is. Each variant first makes one call on its connection that is not
measured (a connection's first call of the statement costs up to a second more), then empties
the table. Per variant: the Python time to build a call's parameters, the wall time per call,
the CPU of the Postgres backend per event (from /proc), and events per second on one
connection. Variants:

- `_FLUSH, caller's time`: the bench's events, each with its time, so no id probe.
- `_FLUSH, time assigned`: the same events marked as Warden marks an event sent with an id and
  no time: each is looked for in every partition first. Run with the partitions a new database
  has, then with 12 (the default 180 days of retention, 3 months ahead, the default partition).
- `_FLUSH, with the foreign key to orgs`: caller's time, with the per-row foreign key check
  that migrations 0001-0004 had (0005 dropped it).
- `COPY + INSERT ... SELECT`: COPY of one row per event into a temporary table, then the same
  org check and ON CONFLICT; the rows are built in Python from the journal's dicts.
- `COPY text rows + INSERT ... SELECT`: the same, the rows sent as COPY's text format into a
  temporary table with typed columns (attributes jsonb), as a journal holding each event's
  COPY line (built when the event is acknowledged) would send them. Its "encode" column is the
  Python time to build those lines from the dicts. The report also times building them
  against the journal's JSON of the same record, which is what they would replace.

Everything runs twice, alternating, so that a burst of load elsewhere shows as a disagreement.
Exits 1 if a variant did not store exactly the events it sent. Figures: bench/audit.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

# audit, authorize and quotas: beside this file, which is on sys.path when run as
# `python bench/audit_flush.py`.
from audit import ACTION, ATTRIBUTES, loadavg
from authorize import fresh_database, machine
from noop_server import APP_ID, MODEL, ORG_ID, PROVIDER, USER_ID
from quotas import add_database_url, cpu_seconds, database_kind, on_database_server

from warden.journal import _encode
from warden.ledger import _FLUSH
from warden.store.migrate import migrate
from warden.store.postgres import init_connection

PER_RECORD = 100  # events per journal record (one StreamAudit message of bench/audit.py)
PER_CALL = 5000  # ledger.BATCH
COLUMNS = ("org_id", "app_id", "event_id", "event_time", "action", "request_id", "user_id",
           "model", "provider", "attributes")
_COLS = ", ".join(COLUMNS)


def temp_table(name: str, attributes: str) -> tuple[str, str]:
    """The temporary table COPY fills (`attributes` its type) and the INSERT from it into
    audit_events, with the flush's org check and ON CONFLICT."""
    create = (f"CREATE TEMP TABLE IF NOT EXISTS {name} (org_id text, app_id text,"
              " event_id text, event_time timestamptz, action text, request_id text,"
              f" user_id text, model text, provider text, attributes {attributes})"
              " ON COMMIT DELETE ROWS")
    insert = (f"INSERT INTO audit_events ({_COLS})"
              f" SELECT {_COLS.replace('attributes', 'attributes::jsonb')} FROM {name} i"
              " WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = i.org_id)"
              " ON CONFLICT (org_id, event_id, event_time) DO NOTHING")
    return create, insert


# Warden's jsonb codec is text only (asyncpg has no binary encoder for it), so binary COPY
# sends attributes as text, cast on the way in; COPY's text format fills a jsonb column.
TEMP_TABLE, COPY_INSERT = temp_table("audit_in", "text")
TEXT_TABLE, TEXT_INSERT = temp_table("audit_text_in", "jsonb")
ADD_FK = ("ALTER TABLE audit_events ADD CONSTRAINT audit_events_org_id_fkey"
          " FOREIGN KEY (org_id) REFERENCES orgs (id)")
DROP_FK = "ALTER TABLE audit_events DROP CONSTRAINT audit_events_org_id_fkey"
# The months before the current one that 180 days of retention keeps.
PAST_MONTHS = ("SELECT warden_audit_partition(date_trunc('month', now() AT TIME ZONE 'UTC')"
               " - make_interval(months => m)) FROM generate_series(2, 7) m")

Apply = Callable[[asyncpg.Connection, list[dict]], Awaitable[float]]


def records(prefix: str, count: int, time_assigned: bool) -> list[dict]:
    """Journal records (kind audit) holding `count` events, as Ledger.audit writes them."""
    when = datetime.now(UTC).isoformat()
    events = [{"event_id": f"{prefix}-{i}", "event_time": when, "action": ACTION,
               "request_id": f"bench-{prefix}-req", "user_id": USER_ID, "model": MODEL,
               "provider": PROVIDER, "attributes": {**ATTRIBUTES, "run": prefix},
               **({"time_assigned": True} if time_assigned else {})}
              for i in range(count)]
    return [{"kind": "audit", "org_id": ORG_ID, "app_id": APP_ID,
             "events": events[i:i + PER_RECORD]} for i in range(0, count, PER_RECORD)]


async def apply_flush(conn: asyncpg.Connection, batch: list[bytes]) -> float:
    """Ledger._apply for a batch of audit records, each the journal's JSON: one statement.
    Returns the Python time spent building its parameters."""
    started = time.process_time()
    audit = (b"[" + b",".join(batch) + b"]").decode()
    encode = time.process_time() - started
    await conn.fetchrow(_FLUSH, "[]", "[]", audit)
    return encode


async def apply_copy(conn: asyncpg.Connection, batch: list[bytes]) -> float:
    """COPY the events into a temporary table, then one INSERT ... SELECT with the same org
    check and ON CONFLICT, and warden_flush for decisions and usage (none here), in one
    transaction. The rows are built from the journal's records, as a flusher would."""
    started = time.process_time()
    rows = [(r["org_id"], r["app_id"], e["event_id"], datetime.fromisoformat(e["event_time"]),
             e["action"], e["request_id"], e["user_id"], e["model"], e["provider"],
             json.dumps(e["attributes"], separators=(",", ":")))
            for r in map(json.loads, batch) for e in r["events"]]
    encode = time.process_time() - started
    async with conn.transaction():
        await conn.execute(TEMP_TABLE)
        await conn.copy_records_to_table("audit_in", records=rows, columns=COLUMNS)
        await conn.execute(COPY_INSERT)
        await conn.fetchrow("SELECT * FROM warden_flush('[]'::jsonb, '[]'::jsonb)")
    return encode


def copy_lines(record: dict) -> str:
    """A record's events as COPY text rows. The bench's strings hold no tab, newline or
    backslash, which a real encoder would escape."""
    prefix = f"{record['org_id']}\t{record['app_id']}\t"
    return "".join(
        prefix + "\t".join((e["event_id"], e["event_time"], e["action"], e["request_id"],
                            e["user_id"], e["model"], e["provider"]))
        + "\t" + json.dumps(e["attributes"], separators=(",", ":")) + "\n"
        for e in record["events"])


async def apply_copy_text(conn: asyncpg.Connection, batch: list[bytes]) -> float:
    """COPY text rows into a typed temporary table, then the INSERT of apply_copy. Returns the
    Python time to build the rows from the records' dicts (decoding them is not counted:
    such a journal would hold the lines)."""
    decoded = [json.loads(body) for body in batch]
    started = time.process_time()
    data = "".join(map(copy_lines, decoded)).encode()
    encode = time.process_time() - started
    async with conn.transaction():
        await conn.execute(TEXT_TABLE)
        await conn.copy_to_table("audit_text_in", source=io.BytesIO(data), columns=COLUMNS)
        await conn.execute(TEXT_INSERT)
        await conn.fetchrow("SELECT * FROM warden_flush('[]'::jsonb, '[]'::jsonb)")
    return encode


def encode_costs(rounds: int = 200) -> dict:
    """Python µs per event: the journal's JSON of a record of PER_RECORD events (what Ledger.audit
    does today) against its events' COPY lines."""
    record = records("encode", PER_RECORD, False)[0]
    figures = {}
    for name, encode in (("journal JSON", lambda: _encode(record).encode()),
                         ("COPY lines", lambda: copy_lines(record).encode())):
        started = time.process_time()
        for _ in range(rounds):
            encode()
        figures[name] = round((time.process_time() - started) / rounds / PER_RECORD * 1e6, 2)
    return figures


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, timeout=10)
    await init_connection(conn)
    return conn


# name, apply, events marked time_assigned, DDL before, DDL after
VARIANTS = (
    ("_FLUSH, caller's time", apply_flush, False, (), ()),
    ("_FLUSH, time assigned", apply_flush, True, (), ()),
    ("_FLUSH, caller's time, with the foreign key to orgs", apply_flush, False, (ADD_FK,),
     (DROP_FK,)),
    ("COPY + INSERT ... SELECT, caller's time", apply_copy, False, (), ()),
    ("COPY text rows + INSERT ... SELECT, caller's time", apply_copy_text, False, (), ()),
)


async def variant(url: str, name: str, apply: Apply, time_assigned: bool, before: tuple,
                  after: tuple, total: int, problems: list[str]) -> dict:
    conn = await connect(url)
    try:
        for statement in before:
            await conn.execute(statement)
        # A connection's first call of a statement costs up to a second more (planning, and
        # JIT compilation while the new partitions have no statistics): Warden's pooled
        # connections pay it once, so it is made here and not measured.
        await apply(conn, [json.dumps(r).encode() for r in records(
            f"warm-{time.monotonic_ns()}", PER_CALL, time_assigned)])
        await conn.execute("TRUNCATE audit_events")
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        encode = wall = 0.0
        calls = 0
        cpu = cpu_seconds([pid])
        for start in range(0, total, PER_CALL):
            batch = [json.dumps(r).encode() for r in records(
                f"{calls}-{time.monotonic_ns()}", min(PER_CALL, total - start), time_assigned)]
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


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def prepare(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO orgs (id) VALUES ($1)", ORG_ID)
    finally:
        await conn.close()


def report(context: dict, encoding: dict, results: list[dict]) -> None:
    print("  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"\n**Building a record of {PER_RECORD} events** (Python µs per event): "
          + ", ".join(f"{name} {us}" for name, us in encoding.items()))
    print(f"\n**One flush call after another on one connection**, {context['events']:,} events "
          f"per variant, {PER_CALL:,} per call\n")
    print("| variant | partitions | calls | encode us/event (Python) | wall ms/call | "
          "Postgres CPU us/event | events/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['variant']} | {r['partitions']} | {r['calls']} | {r['encode_us']} | "
              f"{r['wall_ms_per_call']} | {r['pg_cpu_us']} | {r['events_per_s']:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per variant")
    add_database_url(parser)
    parser.add_argument("--json", type=Path, help="also write context and figures as JSON")
    args = parser.parse_args()
    if args.events < PER_CALL:
        parser.error(f"--events must be at least {PER_CALL}")
    context = {"utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "loadavg": loadavg(),
               **machine(),
               "database": database_kind(args.database_url),
               "events": args.events}
    encoding = encode_costs()
    problems: list[str] = []
    results: list[dict] = []

    def all_variants(base_url: str, _tmp: Path) -> None:
        with fresh_database(base_url) as url:
            def run(v: tuple) -> None:
                print(f"{v[0]} ...", file=sys.stderr)
                results.append(asyncio.run(variant(url, *v, args.events, problems)))

            asyncio.run(prepare(url))
            for _ in range(2):
                for v in VARIANTS:
                    run(v)
            asyncio.run(execute(url, PAST_MONTHS))
            for _ in range(2):
                run(VARIANTS[1])

    on_database_server(args.database_url, all_variants)
    context["loadavg_end"] = loadavg()
    report(context, encoding, results)
    if args.json:
        args.json.write_text(json.dumps({"context": context, "encoding": encoding,
                                         "flush": results, "problems": problems},
                                        indent=2) + "\n")
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
