"""The DecisionLog contract (store/base.py): applying journal records is idempotent (a replay
after a crash stores nothing twice and is no request-id conflict); a reservation is settled
once, by the sidecar that made it: its own usage record carries its adjustments, and usage
another sidecar stored is handed over to it once (or settled at expiry if it never claims
it); values that can never be stored are refused as such."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from warden.engine import AuthorizeInput, Decision, Identity, Part, Reason, Route
from warden.engine.pricing import Price
from warden.errors import StoreRefused
from warden.records import copy_rows, decision_record
from warden.store.base import Batch, DecisionLog
from warden.store.decision_log import PostgresDecisionLog
from warden.store.postgres import create_pool

IDENTITY = Identity("acme", "chat", "key_1")
NOW = datetime.now(UTC).replace(microsecond=0)
BUCKET = NOW.replace(second=0)


@pytest.fixture(params=["postgres"])
async def log(request, db_url) -> AsyncIterator[DecisionLog]:
    pool = await create_pool(db_url, 1, 4, 30)
    conn = await asyncpg.connect(db_url)
    await conn.execute("INSERT INTO orgs (id) VALUES ('acme')")
    await conn.execute(
        "INSERT INTO policies (id, org_id, scope_kind, scope_id, policy_type, mode,"
        " failure_mode, config) VALUES ('tpm', 'acme', 'org', 'acme', 'rate_limit',"
        " 'enforce', 'fail_open', '{}')")
    # As if a lease of 1,000 had been spent on reservations.
    await conn.execute("INSERT INTO quota_buckets VALUES ('tpm', $1, 1000)", BUCKET)
    await conn.close()
    try:
        yield PostgresDecisionLog(pool)
    finally:
        await pool.close()


@pytest.fixture
async def counted(db):
    async def granted() -> int:
        return await db.fetchval("SELECT sum(granted) FROM quota_buckets WHERE policy_id = 'tpm'")
    return granted


def decision(request_id: str, decision_id: str, amount: int = 300, allowed: bool = True,
             price: Price | None = None) -> bytes:
    parts = (Part("tpm", BUCKET, "TOTAL_TOKENS", amount, BUCKET.isoformat()),) if allowed else ()
    made = Decision(allowed, Reason.ALLOWED if allowed else Reason.RATE_LIMITED, [], [],
                    route=Route("openai", "gpt-4o", 200) if allowed else None)
    record = decision_record(IDENTITY, AuthorizeInput(request_id, "gpt-4o", input_tokens=100),
                             made, decision_id, parts, 50, price, NOW.isoformat(),
                             (NOW + timedelta(hours=1)).isoformat())
    return json.dumps(record).encode()


def usage(request_id: str, tokens: tuple[int, int] = (100, 50),
          adjustments: list[dict] | None = None) -> bytes:
    return json.dumps({
        "kind": "usage", "org_id": "acme", "request_id": request_id,
        "input_tokens": tokens[0], "output_tokens": tokens[1], "cached_input_tokens": 0,
        "model": "gpt-4o", "provider": "openai", "outcome": "completed", "latency_ms": None,
        "cost_micros": 7, "cost_source": "reported", "record_time": NOW.isoformat(),
        "adjustments": adjustments or []}).encode()


def refund(delta: int) -> list[dict]:
    return [{"policy_id": "tpm", "bucket_start": BUCKET.isoformat(), "delta": delta}]


def batch(decisions=(), usages=(), audit=(), fresh=True, sidecar="a") -> Batch:
    """What sidecar `sidecar` flushes (by default "a", which makes every decision here)."""
    return Batch(list(decisions), list(usages), list(audit), fresh, sidecar)


async def test_a_replayed_decision_is_logged_once_and_is_no_conflict(log, db) -> None:
    first = await log.apply(batch([decision("r1", "d1"), decision("r2", "d2")]))
    replay = await log.apply(batch([decision("r1", "d1"), decision("r2", "d2")]))
    assert (first.conflicting, replay.conflicting) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM requests") == 2


async def test_a_request_id_reused_for_another_decision_is_a_conflict(log, db) -> None:
    await log.apply(batch([decision("r1", "d1")]))
    again = await log.apply(batch([decision("r1", "other")]))
    assert again.conflicting == 1
    assert await db.fetchval("SELECT decision_id FROM requests") == "d1"


async def test_the_owners_usage_applies_its_adjustments_once(log, db, counted) -> None:
    # 150 of 300 used: the owner refunded 100 into its lease, the record carries the rest.
    await log.apply(batch([decision("r1", "d1")], [usage("r1", adjustments=refund(-50))]))
    assert await counted() == 950
    replay = await log.apply(batch([decision("r1", "d1")], [usage("r1", adjustments=refund(-50))]))
    assert await counted() == 950 and not replay.settled_elsewhere
    assert await db.fetchval("SELECT input_tokens FROM usage") == 100


async def test_usage_stored_by_another_sidecar_is_handed_to_the_owner_once(log, db,
                                                                           counted) -> None:
    await log.apply(batch([decision("r1", "d1")]))
    stored = await log.apply(batch([], [usage("r1", (120, 30))], sidecar="b"))
    assert not stored.settled_elsewhere  # b does not own it
    assert await counted() == 1000  # nothing settled yet: the owner will
    claim = await log.apply(batch(sidecar="a"))  # an empty batch claims too
    (handed,) = claim.settled_elsewhere
    assert (handed.org_id, handed.request_id) == ("acme", "r1")
    assert (handed.usage["input_tokens"], handed.usage["output_tokens"]) == (120, 30)
    assert handed.parts == (Part("tpm", BUCKET, "TOTAL_TOKENS", 300, BUCKET.isoformat()),)
    assert not (await log.apply(batch(sidecar="a"))).settled_elsewhere  # once
    # The owner's own record, retried there too, comes second: not stored, applies nothing.
    await log.apply(batch([], [usage("r1", adjustments=refund(-150))]))
    assert await counted() == 1000
    assert await db.fetchval("SELECT input_tokens FROM usage") == 120


async def test_usage_held_for_an_owner_that_never_claims_it_is_settled_at_expiry(
        log, db, counted) -> None:
    await log.apply(batch([decision("r1", "d1")]))
    await log.apply(batch([], [usage("r1", (100, 50))], sidecar="b"))
    await db.execute("UPDATE requests SET expire_time = now() - interval '1 second'")
    assert not (await log.apply(batch(sidecar="a"))).settled_elsewhere  # too late to claim
    await log.expire(100)
    assert await counted() == 1000 - 300 + 150
    await log.expire(100)
    assert await counted() == 850


async def test_usage_of_an_unknown_or_denied_request_is_an_orphan(log, db) -> None:
    await log.apply(batch([decision("denied", "d1", allowed=False)]))
    applied = await log.apply(batch([], [usage("nobody"), usage("denied")]))
    assert applied.usage_orphaned == 2
    assert await db.fetchval("SELECT count(*) FROM usage") == 0


async def test_the_reservation_reads_back_with_its_parts_price_and_usage(log) -> None:
    assert await log.reservation("acme", "r1") is None
    price = Price(1_000_000, 2_000_000, 500_000)
    await log.apply(batch([decision("r1", "d1", price=price)]))
    stored = await log.reservation("acme", "r1")
    assert (stored.allowed, stored.reservation_id, stored.model, stored.price) == (
        True, "d1", "gpt-4o", price)
    assert stored.parts == (Part("tpm", BUCKET, "TOTAL_TOKENS", 300, BUCKET.isoformat()),)
    assert stored.usage is None
    await log.apply(batch([], [usage("r1")]))
    assert (await log.reservation("acme", "r1")).usage["input_tokens"] == 100
    assert stored.owner == "a"


async def test_an_expired_reservation_is_settled_at_its_amount_then_replaced(log, db, counted
                                                                             ) -> None:
    await log.apply(batch([decision("r1", "d1")]))
    await db.execute("UPDATE requests SET expire_time = now() - interval '1 second'")
    assert await log.expire(100) == 1
    assert await log.expire(100) == 0
    assert await db.fetchval("SELECT outcome FROM usage") == "expired"
    assert await counted() == 1000
    await log.apply(batch([], [usage("r1", adjustments=refund(-150))]))
    assert await db.fetchval("SELECT outcome FROM usage") == "completed"
    assert await counted() == 850


async def test_a_value_that_can_never_be_stored_is_refused(log, db) -> None:
    bad = json.loads(decision("r1", "d1"))
    bad["user_id"] = "nul\u0000"
    with pytest.raises(StoreRefused):
        await log.apply(batch([json.dumps(bad).encode()]))
    assert await db.fetchval("SELECT count(*) FROM requests") == 0


async def test_audit_events_are_stored_once_and_an_unknown_org_is_counted(log, db) -> None:
    events = [{"event_id": f"e{i}", "event_time": NOW.isoformat(), "action": "llm.call",
               "request_id": "", "user_id": "", "model": "", "provider": "",
               "attributes": "{}"} for i in range(3)]
    rows = copy_rows("acme", "chat", events)
    for fresh in (True, True, False):  # a retry goes the careful way after the direct COPY
        await log.apply(batch(audit=[(rows, True)], fresh=fresh))
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 3
    orphan = await log.apply(batch(audit=[(copy_rows("nobody", "chat", events), True)],
                                   fresh=False))
    assert orphan.audit_orphaned == 3
