"""The audit trail never loses an acknowledged event: StreamAudit through real sidecar processes
killed with SIGKILL at several points, a Postgres stopped mid-stream, and a full journal that
pushes back instead of dropping."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from tests.conftest import Client, settings_for
from tests.helpers import authorize_request, expect_error, tenant
from warden.app import App
from warden.flusher import REJECTED
from warden.records import rows_of_events
from warden.v1 import warden_pb2

EVENTS = 20_000
PER_STREAM, PER_MESSAGE = 100, 20
CALL_SECONDS = 30.0


def _stream(key: str, first: int):
    """One stream of PER_STREAM events with ids first..first+PER_STREAM-1."""
    async def messages():
        for m in range(0, PER_STREAM, PER_MESSAGE):
            yield warden_pb2.StreamAuditRequest(
                api_key=key if m == 0 else "",
                events=[warden_pb2.AuditEvent(event_id=f"ev{first + m + i}", action="llm.call",
                                              model="gpt-4o-mini") for i in range(PER_MESSAGE)])
    return messages()


class Sender:
    """Streams EVENTS events, `concurrency` streams at a time; remembers which were
    acknowledged (their stream answered OK)."""

    def __init__(self, stub_of, key: str, concurrency: int = 8) -> None:
        self.stub_of, self.key, self.concurrency = stub_of, key, concurrency
        self.acknowledged: set[str] = set()
        self.failed: Counter = Counter()
        self.stop = asyncio.Event()

    async def run(self, on_ack=None) -> None:
        queue = list(range(0, EVENTS, PER_STREAM))

        async def worker() -> None:
            while queue and not self.stop.is_set():
                first = queue.pop(0)
                try:
                    reply = await self.stub_of().StreamAudit(_stream(self.key, first),
                                                             timeout=CALL_SECONDS)
                except grpc.aio.AioRpcError as exc:
                    self.failed[exc.code().name] += 1
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        queue.append(first)  # the database or the sidecar is away: again
                        await asyncio.sleep(0.05)
                    continue
                assert reply.accepted == PER_STREAM
                self.acknowledged.update(f"ev{first + i}" for i in range(PER_STREAM))
                if on_ack:
                    on_ack()

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))


async def _stored(db) -> list[str]:
    return [r["event_id"] for r in await db.fetch(
        "SELECT event_id FROM audit_events WHERE action = 'llm.call'")]


@pytest.mark.parametrize("kill_at", [0.1, 0.5, 0.9])
async def test_acknowledged_events_survive_sigkill(db_url, db, fleet, tmp_path, kill_at):
    car = await fleet.start("a1", db_url, data_dir=tmp_path / "data")
    key = await tenant(car.client)
    sender = Sender(lambda: car.warden, key)

    def maybe_kill() -> None:
        if len(sender.acknowledged) >= kill_at * EVENTS and not sender.stop.is_set():
            sender.stop.set()
            car.proc.send_signal(signal.SIGKILL)

    await sender.run(maybe_kill)
    assert await car.proc.wait() == -signal.SIGKILL
    # The next start on the same data directory applies what the killed process journaled.
    again = await fleet.start("a2", db_url, data_dir=tmp_path / "data")
    await fleet.stop_all_cleanly([again])
    stored = await _stored(db)
    print(f"\nkilled at {kill_at:.0%}: acknowledged {len(sender.acknowledged)}, "
          f"stored {len(stored)}, failed in flight {dict(sender.failed)}")
    assert len(sender.acknowledged) >= kill_at * EVENTS
    assert not sender.acknowledged - set(stored), "acknowledged events lost"
    assert len(stored) == len(set(stored))  # (org, event id) is the key: once each
    # Streams cut off by the kill may be stored, but nothing that was never sent.
    assert set(stored) <= {f"ev{i}" for i in range(EVENTS)}


@pytest.mark.timeout(180)
async def test_postgres_stopped_mid_stream_loses_nothing(private_pg, fleet):
    car = await fleet.start("o1", private_pg.url, WARDEN_MIGRATE="true",
                            WARDEN_HEALTH_INTERVAL_SECONDS="0.2")
    key = await tenant(car.client)
    sender = Sender(lambda: car.warden, key, concurrency=4)
    outage = asyncio.Event()

    def stop_midway() -> None:
        if len(sender.acknowledged) >= EVENTS // 4 and not outage.is_set():
            outage.set()

    sending = asyncio.create_task(sender.run(stop_midway))
    await asyncio.wait_for(outage.wait(), 60)
    before = len(sender.acknowledged)
    await asyncio.to_thread(private_pg.stop)
    await asyncio.sleep(3)  # streams go on into the journal
    during = len(sender.acknowledged) - before
    await asyncio.to_thread(private_pg.start)
    await asyncio.wait_for(sending, 120)
    await fleet.stop_all_cleanly([car])  # drains the journal
    conn = await asyncpg.connect(private_pg.url)
    try:
        stored = await _stored(conn)
    finally:
        await conn.close()
    print(f"\noutage: acknowledged {len(sender.acknowledged)} ({during} while Postgres was "
          f"stopped), stored {len(stored)}, failed {dict(sender.failed)}")
    assert during > 0, "the sidecar was meant to keep acknowledging while Postgres was away"
    assert sender.acknowledged == set(stored) == {f"ev{i}" for i in range(EVENTS)}


async def test_a_full_journal_pushes_back_and_then_stores_everything(db_url, db, tmp_path):
    # Nothing drains on its own (an hour between flushes): the journal fills.
    app = App(settings_for(db_url, str(tmp_path), journal_max_bytes="20000",
                           journal_flush_seconds="3600"))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.target) as channel:
            client = Client(channel)
            key = await tenant(client)
            acknowledged, first = set(), 0
            while True:
                call = client.warden.StreamAudit(_stream(key, first))
                try:
                    await call
                except grpc.aio.AioRpcError:
                    break
                acknowledged.update(f"ev{first + i}" for i in range(PER_STREAM))
                first += PER_STREAM
                assert first < EVENTS, "the journal never filled"
            error = await expect_error(client.warden.StreamAudit(_stream(key, first)))
            assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                  "JOURNAL_FULL")
            assert error.retry_seconds and error.retry_seconds > 0
            assert "WARDEN_JOURNAL_MAX_BYTES" in error.message
            assert acknowledged
            await app.components.flusher.flush()
            # Room again: the refused stream is sent again and accepted.
            reply = await client.warden.StreamAudit(_stream(key, first))
            assert reply.accepted == PER_STREAM
            acknowledged.update(f"ev{first + i}" for i in range(PER_STREAM))
            await app.components.flusher.flush()
        assert set(await _stored(db)) == acknowledged
    finally:
        await app.stop()


async def test_a_record_the_database_refuses_is_set_aside_and_the_rest_stored(client, db,
                                                                              warden):
    """A journal record holding a value Postgres cannot store (here NUL, which the API
    refuses, so it is put in the journal directly, as an older sidecar might have left it:
    once as events in the record's JSON, as Warden journaled them before it used COPY, once as
    COPY rows) does not hold back the records around it: the flush finds it by halving the
    batch, stores the rest in order and sets it aside in rejected.jsonl."""
    key = await tenant(client)
    dropped = REGISTRY.get_sample_value("warden_journal_dropped_total",
                                        {"kind": "rejected"}) or 0.0

    async def audit(*ids: str) -> None:
        await client.warden.Audit(warden_pb2.AuditRequest(api_key=key, events=[
            warden_pb2.AuditEvent(event_id=i, action="llm.call") for i in ids]))

    await audit("before")
    for i in range(20):
        await client.warden.Authorize(authorize_request(key, f"r{i}"))
        if i == 7:
            bad = {"event_id": "bad", "event_time": datetime.now(UTC).isoformat(),
                   "action": "x\x00y", "request_id": "", "user_id": "", "model": "",
                   "provider": "", "attributes": {}}
            warden.components.journal.append({"kind": "audit", "org_id": "acme", "app_id": "chat",
                                           "events": [bad]})
            await audit("middle")
        if i == 13:
            warden.components.journal.append({"kind": "audit", "rows": 1}, rows_of_events(
                {"org_id": "acme", "app_id": "chat", "events": [bad]}))
    await audit("after")
    await warden.components.flusher.flush()

    assert warden.components.journal.pending() == 0
    stored = {r["event_id"] for r in await db.fetch(
        "SELECT event_id FROM audit_events WHERE action = 'llm.call'")}
    assert stored == {"before", "middle", "after"}
    assert await db.fetchval("SELECT count(*) FROM requests") == 20
    lines = (warden.components.journal.directory / REJECTED).read_text().splitlines()
    assert len(lines) == 2
    old, rows = map(json.loads, lines)
    assert old["record"]["events"][0]["action"] == "x\x00y"
    assert rows["record"] == {"kind": "audit", "rows": 1}
    assert "\tx\x00y\t" in rows["payload"]
    for rejected in (old, rows):
        assert rejected["error"].startswith("CharacterNotInRepertoireError")
    assert REGISTRY.get_sample_value("warden_journal_dropped_total",
                                     {"kind": "rejected"}) == dropped + 2
