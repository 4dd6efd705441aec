"""The audit part of Warden's journal flush in isolation, on a fresh migrated database: what the
statement Warden runs today (ledger._FLUSH, the batch as jsonb through jsonb_to_recordset)
costs per event, against COPY into a temporary table then INSERT ... SELECT ... ON CONFLICT;
then where Postgres's time per stored event goes.

    python bench/audit_flush.py [--events 100000] [--database-url URL | embedded] [--json PATH]

Part 1: for 1,000 and 5,000 events per call (ledger.BATCH is 1,000), --events events of the
shape bench/audit.py sends, in audit records of 100 events as the journal holds them, applied
one call after another on one connection set up as Warden's pool sets up its own (its jsonb
codec). Each call is one transaction, as a flush is. Per variant: the Python time to encode a
call (json.dumps of the records for jsonb; the row tuples for COPY), the wall time per call, the
CPU of the Postgres backend per event (from /proc), and events per second on one connection.
The table is emptied before each variant, so each starts from the same index size.

Part 2: COPY into the temporary table, then INSERT ... SELECT into audit_events, 5,000 events
per transaction, with audit_events as migrated, then without its foreign key to orgs, then also
without its (org_id, event_time) index, then with a plain INSERT (no ON CONFLICT): the
Postgres CPU per event of each step.

Exits 1 if a variant did not store exactly the events it sent. Scratch measurements for a
proposal (bench/audit.md); nothing here changes Warden.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

# authorize, audit and quotas: beside this file, which is on sys.path when run as
# `python bench/audit_flush.py`.
from audit import ACTION, ATTRIBUTES, DEFAULT_DATABASE_URL, loadavg
from authorize import BenchError, fresh_database, machine
from noop_server import APP_ID, MODEL, ORG_ID, PROVIDER, USER_ID
from quotas import cpu_seconds, database_server

from warden.ledger import _FLUSH
from warden.store.migrate import migrate
from warden.store.postgres import init_connection

PER_RECORD = 100  # events per journal record (one StreamAudit message of bench/audit.py)
COLUMNS = ("org_id", "app_id", "event_id", "event_time", "action", "request_id", "user_id",
           "model", "provider", "attributes")
_COLS = ", ".join(COLUMNS)
# Warden's jsonb codec is text only (asyncpg has no binary encoder for it), so attributes
# travel as text and are cast on the way in.
TEMP_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS audit_in (org_id text, app_id text,"
              " event_id text, event_time timestamptz, action text, request_id text,"
              " user_id text, model text, provider text, attributes text)"
              " ON COMMIT DELETE ROWS")
COPY_INSERT = (f"INSERT INTO audit_events ({_COLS})"
               f" SELECT {_COLS.replace('attributes', 'attributes::jsonb')} FROM audit_in i"
               " WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = i.org_id)"
               " ON CONFLICT (org_id, event_id) DO NOTHING")
PLAIN_INSERT = (f"INSERT INTO audit_events ({_COLS})"
                f" SELECT {_COLS.replace('attributes', 'attributes::jsonb')} FROM audit_in i")

Apply = Callable[[asyncpg.Connection, list[dict]], Awaitable[float]]


def records(prefix: str, count: int) -> list[dict]:
    """Journal records (kind audit) holding `count` events, as Ledger.audit writes them."""
    when = datetime.now(UTC).isoformat()
    events = [{"event_id": f"{prefix}-{i}", "event_time": when, "action": ACTION,
               "request_id": f"bench-{prefix}-req", "user_id": USER_ID, "model": MODEL,
               "provider": PROVIDER, "attributes": {**ATTRIBUTES, "run": prefix}}
              for i in range(count)]
    return [{"kind": "audit", "org_id": ORG_ID, "app_id": APP_ID,
             "events": events[i:i + PER_RECORD]} for i in range(0, count, PER_RECORD)]


async def apply_jsonb(conn: asyncpg.Connection, batch: list[dict]) -> float:
    """Ledger._apply for a batch of audit records: one statement. Returns the Python time
    the codec spends encoding it (measured apart: the codec runs inside fetchrow)."""
    started = time.process_time()
    json.dumps(batch)
    encode = time.process_time() - started
    await conn.fetchrow(_FLUSH, [], [], batch)
    return encode


async def apply_copy(conn: asyncpg.Connection, batch: list[dict]) -> float:
    """The proposal: COPY the events into a temporary table, then one INSERT ... SELECT with
    the same org check and ON CONFLICT, and warden_flush for decisions and usage (none here),
    in one transaction."""
    started = time.process_time()
    rows = [(r["org_id"], r["app_id"], e["event_id"], datetime.fromisoformat(e["event_time"]),
             e["action"], e["request_id"], e["user_id"], e["model"], e["provider"],
             json.dumps(e["attributes"], separators=(",", ":")))
            for r in batch for e in r["events"]]
    encode = time.process_time() - started
    async with conn.transaction():
        await conn.execute(TEMP_TABLE)
        await conn.copy_records_to_table("audit_in", records=rows, columns=COLUMNS)
        await conn.execute(COPY_INSERT)
        await conn.fetchrow("SELECT * FROM warden_flush($1::jsonb, $2::jsonb)", [], [])
    return encode


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, timeout=10)
    await init_connection(conn)
    return conn


async def flush_variant(url: str, name: str, apply: Apply, per_call: int, total: int,
                        problems: list[str]) -> dict:
    conn = await connect(url)
    try:
        await conn.execute("TRUNCATE audit_events")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        encode = wall = 0.0
        calls = 0
        cpu = cpu_seconds([pid])
        for start in range(0, total, per_call):
            batch = records(f"{name[:4]}{per_call}-{start}", min(per_call, total - start))
            began = time.perf_counter()
            encode += await apply(conn, batch)
            wall += time.perf_counter() - began
            calls += 1
        cpu = cpu_seconds([pid]) - cpu
        stored = await conn.fetchval("SELECT count(*) FROM audit_events")
    finally:
        await conn.close()
    if stored != total:
        problems.append(f"{name}, {per_call} per call: {stored} events stored of {total}")
    return {"variant": name, "per_call": per_call, "calls": calls,
            "encode_us": round(encode / total * 1e6, 1),
            "wall_ms_per_call": round(wall / calls * 1000, 1),
            "pg_cpu_us": round(cpu / total * 1e6, 1), "events_per_s": round(total / wall)}


ROW_STEPS = (
    ("as migrated: PK, time index, FK to orgs; ON CONFLICT", (), COPY_INSERT),
    ("without the FK to orgs", ("ALTER TABLE audit_events DROP CONSTRAINT "
                                "audit_events_org_id_fkey",), COPY_INSERT),
    ("also without the (org_id, event_time) index", ("DROP INDEX audit_events_time_idx",),
     COPY_INSERT),
    ("also without ON CONFLICT (plain INSERT)", (), PLAIN_INSERT),
)


async def row_costs(url: str, total: int, problems: list[str]) -> list[dict]:
    """Part 2; alters audit_events step by step (the database is the bench's own)."""
    per_call, out = 5000, []
    conn = await connect(url)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        for step, (name, ddl, insert) in enumerate(ROW_STEPS):
            await conn.execute("TRUNCATE audit_events")
            for statement in ddl:
                await conn.execute(statement)
            copy_cpu = insert_cpu = 0.0
            for start in range(0, total, per_call):
                batch = records(f"rows{step}-{start}", min(per_call, total - start))
                rows = [(r["org_id"], r["app_id"], e["event_id"],
                         datetime.fromisoformat(e["event_time"]), e["action"], e["request_id"],
                         e["user_id"], e["model"], e["provider"], json.dumps(e["attributes"]))
                        for r in batch for e in r["events"]]
                async with conn.transaction():
                    await conn.execute(TEMP_TABLE)
                    before = cpu_seconds([pid])
                    await conn.copy_records_to_table("audit_in", records=rows, columns=COLUMNS)
                    copied = cpu_seconds([pid])
                    await conn.execute(insert)
                    insert_cpu += cpu_seconds([pid]) - copied
                    copy_cpu += copied - before
            stored = await conn.fetchval("SELECT count(*) FROM audit_events")
            if stored != total:
                problems.append(f"part 2, {name}: {stored} events stored of {total}")
            out.append({"audit_events": name, "copy_us": round(copy_cpu / total * 1e6, 1),
                        "insert_us": round(insert_cpu / total * 1e6, 1)})
    finally:
        await conn.close()
    return out


async def prepare(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO orgs (id) VALUES ($1)", ORG_ID)
    finally:
        await conn.close()


def report(context: dict, flushes: list[dict], rows: list[dict]) -> None:
    print("  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"\n**One flush call after another on one connection**, {context['events']:,} events "
          "per variant\n")
    print("| variant | events/call | calls | encode us/event (Python) | wall ms/call | "
          "Postgres CPU us/event | events/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in flushes:
        print(f"| {r['variant']} | {r['per_call']:,} | {r['calls']} | {r['encode_us']} | "
              f"{r['wall_ms_per_call']} | {r['pg_cpu_us']} | {r['events_per_s']:,} |")
    print("\n**Postgres CPU per stored event**, COPY into a temporary table then INSERT ... "
          "SELECT, 5,000 events per transaction\n")
    print("| audit_events | COPY us/event | INSERT ... SELECT us/event | total |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['audit_events']} | {r['copy_us']} | {r['insert_us']} | "
              f"{r['copy_us'] + r['insert_us']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per variant")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="Postgres server on which the bench creates (and drops) a fresh "
                             f"database; 'embedded' starts a private one "
                             f"(default {DEFAULT_DATABASE_URL})")
    parser.add_argument("--json", type=Path, help="also write context and figures as JSON")
    args = parser.parse_args()
    if args.events < 5000:
        parser.error("--events must be at least 5000")
    context = {"utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "loadavg": loadavg(),
               **machine(),
               "database": "embedded" if args.database_url == "embedded" else "external",
               "events": args.events}
    problems: list[str] = []
    flushes: list[dict] = []
    try:
        with (tempfile.TemporaryDirectory(prefix="warden-bench-",
                                          ignore_cleanup_errors=True) as tmp,
              database_server(args.database_url, Path(tmp)) as base_url,
              fresh_database(base_url) as url):
            asyncio.run(prepare(url))
            # Twice, alternating, so that a burst of load elsewhere shows as a disagreement.
            for _ in range(2):
                for per_call in (1000, 5000):
                    for name, apply in (("jsonb_to_recordset (today)", apply_jsonb),
                                        ("COPY + INSERT SELECT", apply_copy)):
                        print(f"{name}, {per_call} per call ...", file=sys.stderr)
                        flushes.append(asyncio.run(flush_variant(
                            url, name, apply, per_call, args.events, problems)))
            print("part 2 ...", file=sys.stderr)
            rows = asyncio.run(row_costs(url, args.events, problems))
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")
    context["loadavg_end"] = loadavg()
    report(context, flushes, rows)
    if args.json:
        args.json.write_text(json.dumps({"context": context, "flush": flushes, "rows": rows,
                                         "problems": problems}, indent=2) + "\n")
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
