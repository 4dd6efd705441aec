"""audit_events by month: events land in their month's partition, a replayed journal stores each
event once, retention drops whole partitions, the default partition catches what has no month
yet, and the migration moves the rows of an unpartitioned table."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.struct_pb2 import Struct
from prometheus_client import REGISTRY

from tests.conftest import Client, settings_for
from tests.helpers import tenant
from warden.app import App
from warden.journal import Journal
from warden.records import batch_entry, copy_rows, rows_of_events
from warden.store.audit_partitions import Maintenance, maintain_audit_partitions
from warden.store.base import BudgetAlert
from warden.store.counters import _ALERT, _ALERT_LOCK, PostgresCounterStore
from warden.store.decision_log import store
from warden.store.migrate import check_schema, known_migrations, migrate
from warden.store.postgres import init_connection
from warden.v1 import warden_pb2

TEXT_FIELDS = ("action", "request_id", "user_id", "model", "provider")


def partition(when: datetime) -> str:
    return f"audit_events_{when.astimezone(UTC):%Y%m}"


def event(event_id: str, when: datetime | None = None) -> warden_pb2.AuditEvent:
    time = None
    if when is not None:
        time = timestamp_pb2.Timestamp()
        time.FromDatetime(when)
    return warden_pb2.AuditEvent(event_id=event_id, action="llm.call", time=time)


async def placed(db) -> dict[str, str]:
    """event id -> the partition holding it."""
    return {r["event_id"]: r["part"] for r in await db.fetch(
        "SELECT event_id, tableoid::regclass::text AS part FROM audit_events")}


async def partitions(db) -> set[str]:
    return {r[0] for r in await db.fetch(
        "SELECT inhrelid::regclass::text FROM pg_inherits"
        " WHERE inhparent = 'audit_events'::regclass")}


async def maintain(pool, retention: timedelta | None) -> Maintenance:
    """Run the maintenance, waiting out a round another sidecar may be doing."""
    for _ in range(100):
        done = await maintain_audit_partitions(pool, retention)
        if done.ran:
            return done
        await asyncio.sleep(0.05)
    raise AssertionError("the audit maintenance lock was never free")


def counted(change: str) -> float:
    return REGISTRY.get_sample_value("warden_audit_partitions_total", {"change": change}) or 0.0


async def test_events_land_in_the_partition_of_their_month(client, db, warden):
    key = await tenant(client)
    now = datetime.now(UTC)
    times = {"now": now, "20d": now - timedelta(days=20), "29d": now - timedelta(days=29),
             "ahead": now + timedelta(minutes=4)}
    await client.warden.Audit(warden_pb2.AuditRequest(
        api_key=key, events=[event(name, when) for name, when in times.items()]
        + [event("assigned")]))
    await warden.components.flusher.flush()
    where = await placed(db)
    assert where == {**{name: partition(when) for name, when in times.items()},
                     "assigned": partition(now)}
    assert "audit_events_default" not in where.values()
    # The month before, this one and three ahead exist: normal traffic never needs the default.
    month = now.replace(day=15)
    assert {partition(month + timedelta(days=30 * k)) for k in range(-1, 4)} <= \
        await partitions(db)


async def test_a_journal_applied_twice_stores_each_event_once(db_url, db, tmp_path):
    """A crash after the flush committed but before the segment was removed replays it: here
    the segment is copied before the flush and put back after, and the next start applies it
    again. Events with a time of their own and with one the sidecar assigned are each stored
    once, with the time they were acknowledged with."""
    settings = settings_for(db_url, str(tmp_path), journal_flush_seconds="3600")
    app = App(settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.target) as channel:
            client = Client(channel)
            key = await tenant(client)
            old = datetime.now(UTC) - timedelta(days=25)
            await client.warden.Audit(warden_pb2.AuditRequest(
                api_key=key, events=[event("given", old), event("assigned")]
                + [event(f"bulk{i}") for i in range(300)]))
            # A retry of the same ids: the sidecar assigns their times again.
            await client.warden.Audit(warden_pb2.AuditRequest(
                api_key=key, events=[event("assigned"), event("bulk7")]))
        journal = tmp_path / "journal"
        saved = tmp_path / "saved"
        saved.mkdir()
        for segment in journal.glob("*.wal"):
            shutil.copy(segment, saved / segment.name)
        assert list(saved.glob("*.wal"))
        await app.components.flusher.flush()
        # Another flush now, with the ids already stored: nothing more.
        await client_retry(app, key)
        first = {r["event_id"]: r["event_time"] for r in await db.fetch(
            "SELECT event_id, event_time FROM audit_events")}
        assert await db.fetchval("SELECT count(*) FROM audit_events") == len(first) == 302
    finally:
        await app.stop()
    assert first["given"] == old

    for segment in saved.glob("*.wal"):
        shutil.copy(segment, journal / segment.name)
    again = App(settings)
    await again.start()  # applies what it finds in the journal before serving
    try:
        assert again.components.journal.pending() == 0  # applied, not failed and kept
    finally:
        await again.stop()
    rows = await db.fetch("SELECT event_id, event_time FROM audit_events")
    assert len(rows) == 302
    assert {r["event_id"]: r["event_time"] for r in rows} == first


async def test_the_same_batch_applied_at_the_same_moment_is_stored_once(client, db, warden):
    """The key, not the look-up before the insert, settles a race: the second application
    waits on the first's uncommitted rows, then skips them."""
    await tenant(client)
    when = datetime.now(UTC).isoformat()
    batch = [{"kind": "audit", "org_id": "acme", "app_id": "chat", "events": [
        {"event_id": f"r{i}", "event_time": when, "action": "llm.call", "request_id": "",
         "user_id": "", "model": "", "provider": "", "attributes": {}} for i in range(50)]}]
    async with warden._pool.acquire() as first, first.transaction():
        await store(first, "[]", "[]", [rows_of_events(batch[0])])
        racing = asyncio.create_task(
            warden.components.flusher.apply([("audit", json.dumps(batch[0]).encode())]))
        await asyncio.sleep(0.5)
        assert not racing.done()
    await racing
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 50


async def test_every_character_an_event_may_hold_is_stored_as_sent(client, db, warden):
    """COPY's text format gives tab, newline, carriage return and backslash meanings of their
    own: in any field, attribute key or value they must arrive as sent, alone or together, as
    must quotes, non-ASCII text and what looks like an escape."""
    key = await tenant(client)
    texts = ["a\tb", "a\nb", "a\rb", "a\\b",
             'a\tb\nc\rd\\e"f\\N g\\tH é 中文 🙂 \x01 \\u0000']
    sent = {}
    for i, text in enumerate(texts):
        # Once in the fields, once in the attributes: JSON's escapes are backslashes, so
        # attributes alone would hide a field's unescaped tab.
        for fields, attributes in (([text] * 5, {"plain": 1.0}),
                                   (["llm.call", "", "", "", ""],
                                    {text: text, f"{text}[]": [text, 1.5, True, None, {"n": text}],
                                     "n": -2.5e-300, "t": True, "f": False, "z": None})):
            event_id = f"{i}.{len(sent)}{text}"
            sent[event_id] = (fields, attributes)
            struct = Struct()
            struct.update(attributes)
            await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[
                warden_pb2.AuditEvent(event_id=event_id, attributes=struct,
                                      **dict(zip(TEXT_FIELDS, fields, strict=True)))]))
    await warden.components.flusher.flush()
    stored = {r["event_id"]: ([r[f] for f in TEXT_FIELDS], json.loads(r["attributes"]))
              for r in await db.fetch("SELECT * FROM audit_events")}
    assert stored == sent


async def test_events_of_an_org_the_database_lacks_are_counted_not_stored(client, db, warden):
    """Without a foreign key (migration 0005) the flush is what keeps them out: a journal
    replayed against another database, say."""
    await tenant(client)
    dropped = {"kind": "audit_orphan"}
    before = REGISTRY.get_sample_value("warden_journal_dropped_total", dropped) or 0.0
    when = datetime.now(UTC).isoformat()
    events = [{"event_id": f"o{i}", "event_time": when, "action": "llm.call", "request_id": "",
               "user_id": "", "model": "", "provider": "", "attributes": {}} for i in range(3)]
    await warden.components.flusher.apply([
        ("audit", json.dumps({"org_id": org, "app_id": "chat", "events": events}).encode())
        for org in ("nobody", "acme")])
    assert await db.fetchval("SELECT array_agg(DISTINCT org_id) FROM audit_events") == ["acme"]
    assert REGISTRY.get_sample_value("warden_journal_dropped_total", dropped) == before + 3


async def test_a_copy_already_stored_sends_its_batch_the_careful_way(client, db, warden):
    """Events with the caller's time go straight into audit_events; a batch holding a copy of
    one already stored fails that COPY and is applied again through ON CONFLICT, once. Copies
    of an id with different caller times are different events to the key, either way."""
    key = await tenant(client)
    now = datetime.now(UTC)
    first, later = now - timedelta(seconds=2), now - timedelta(seconds=1)
    await client.warden.Audit(warden_pb2.AuditRequest(
        api_key=key, events=[event("kept", first), event("twice", first)]))
    await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[event("twice", later)]))
    await warden.components.flusher.flush()
    # No copy was stored already: no careful way.
    assert warden.components.stores.decision_log._direct_after == 0

    # A caller's retry of "kept" (same id and time), with new events, in one flush batch.
    await client.warden.Audit(warden_pb2.AuditRequest(
        api_key=key, events=[event("kept", first), event("new", now), event("new2", first)]))
    await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[event("new2", later)]))
    await warden.components.flusher.flush()
    # The direct COPY failed; applied the careful way.
    assert warden.components.stores.decision_log._direct_after > 0
    rows = await db.fetch("SELECT event_id, event_time FROM audit_events ORDER BY 1, 2")
    assert [(r["event_id"], r["event_time"]) for r in rows] == [
        ("kept", first), ("new", now), ("new2", first), ("new2", later),
        ("twice", first), ("twice", later)]


async def test_a_journal_an_earlier_run_left_never_skips_the_org_check(db_url, db, tmp_path):
    """Rows an earlier run journaled may belong to another database's org: they take the
    careful way, which counts them instead of storing them."""
    journal = Journal(tmp_path / "journal", keep=batch_entry)
    journal.open()
    events = [{"event_id": f"e{i}", "event_time": datetime.now(UTC).isoformat(),
               "action": "llm.call", "request_id": "", "user_id": "", "model": "",
               "provider": "", "attributes": "{}"} for i in range(3)]
    await journal.sync(journal.append({"kind": "audit", "rows": 3},
                                      copy_rows("nobody", "chat", events)))
    await journal.close()
    dropped = {"kind": "audit_orphan"}
    before = REGISTRY.get_sample_value("warden_journal_dropped_total", dropped) or 0.0
    app = App(settings_for(db_url, str(tmp_path)))
    await app.start()  # applies what it finds in the journal before serving
    try:
        assert app.components.journal.pending() == 0
    finally:
        await app.stop()
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 0
    assert REGISTRY.get_sample_value("warden_journal_dropped_total", dropped) == before + 3


async def client_retry(app: App, key: str) -> None:
    async with grpc.aio.insecure_channel(app.target) as channel:
        await Client(channel).warden.Audit(warden_pb2.AuditRequest(
            api_key=key, events=[event("assigned"), event("bulk9")]))
    await app.components.flusher.flush()


async def test_retention_drops_whole_old_partitions_and_keeps_recent_ones(client, db, warden):
    key = await tenant(client)
    await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[event("recent")]))
    await warden.components.flusher.flush()
    # Two old months, made the way the sidecar makes them, holding an old event.
    assert await db.fetchval("SELECT warden_audit_partitions('2020-01-15Z', 0)") == 2
    await db.execute("INSERT INTO audit_events (org_id, event_id, app_id, event_time, action)"
                     " VALUES ('acme', 'old', 'chat', '2020-01-31 23:59:59Z', 'llm.call')")
    assert (await placed(db))["old"] == "audit_events_202001"
    current = partition(datetime.now(UTC))
    before = counted("dropped")

    assert (await maintain(warden._pool, None)).dropped == []  # 0 days: keep forever
    done = await maintain(warden._pool, timedelta(days=180))
    assert done.dropped == ["audit_events_201912", "audit_events_202001"]
    assert counted("dropped") == before + 2
    left = await partitions(db)
    assert not {"audit_events_201912", "audit_events_202001"} & left
    assert {current, "audit_events_default"} <= left
    assert await placed(db) == {"recent": current}
    # A month goes once all of it is past the retention, not before.
    now = datetime.now(UTC)
    into_month = now - now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = partition(now.replace(day=1) - timedelta(days=1))
    assert (await maintain(warden._pool, into_month + timedelta(minutes=1))).dropped == []
    done = await maintain(warden._pool, into_month - timedelta(minutes=1))
    assert done.dropped == [previous]
    assert current in await partitions(db)


async def test_the_sidecar_keeps_partitions_before_it_serves(db_url, db, tmp_path):
    assert await db.fetchval("SELECT warden_audit_partitions('2021-06-10Z', 0)") == 2
    ahead = datetime.now(UTC).replace(day=15) + timedelta(days=30 * 3)
    await db.execute(f"DROP TABLE {partition(ahead)}")  # as if made before this month
    app = App(settings_for(db_url, str(tmp_path), audit_retention_days="200"))
    await app.start()
    try:
        parts = await partitions(db)
        assert partition(ahead) in parts
        assert not {"audit_events_202105", "audit_events_202106"} & parts
    finally:
        await app.stop()


async def test_only_one_sidecar_maintains_at_a_time(warden, db):
    async with db.transaction():
        # Waits for the lock, should another sidecar be doing a round.
        await db.execute("SELECT pg_advisory_xact_lock($1)", 0x5741524441554454)
        assert await maintain_audit_partitions(warden._pool, timedelta(days=1)) == \
            Maintenance(ran=False)
    assert (await maintain(warden._pool, None)).ran


async def test_the_default_partition_catches_an_event_with_no_partition(client, db, warden):
    key = await tenant(client)
    now = datetime.now(UTC)
    current = partition(now)
    await db.execute(f"DROP TABLE {current}")  # as if maintenance had never run this month
    failures = REGISTRY.get_sample_value("warden_journal_flush_failures_total") or 0.0

    await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[event("homeless")]))
    await warden.components.flusher.flush()
    assert await placed(db) == {"homeless": "audit_events_default"}
    # A journal replayed long after: its month's partition was dropped by retention.
    await warden.components.audit_log.append(await warden.components.callers.by_subject(
        "acme", "chat"), [{
        "event_id": "late", "event_time": "2019-03-03T03:03:03+00:00", "action": "llm.call",
        "request_id": "", "user_id": "", "model": "", "provider": "", "attributes": "{}"}])
    await warden.components.flusher.flush()
    assert (await placed(db))["late"] == "audit_events_default"
    assert (REGISTRY.get_sample_value("warden_journal_flush_failures_total") or 0.0) == failures
    assert warden.components.journal.pending() == 0

    # Maintenance makes the missing months and moves the rows in: Postgres would refuse to
    # create a partition whose rows sit in the default one.
    done = await maintain(warden._pool, None)
    assert done.created == 2
    assert await placed(db) == {"homeless": current, "late": "audit_events_201903"}
    assert await db.fetchval("SELECT count(*) FROM audit_events_default") == 0
    # ... and retention then drops the old month whole.
    done = await maintain(warden._pool, timedelta(days=180))
    assert done.dropped == ["audit_events_201903"]
    assert await placed(db) == {"homeless": current}


async def test_concurrent_budget_alerts_with_different_times_store_one_event(client, db,
                                                                            warden):
    """The alert's id is the same on every sidecar, its time is each one's own: the key holds
    the time, so sidecars take turns on the id. Another sidecar's insert is held uncommitted
    here while this one tries."""
    await tenant(client)
    await db.execute("INSERT INTO policies (id, org_id, scope_kind, scope_id, policy_type, mode,"
                     " failure_mode, config) VALUES ('b1', 'acme', 'org', 'acme', 'budget',"
                     " 'enforce', 'fail_closed', '{}')")
    now = datetime.now(UTC)
    alert_id = "budget-alert:b1:2024-01-01T00:00:00+00:00"
    other = await asyncpg.connect(warden.database_url)
    try:
        async with other.transaction():
            await other.execute(_ALERT_LOCK, alert_id)
            assert await other.fetchval(_ALERT, "b1", alert_id, now, json.dumps({"n": 1}))
            mine = asyncio.create_task(PostgresCounterStore(warden._pool).raise_alert(
                BudgetAlert("b1", alert_id, now + timedelta(seconds=1), {"n": 2})))
            await asyncio.sleep(0.5)
            assert not mine.done()  # waits for the other's turn
        assert await mine is False
    finally:
        await other.close()
    rows = await db.fetch("SELECT event_time FROM audit_events WHERE event_id = $1", alert_id)
    assert [r["event_time"] for r in rows] == [now]


async def test_the_migration_moves_the_rows_of_the_unpartitioned_table(empty_db):
    conn = await asyncpg.connect(empty_db)
    try:
        before = known_migrations()[:3]
        await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                           " name text NOT NULL, checksum text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for m in before:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                                   m.version, m.name, m.checksum)
        now = datetime.now(UTC)
        await conn.execute("INSERT INTO orgs (id) VALUES ('acme'), ('globex')")
        rows = [("acme", "a", "chat", datetime(2023, 5, 31, 23, 59, tzinfo=UTC), "r1"),
                ("acme", "b", "chat", datetime(2023, 6, 1, tzinfo=UTC), "r1"),
                ("globex", "a", "bot", now, ""),
                ("globex", "c", "bot", now - timedelta(days=40), "")]
        await conn.executemany(
            "INSERT INTO audit_events (org_id, event_id, app_id, event_time, action, request_id,"
            " attributes) VALUES ($1, $2, $3, $4, 'llm.call', $5, '{\"k\": 1}')", rows)
        old = await conn.fetch("SELECT * FROM audit_events ORDER BY org_id, event_id")

        assert await migrate(conn) == [m.version for m in known_migrations()[3:]]
        await check_schema(conn)
        moved = await conn.fetch("SELECT * FROM audit_events ORDER BY org_id, event_id")
        # 0007 marks every row stored before it as findable by id: who chose its time is
        # not known.
        assert [r["time_assigned"] for r in moved] == [True] * 4
        assert [{k: v for k, v in r.items() if k != "time_assigned"} for r in moved] == \
            [dict(r) for r in old]
        where = {(r["org_id"], r["event_id"]): r["part"] for r in await conn.fetch(
            "SELECT org_id, event_id, tableoid::regclass::text AS part FROM audit_events")}
        assert where == {("acme", "a"): "audit_events_202305", ("acme", "b"): "audit_events_202306",
                         ("globex", "a"): partition(now),
                         ("globex", "c"): partition(now - timedelta(days=40))}
        assert await conn.fetchval("SELECT to_regclass('audit_events_unpartitioned')") is None
        indexes = {r[0] for r in await conn.fetch(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index"
            " WHERE indrelid = 'audit_events'::regclass")}
        assert {i.split(" USING ")[1] for i in indexes} == {
            "btree (org_id, event_time, event_id)", "btree (org_id, event_id) WHERE time_assigned",
            "btree (org_id, app_id, event_time, event_id)", "btree (org_id, request_id)"}
        assert await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'audit_events'::regclass AND contype = 'p'") == \
            "PRIMARY KEY (org_id, event_time, event_id)"
        # A retry, sent without a time, of an event stored before 0007 is found by its id; a
        # new event without a time is stored, marked.
        await init_connection(conn)
        retry = {"kind": "audit", "org_id": "globex", "app_id": "bot", "events": [
            {"event_id": e, "event_time": now.isoformat(), "action": "llm.call",
             "request_id": "", "user_id": "", "model": "", "provider": "", "attributes": {},
             "time_assigned": True} for e in ("c", "d")]}
        await store(conn, "[]", "[]", [rows_of_events(retry)])
        assert [tuple(r) for r in await conn.fetch(
            "SELECT event_id, time_assigned FROM audit_events WHERE org_id = 'globex'"
            " ORDER BY event_id")] == [("a", True), ("c", True), ("d", True)]
        # 0005 drops the foreign key to orgs: the flush checks the org instead.
        assert not await conn.fetchval("SELECT count(*) FROM pg_constraint"
                                       " WHERE conrelid = 'audit_events'::regclass"
                                       " AND contype = 'f'")
    finally:
        await conn.close()
