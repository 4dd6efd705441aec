"""The Postgres DecisionLog: the decision log (requests), usage and audit events, applied from
each sidecar's journal by warden_apply_journal (migrations/0008) and COPY.

Audit events reach the flush as rows of COPY's text format, built when they are acknowledged
and journaled as the payload of their record: each flush COPYs its batch's rows into this
session's temporary table (AUDIT_IN, which init_connection makes), whose identity `n` keeps the
journal's order. COPY spares Postgres the parsing of a JSON document per batch.

The rows of events with the caller's time, in records this process journaled (a fresh batch),
skip that table: they are COPY'd straight into audit_events, which spares Postgres the
temporary table, the sort, the org check and ON CONFLICT. Their orgs exist (this process
accepted them with a key of the org; orgs are never deleted) and the key makes a copy already
stored fail the COPY: the batch is then applied again the careful way, and so are those of the
next DIRECT_PAUSE seconds. So a copy with the caller's time and id is stored once either way,
and copies of an id with different caller times are different events to the key either way.

One transaction: the decision log and usage (warden_apply_journal, its parameters the journal's own
JSON of those records, not encoded again) and the audit events of the batch (AUDIT_IN, and
the explanations that ride in decisions). audit_events is partitioned by event_time, so its
key is (org, event time, event id): a replayed record carries the time it was journaled with
and is stored once (ON CONFLICT, even when two replays race). A caller's retry that let the
sidecar assign the time again (time_assigned) differs in time only: such a copy is skipped
when the org already has the id among its time-assigned events (a partial index), or an
earlier record of the batch has it. (Two sidecars flushing such copies at the same moment may
both store theirs: docs/audit.md.) Events of an org the database does not have (a journal
replayed against another database) are not stored: counted.
"""

from __future__ import annotations

import time
from datetime import datetime

import asyncpg

from warden.engine import Part
from warden.errors import StoreRefused
from warden.records import price_from_json
from warden.store.base import Applied, Batch, SettledElsewhere, StoredReservation
from warden.store.postgres import AUDIT_COLUMNS, AUDIT_IN, postgres_store

# After a flush found an event it COPY'd straight into audit_events already stored, the flushes
# of this long take the careful way (COPY into AUDIT_IN, then ON CONFLICT): a caller that
# retries often costs one failed COPY a minute, not one per flush.
DIRECT_PAUSE = 60.0
# What the database answers for a value it cannot take (class 22, data exception, such as a
# string holding NUL or a time out of its range) or for a row a constraint refuses regardless
# of what else is stored: the same record would fail every retry. Unique violations are not
# here: two sidecars' races can raise them once, and a retry succeeds.
_REFUSED = (asyncpg.DataError, asyncpg.CheckViolationError, asyncpg.NotNullViolationError)
_RESERVATION = (
    "SELECT r.decision, r.model, r.provider, r.reservation_id, r.reserved, r.expire_time,"
    " r.price, r.sidecar_id, to_jsonb(u) AS usage FROM requests r LEFT JOIN usage u"
    " USING (org_id, request_id) WHERE r.org_id = $1 AND r.request_id = $2")

_FLUSH = f"""
WITH d AS (SELECT $1::text::jsonb AS decisions),
explained AS (
    -- Explanations ride in their decisions' records: the attributes, the rest is the
    -- decision's. (Records an earlier Warden journaled carry a whole event and its time.) One
    -- per decision, so no sort: a replay's copy, with its journaled time, is the conflict.
    SELECT r.org_id, r.app_id, 'decision:' || r.request_id AS event_id,
           coalesce((r.event->>'event_time')::timestamptz, r.create_time) AS event_time,
           'authorize.decision' AS action, r.request_id, r.user_id, r.model, r.provider,
           coalesce(r.explanation, r.event->'attributes') AS attributes
    FROM d, jsonb_to_recordset(d.decisions) AS r(org_id text, app_id text,
             request_id text, user_id text, model text, provider text,
             create_time timestamptz, explanation jsonb, event jsonb)
    WHERE r.explanation IS NOT NULL OR r.event IS NOT NULL),
events AS (
    -- One of the copies of a key: the id with the caller's time, or with any time the
    -- sidecar assigned (a retry got another).
    SELECT DISTINCT ON (x.org_id, x.event_id, CASE WHEN NOT x.time_assigned THEN x.event_time END)
           x.org_id, x.app_id, x.event_id, x.event_time,
           x.action, x.request_id, x.user_id, x.model, x.provider, x.attributes,
           x.time_assigned
    FROM {AUDIT_IN} x
    ORDER BY x.org_id, x.event_id, CASE WHEN NOT x.time_assigned THEN x.event_time END, x.n),
snapshots AS (
    -- The body a sidecar journals with the first explanation of each segment that refers
    -- to it.
    INSERT INTO explanation_snapshots (org_id, id, body)
    SELECT DISTINCT ON (r.org_id, r.explanation->>'snapshot') r.org_id,
           r.explanation->>'snapshot', r.snapshot
    FROM d, jsonb_to_recordset(d.decisions) AS r(org_id text, explanation jsonb,
                                                  snapshot jsonb)
    WHERE r.snapshot IS NOT NULL AND r.explanation->>'snapshot' IS NOT NULL
      AND EXISTS (SELECT 1 FROM orgs o WHERE o.id = r.org_id)
    ON CONFLICT DO NOTHING),
explanations AS (
    INSERT INTO audit_events (org_id, app_id, event_id, event_time, action, request_id,
                              user_id, model, provider, attributes)
    SELECT * FROM explained e WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = e.org_id)
    ON CONFLICT (org_id, event_time, event_id) DO NOTHING),
stored AS (
    INSERT INTO audit_events (org_id, app_id, event_id, event_time, action, request_id,
                              user_id, model, provider, attributes, time_assigned)
    SELECT org_id, app_id, event_id, event_time, action, request_id, user_id, model, provider,
           attributes, time_assigned
    FROM events e
    -- Only for an event whose time the sidecar assigned, among those (its retries were
    -- assigned theirs too): LATERAL ... LIMIT 1, not NOT EXISTS, one probe of the partial
    -- index per partition, where an anti join may hash every such event of the org. No time
    -- bound on purpose: with one, a planner without statistics took a time index and read
    -- every event of the org in the range, per event.
    LEFT JOIN LATERAL (SELECT true AS found FROM audit_events a
                       WHERE e.time_assigned AND a.time_assigned AND a.org_id = e.org_id
                         AND a.event_id = e.event_id
                       LIMIT 1) seen ON true
    WHERE seen.found IS NULL AND EXISTS (SELECT 1 FROM orgs o WHERE o.id = e.org_id)
    ON CONFLICT (org_id, event_time, event_id) DO NOTHING RETURNING 1)
SELECT f.*,
       (SELECT count(*) FROM (SELECT org_id FROM events UNION ALL SELECT org_id FROM explained) e
        WHERE NOT EXISTS (SELECT 1 FROM orgs o WHERE o.id = e.org_id)) AS audit_orphaned
FROM d, warden_apply_journal(d.decisions, $2::text::jsonb, $3) AS f
"""


async def _chunks(data: list[bytes]):
    """COPY's source: asyncpg reads a file in a thread, an async iterable in the loop."""
    for chunk in data:
        yield chunk


async def store(conn: asyncpg.Connection, decisions: str, usage: str, audit: list[bytes],
                direct: list[bytes] | tuple[()] = (), sidecar: str = "") -> asyncpg.Record:
    """One flush call in one transaction: the `direct` audit rows COPY'd straight into
    audit_events (UniqueViolationError if one is stored already), the other audit rows into
    AUDIT_IN, then _FLUSH for `sidecar`. Returns _FLUSH's row."""
    if not audit and not direct:
        return await conn.fetchrow(_FLUSH, decisions, usage, sidecar)
    async with conn.transaction():
        if direct:
            await conn.copy_to_table("audit_events", source=_chunks(direct),
                                     columns=AUDIT_COLUMNS)
        if audit:
            await conn.copy_to_table(AUDIT_IN, source=_chunks(audit), columns=AUDIT_COLUMNS)
        return await conn.fetchrow(_FLUSH, decisions, usage, sidecar)


def _part(data: dict) -> Part:
    bucket = data.get("bucket_start")
    return Part(data["policy_id"], datetime.fromisoformat(bucket) if bucket else None,
                data["metric"], int(data["amount"]), bucket)


@postgres_store
class PostgresDecisionLog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._direct_after = 0.0  # monotonic time before which no audit row goes direct

    async def apply(self, batch: Batch) -> Applied:
        decisions, usage = ((b"[" + b",".join(rows) + b"]").decode()
                            for rows in (batch.decisions, batch.usage))
        audit = batch.audit
        direct = batch.fresh and time.monotonic() >= self._direct_after
        async with self._pool.acquire() as conn:
            try:
                try:
                    result = await store(conn, decisions, usage,
                                         [rows for rows, free in audit if not (direct and free)],
                                         [rows for rows, free in audit if direct and free],
                                         batch.sidecar)
                except asyncpg.UniqueViolationError:
                    if not direct:
                        raise
                    # A copy of an event already stored (a caller's retry, a flush whose commit
                    # was not seen): the key and ON CONFLICT decide, in journal order.
                    self._direct_after = time.monotonic() + DIRECT_PAUSE
                    result = await store(conn, decisions, usage, [rows for rows, _ in audit],
                                         sidecar=batch.sidecar)
            except _REFUSED as exc:
                raise StoreRefused(f"{type(exc).__name__}: {exc}") from exc
        return Applied(result["requests_conflicting"], result["usage_orphaned"],
                       result["audit_orphaned"], [
                           SettledElsewhere(u["org_id"], u["request_id"], u,
                                            tuple(_part(p) for p in u["reserved"]))
                           for u in result["refunds"]])

    async def reservation(self, org_id: str, request_id: str) -> StoredReservation | None:
        row = await self._pool.fetchrow(_RESERVATION, org_id, request_id)
        if row is None:
            return None
        return StoredReservation(row["decision"] == "allow", row["reservation_id"],
                                 row["model"], row["provider"],
                                 tuple(_part(p) for p in row["reserved"]), row["expire_time"],
                                 price_from_json(row["price"]), row["usage"],
                                 row["sidecar_id"])

    async def expire(self, limit: int) -> int:
        return await self._pool.fetchval("SELECT warden_expire($1)", limit)
