"""The decision log, reservations, usage and audit events, written through the local journal.

Audit and StreamAudit append each batch as one record and answer once it is fsync'd; the
flusher stores the events with the decisions and usage of its batch, in one transaction.

Authorize appends its decision (with the reservation of an allowed call) to the journal and
answers at once: the record survives SIGKILL of the sidecar, and reaches Postgres with the next
flush. RecordUsage checks the reservation, works out the refunds, appends the usage record and
answers only once the journal is fsync'd, so an acknowledged settlement survives SIGKILL and a
machine crash. A background flusher applies the journal to Postgres in batches, one transaction
per batch (a COPY of its audit events, then warden_flush), exactly once per request id whatever
the replays; while the database is away the journal grows and is applied when it returns. At
start, whatever a previous run left in the journal is applied before the sidecar serves.

A request id is unique per org: this sidecar refuses a reuse it remembers (its reservations of
the last TTL); a reuse across sidecars is found when the log is flushed, kept out of the log
once and counted in warden_journal_dropped_total{kind="conflict"}.

Only the sidecar that made a reservation refunds what the call did not use. Another one (or
this one after a restart) reads the reservation back from the database and settles it without
a refund: a settlement of the same call may still sit in the first sidecar's journal, only one
of the two rows will be stored, and a refund already spent could not be taken back. Charges
beyond the reservation travel with the row, so they count once whichever row is stored.

Reservations not settled within the TTL are settled at their reserved amount by warden_expire,
which every sidecar runs now and then; a settlement acknowledged before the TTL ended still
replaces such an expiry when its record is applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from cachetools import LRUCache, TTLCache

from warden import metrics
from warden.engine import AuthorizeInput, Decision, Identity
from warden.engine.audit import Snapshot, compact_json
from warden.engine.model import bucket_time
from warden.engine.pricing import Price, cost_micros, find_price
from warden.errors import WardenError
from warden.journal import Journal, split
from warden.quota import Part, Quotas
from warden.store.postgres import AUDIT_COLUMNS, AUDIT_IN

log = logging.getLogger("warden.ledger")

# Rows per flush call (a decision or usage record is one; an audit record, one per event):
# about 0.2 s of Postgres work, well inside WARDEN_DB_TIMEOUT_SECONDS. 5,000 rather than 1,000
# stored StreamAudit events 10% faster (bench/audit.md).
BATCH = 5000
# After a flush found an event it COPY'd straight into audit_events already stored, the flushes
# of this long take the careful way (COPY into AUDIT_IN, then ON CONFLICT): a caller that
# retries often costs one failed COPY a minute, not one per flush.
DIRECT_PAUSE = 60.0
# What the database answers for a value it cannot take (class 22, data exception, such as a
# string holding NUL or a time out of its range) or for a row a constraint refuses regardless
# of what else is stored: the same record would fail every retry. Unique violations are not
# here: two sidecars' races can raise them once, and a retry succeeds.
_REFUSED = (asyncpg.DataError, asyncpg.CheckViolationError, asyncpg.NotNullViolationError)
# Records the database refused, one JSON line each ({"time", "error", "record"}, and "payload"
# when it has one: an audit record's COPY rows), in the journal directory: kept for a person
# to look at, never applied again by Warden.
REJECTED = "rejected.jsonl"
# Audit events reach the flush as rows of COPY's text format, built when they are
# acknowledged and journaled as the payload of their record: each flush COPYs its batch's rows
# into this session's temporary table (AUDIT_IN, which init_connection makes), whose identity
# `n` keeps the journal's order. COPY spares Postgres the parsing of a JSON document per
# batch: 12-17% of its CPU per stored event (bench/audit.md).
#
# The rows of events with the caller's time, in records this process journaled, skip that
# table: they are COPY'd straight into audit_events, which spares Postgres the temporary table,
# the sort, the org check and ON CONFLICT (35-47% of its CPU per stored event). Their orgs
# exist (this process accepted them with a key of the org; orgs are never deleted) and the
# key makes a copy already stored fail the COPY: the batch is then applied again the careful
# way (Ledger._apply). So a copy with the caller's time and id is stored once either way, and
# copies of an id with different caller times are different events to the key either way.
#
# One transaction: the decision log and usage (warden_flush, its parameters the journal's own
# JSON of those records, not encoded again) and the audit events of the batch (AUDIT_IN, and
# the explanations that ride in decisions). audit_events is partitioned by event_time, so its
# key is (org, event time, event id): a replayed record carries the time it was journaled with
# and is stored once (ON CONFLICT, even when two replays race). A caller's retry that let the
# sidecar assign the time again (time_assigned) differs in time only: such a copy is skipped
# when the org already has the id among its time-assigned events (a partial index), or an
# earlier record of the batch has it. (Two sidecars flushing such copies at the same moment may
# both store theirs: docs/audit.md.) Events of an org the database does not have (a journal
# replayed against another database) are not stored: counted.
_FLUSH = f"""
WITH d AS (SELECT $1::text::jsonb AS decisions),
events AS (
    -- One of the copies of a key: the id with the caller's time, or with any time the
    -- sidecar assigned (a retry got another).
    SELECT DISTINCT ON (x.org_id, x.event_id, CASE WHEN NOT x.time_assigned THEN x.event_time END)
           x.org_id, x.app_id, x.event_id, x.event_time,
           x.action, x.request_id, x.user_id, x.model, x.provider, x.attributes,
           x.time_assigned
    FROM (
        SELECT org_id, app_id, event_id, event_time, action, request_id, user_id, model,
               provider, attributes, time_assigned, n
        FROM {AUDIT_IN}
        UNION ALL
        -- Explanations ride in their decisions' records: the attributes, the rest is the
        -- decision's. (Records an earlier Warden journaled carry a whole event and its time.)
        SELECT r.org_id, r.app_id, 'decision:' || r.request_id,
               coalesce((r.event->>'event_time')::timestamptz, r.create_time),
               'authorize.decision', r.request_id, r.user_id, r.model, r.provider,
               coalesce(r.explanation, r.event->'attributes'), false, 0
        FROM d, jsonb_to_recordset(d.decisions) AS r(org_id text, app_id text,
                 request_id text, user_id text, model text, provider text,
                 create_time timestamptz, explanation jsonb, event jsonb)
        WHERE r.explanation IS NOT NULL OR r.event IS NOT NULL) x
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
       (SELECT count(*) FROM events e
        WHERE NOT EXISTS (SELECT 1 FROM orgs o WHERE o.id = e.org_id)) AS audit_orphaned
FROM d, warden_flush(d.decisions, $2::text::jsonb) AS f
"""


def batch_entry(record: dict[str, Any]) -> tuple[str, int]:
    """What the journal keeps of a record until it is applied: its kind, and how many rows it
    adds to a flush call (an audit record, one per event; a decision, two when explained)."""
    kind = record["kind"]
    if kind == "audit":
        return kind, record["rows"] if "rows" in record else len(record["events"])
    return kind, 1 + ("explanation" in record or "event" in record)


# The characters a field of COPY's text format must escape, and how.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_rows(org_id: str, app_id: str, events: list[dict[str, Any]]) -> bytes:
    """Audit events (the dicts Ledger.audit takes) as COPY text rows of AUDIT_COLUMNS."""
    head = f"{org_id.translate(_COPY_ESCAPES)}\t{app_id.translate(_COPY_ESCAPES)}\t"
    lines = []
    for e in events:
        fields = (e["event_id"], e["event_time"], e["action"], e["request_id"], e["user_id"],
                  e["model"], e["provider"], e["attributes"])
        line = "\t".join(fields)
        # Most events need no escape: one look at the joined line, not one per field.
        if line.count("\t") != len(fields) - 1 or "\\" in line or "\n" in line or "\r" in line:
            line = "\t".join(f.translate(_COPY_ESCAPES) for f in fields)
        lines.append(f"{head}{line}\t{'t' if e.get('time_assigned') else 'f'}\n")
    return "".join(lines).encode()


def _audit_rows(body: bytes) -> tuple[bytes, bool]:
    """The COPY rows of an audit record's body, and whether none of them needs the look-up
    by id ("assigned" counts those that do; true only of records this version journaled). (An
    earlier Warden journaled the events as JSON in the record itself: those are turned into
    rows here.)"""
    record, rows = split(body)
    if rows:
        return rows, "assigned" not in json.loads(record)
    return rows_of_events(json.loads(record)), False


def rows_of_events(record: dict[str, Any]) -> bytes:
    """The COPY rows of an audit record that holds its events, attributes as JSON values."""
    return copy_rows(record["org_id"], record["app_id"], [
        {**e, "attributes": compact_json(e["attributes"])} for e in record["events"]])


async def _chunks(data: list[bytes]):
    """COPY's source: asyncpg reads a file in a thread, an async iterable in the loop."""
    for chunk in data:
        yield chunk


async def store(conn: asyncpg.Connection, decisions: str, usage: str, audit: list[bytes],
                direct: list[bytes] | tuple[()] = ()) -> asyncpg.Record:
    """One flush call in one transaction: the `direct` audit rows COPY'd straight into
    audit_events (UniqueViolationError if one is stored already), the other audit rows into
    AUDIT_IN, then _FLUSH. Returns _FLUSH's counts."""
    if not audit and not direct:
        return await conn.fetchrow(_FLUSH, decisions, usage)
    async with conn.transaction():
        if direct:
            await conn.copy_to_table("audit_events", source=_chunks(direct),
                                     columns=AUDIT_COLUMNS)
        if audit:
            await conn.copy_to_table(AUDIT_IN, source=_chunks(audit), columns=AUDIT_COLUMNS)
        return await conn.fetchrow(_FLUSH, decisions, usage)


USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "model", "provider",
                "outcome", "latency_ms")


@dataclass(slots=True)
class Reservation:
    org_id: str
    request_id: str
    deciding: bool = True  # Authorize has not recorded its decision yet
    allowed: bool = False
    reservation_id: str = ""
    model: str = ""
    provider: str = ""
    parts: tuple[Part, ...] = ()
    expire_time: datetime | None = None
    settled: Mapping[str, Any] | None = None  # the usage stored for it
    settled_seq: int = 0  # its journal record, 0 when it came from the database
    own: bool = True  # made by this sidecar's Authorize (not read back from the database)


def _part(data: Mapping[str, Any]) -> Part:
    bucket = data.get("bucket_start")
    return Part(data["policy_id"], datetime.fromisoformat(bucket) if bucket else None,
                data["metric"], int(data["amount"]))


class Ledger:
    def __init__(self, pool: asyncpg.Pool, journal: Journal, quotas: Quotas,
                 clock: Callable[[], datetime], ttl: float, flush_interval: float,
                 max_entries: int, max_journal_bytes: int) -> None:
        self._pool = pool
        self._journal = journal
        self._quotas = quotas
        self._clock = clock
        self.ttl = timedelta(seconds=ttl)
        self._flush_interval = flush_interval
        self._max_journal_bytes = max_journal_bytes
        self._recent: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl + 300)
        # (org, snapshot id) -> the journal segment its body was last journaled in. A body is
        # journaled once per segment, so a damaged segment can take only its own
        # explanations' snapshot with it; one forgotten is journaled again, and stored once.
        self._snapshots: LRUCache = LRUCache(maxsize=max_entries)
        self._flushing = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._replayed: set[Path] = set()  # segments an earlier run left: never COPY'd direct
        self._direct_after = 0.0  # monotonic time before which no audit row goes direct

    async def start(self) -> None:
        """Apply what an earlier run left in the journal, then flush and expire until stop()."""
        self._replayed = {segment.path for segment in self._journal.open()}
        metrics.JOURNAL_PENDING.set_function(self._journal.pending)
        metrics.JOURNAL_PENDING_BYTES.set_function(self._journal.pending_bytes)
        metrics.JOURNAL_OLDEST.set_function(self._journal.oldest_age)
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - serve anyway; the flusher keeps trying
            metrics.JOURNAL_FLUSH_FAILURES.inc()
            log.exception("the journal left by the last run could not be applied yet; "
                          "settlements of its calls answer NOT_FOUND until it is")
        self._tasks = [asyncio.create_task(self._flush_loop()),
                       asyncio.create_task(self._expire_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - the journal keeps it for the next start
            log.warning("journal not flushed at shutdown; the next start applies it",
                        exc_info=True)
        await self._journal.close()

    # -- Authorize -----------------------------------------------------------------------------

    def claim(self, org_id: str, request_id: str) -> Reservation:
        """Hold a request id for one Authorize; ALREADY_EXISTS if this sidecar has seen it."""
        if (org_id, request_id) in self._recent:
            raise WardenError("ALREADY_EXISTS", "REQUEST_ID_REUSED",
                              f"request_id {request_id!r} was already authorized; "
                              "use a new id for each LLM call")
        reservation = self._recent[(org_id, request_id)] = Reservation(org_id, request_id)
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Authorize failed before deciding: the id may be used again."""
        if reservation.deciding:
            self._recent.pop((reservation.org_id, reservation.request_id), None)

    def record(self, reservation: Reservation, identity: Identity, request: AuthorizeInput,
               decision: Decision, parts: list[Part], reserved_cost: int,
               explanation: dict[str, Any] | None = None,
               snapshot: Snapshot | None = None) -> str:
        """Log the decision, with the attributes of its explanation event if given (durable
        against SIGKILL once this returns); return the reservation id of an allowed call. The
        first record of each journal segment that refers to a snapshot carries its body."""
        now = self._clock()
        route = decision.route
        r = reservation
        r.deciding, r.allowed = False, decision.allowed
        r.model = route.model if route else request.model
        r.provider = route.provider if route else request.provider
        if decision.allowed:
            r.reservation_id, r.parts = uuid.uuid4().hex, tuple(parts)
            r.expire_time = now + self.ttl
        record = {
            "kind": "decision", "org_id": identity.org_id, "request_id": request.request_id,
            "app_id": identity.app_id, "api_key_id": identity.api_key_id,
            "user_id": request.user_id or identity.user_id, "model": r.model,
            "provider": r.provider, "decision": "allow" if decision.allowed else "deny",
            "reason": decision.reason.value, "input_tokens": request.input_tokens,
            "max_output_tokens": route.max_output_tokens if route else
            request.max_output_tokens,
            "create_time": now.isoformat(), "reservation_id": r.reservation_id,
            "reserved": [{"policy_id": p.policy_id, "metric": p.metric, "amount": p.amount,
                          "bucket_start": bucket_time(p.bucket) if p.bucket else None}
                         for p in r.parts],
            "reserved_cost_micros": reserved_cost if decision.allowed else 0,
            "expire_time": r.expire_time.isoformat() if r.expire_time else None}
        segment = self._journal.segment
        if explanation is not None:
            record["explanation"] = explanation
            if snapshot is not None and \
                    self._snapshots.get((identity.org_id, snapshot.id)) != segment:
                record["snapshot"] = snapshot.body
        self._journal.append(record)
        if "snapshot" in record:  # once it is in the journal
            self._snapshots[(identity.org_id, snapshot.id)] = segment
        return r.reservation_id

    # -- RecordUsage ---------------------------------------------------------------------------

    async def settle(self, org_id: str, usage: dict[str, Any], reservation_id: str,
                     reported_cost: int | None,
                     prices: Mapping[tuple[str, str], Price]) -> tuple[int, bool]:
        """Store the usage of an allowed call once and settle its reservation; return
        (cost_micros, duplicate). Acknowledge only what the journal holds durably."""
        request_id = usage["request_id"]
        r = await self._reservation(org_id, request_id)
        if not r.allowed:
            raise WardenError("FAILED_PRECONDITION", "REQUEST_NOT_AUTHORIZED",
                              f"request_id {request_id!r} was denied by Authorize")
        if reservation_id and reservation_id != r.reservation_id:
            raise WardenError("INVALID_ARGUMENT", "INVALID_ARGUMENT",
                              f"reservation_id does not match request_id {request_id!r}",
                              [("reservation_id", "is not the reservation Authorize returned "
                                "for this request_id")])
        row = {**usage, "model": usage["model"] or r.model,
               "provider": usage["provider"] or r.provider}
        if reported_cost is not None:
            row.update(cost_micros=reported_cost, cost_source="reported")
        else:
            price = find_price(prices, row["provider"], row["model"])
            if price is None:
                raise WardenError(
                    "FAILED_PRECONDITION", "MODEL_NOT_PRICED",
                    f"model {row['model']!r} (provider {row['provider']!r}) has no price; "
                    "set one with Admin.SetModelPrice or report cost_micros")
            row.update(cost_micros=cost_micros(price, row["input_tokens"], row["output_tokens"],
                                               row["cached_input_tokens"]),
                       cost_source="priced")
        if r.settled is not None:
            return await self._settled_again(r, row)
        if r.expire_time is not None and self._clock() >= r.expire_time:
            raise self._expired(r)
        actual = {"REQUESTS": 1, "INPUT_TOKENS": row["input_tokens"],
                  "OUTPUT_TOKENS": row["output_tokens"],
                  "TOTAL_TOKENS": row["input_tokens"] + row["output_tokens"],
                  "COST_MICROS": row["cost_micros"]}
        record = {**row, "kind": "usage", "org_id": org_id,
                  "record_time": self._clock().isoformat(),
                  "adjustments": self._quotas.settle(list(r.parts), actual, refund=r.own)}
        r.settled, r.settled_seq = record, self._journal.append(record)
        await self._journal.sync(r.settled_seq)
        return row["cost_micros"], False

    async def _settled_again(self, r: Reservation, row: Mapping[str, Any]) -> tuple[int, bool]:
        settled = r.settled
        assert settled is not None
        if settled["outcome"] == "expired":
            raise self._expired(r)
        if r.settled_seq:
            await self._journal.sync(r.settled_seq)
        # A priced cost may differ on retry if the price changed meanwhile; that is no conflict.
        fields = USAGE_FIELDS + (("cost_micros",) if row["cost_source"] == "reported" else ())
        if any(settled[f] != row[f] for f in fields):
            raise WardenError("ALREADY_EXISTS", "USAGE_CONFLICT",
                              f"usage for request_id {r.request_id!r} was already recorded "
                              "with different values")
        return settled["cost_micros"], True

    def _expired(self, r: Reservation) -> WardenError:
        return WardenError(
            "FAILED_PRECONDITION", "RESERVATION_EXPIRED",
            f"the reservation of request_id {r.request_id!r} expired at "
            f"{r.expire_time.isoformat() if r.expire_time else '?'} (TTL "
            f"{self.ttl.total_seconds():g} s) and was settled at its reserved amount")

    async def _reservation(self, org_id: str, request_id: str) -> Reservation:
        r = self._recent.get((org_id, request_id))
        if r is not None and not r.deciding:
            return r
        metrics.DB_ROUND_TRIPS.labels("settle").inc()
        row = await self._pool.fetchrow(
            "SELECT r.decision, r.model, r.provider, r.reservation_id, r.reserved,"
            " r.expire_time, to_jsonb(u) AS usage FROM requests r LEFT JOIN usage u"
            " USING (org_id, request_id) WHERE r.org_id = $1 AND r.request_id = $2",
            org_id, request_id)
        if row is None:
            raise WardenError(
                "NOT_FOUND", "NOT_FOUND",
                f"no Authorize was made for request_id {request_id!r} (one made through another "
                f"sidecar reaches the database within {self._flush_interval:g} s)")
        known = self._recent.get((org_id, request_id))
        if known is not None and not known.deciding:
            return known  # a concurrent call loaded it first: one object per request id
        r = Reservation(org_id, request_id, False, row["decision"] == "allow",
                        row["reservation_id"], row["model"], row["provider"],
                        tuple(_part(p) for p in row["reserved"]), row["expire_time"],
                        row["usage"], own=False)
        self._recent[(org_id, request_id)] = r
        return r

    # -- Audit ---------------------------------------------------------------------------------

    async def audit(self, org_id: str, app_id: str, events: list[dict[str, Any]]) -> None:
        """Journal a batch of audit events as one record (stored all or none) and return once
        it is fsync'd. A full journal refuses the batch rather than drop anything later.
        An event: its text fields by column name, "attributes" as compact JSON text
        (engine.audit.compact_json), and "time_assigned": True when the sidecar chose its
        time for a caller's event id."""
        if self.full():
            metrics.JOURNAL_REFUSED.inc(len(events))
            raise WardenError(
                "RESOURCE_EXHAUSTED", "JOURNAL_FULL",
                f"the sidecar's journal holds {self._journal.pending_bytes()} bytes not yet "
                f"written to the database (WARDEN_JOURNAL_MAX_BYTES): retry later",
                retry_after_seconds=max(self._flush_interval, 1.0))
        record = {"kind": "audit", "rows": len(events)}
        assigned = sum(1 for e in events if e.get("time_assigned"))
        if assigned:
            record["assigned"] = assigned  # these rows need the flush's look-up by id
        await self._journal.sync(self._journal.append(record, copy_rows(org_id, app_id, events)))

    def full(self) -> bool:
        """The journal holds WARDEN_JOURNAL_MAX_BYTES not yet in the database."""
        return self._journal.pending_bytes() >= self._max_journal_bytes

    # -- background ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Apply every sealed journal segment to the database, oldest first."""
        async with self._flushing:
            for segment in await self._journal.seal():
                fresh = segment.path not in self._replayed
                batch, rows = [], 0
                for (kind, n), body in zip(segment.records, segment.bodies, strict=True):
                    batch.append((kind, body))
                    rows += n
                    if rows >= BATCH:
                        await self._apply_isolating(batch, fresh)
                        batch, rows = [], 0
                if batch:
                    await self._apply_isolating(batch, fresh)
                self._journal.done(segment)
                self._replayed.discard(segment.path)

    async def _apply_isolating(self, records: list[tuple[str, bytes]], fresh: bool) -> None:
        """_apply; but a batch the database refuses for a value in it (one validation should
        have kept out) is halved until the record at fault is found, and the rest applied, in
        order: one bad record never holds back the records after it. That record is set aside
        in the journal directory's rejected.jsonl, counted and logged."""
        try:
            await self._apply(records, fresh)
        except _REFUSED as exc:
            if len(records) == 1:
                self._reject(records[0], exc)
                return
            half = len(records) // 2
            await self._apply_isolating(records[:half], fresh)
            await self._apply_isolating(records[half:], fresh)

    def _reject(self, record: tuple[str, bytes], exc: Exception) -> None:
        kind, body = record
        path = self._journal.directory / REJECTED
        data, payload = split(body)
        line = json.dumps({"time": self._clock().isoformat(),
                           "error": f"{type(exc).__name__}: {exc}",
                           "record": json.loads(data),
                           **({"payload": payload.decode(errors="replace")} if payload else {})}
                          ).encode() + b"\n"
        with path.open("ab") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        metrics.JOURNAL_DROPPED.labels("rejected").inc()
        log.error("the database refused a journal record; it is set aside and the rest applied",
                  extra={"kind": kind, "error": repr(exc), "file": str(path)})

    async def _apply(self, records: list[tuple[str, bytes]], fresh: bool = False) -> None:
        """Apply (kind, body) records as the journal holds them: decisions and usage as JSON
        parameters, audit events as COPY rows. With `fresh` (records this process journaled,
        so their orgs exist: orgs are never deleted), the audit rows that need no look-up by id
        are COPY'd straight into audit_events; should one of them be stored already, the
        batch is applied again the careful way, as are those of the next DIRECT_PAUSE."""
        kinds: dict[str, list[bytes]] = {"decision": [], "usage": []}
        audit: list[tuple[bytes, bool]] = []
        for kind, body in records:
            if kind == "audit":
                audit.append(_audit_rows(body))
            else:
                kinds[kind].append(body)
        decisions, usage = ((b"[" + b",".join(kinds[kind]) + b"]").decode() for kind in kinds)
        direct = fresh and time.monotonic() >= self._direct_after
        metrics.DB_ROUND_TRIPS.labels("flush").inc()
        async with self._pool.acquire() as conn:
            try:
                result = await store(conn, decisions, usage,
                                     [rows for rows, free in audit if not (direct and free)],
                                     [rows for rows, free in audit if direct and free])
            except asyncpg.UniqueViolationError:
                if not direct:
                    raise
                # A copy of an event already stored (a caller's retry, a flush whose commit
                # was not seen): the key and ON CONFLICT decide, in journal order.
                self._direct_after = time.monotonic() + DIRECT_PAUSE
                metrics.DB_ROUND_TRIPS.labels("flush").inc()
                result = await store(conn, decisions, usage, [rows for rows, _ in audit])
        if result["audit_orphaned"]:
            metrics.JOURNAL_DROPPED.labels("audit_orphan").inc(result["audit_orphaned"])
            log.error("audit events of orgs the database does not have",
                      extra={"count": result["audit_orphaned"]})
        if result["requests_conflicting"]:
            metrics.JOURNAL_DROPPED.labels("conflict").inc(result["requests_conflicting"])
            log.warning("request ids already logged by another sidecar",
                        extra={"count": result["requests_conflicting"]})
        if result["usage_orphaned"]:
            metrics.JOURNAL_DROPPED.labels("orphan").inc(result["usage_orphaned"])
            log.error("usage for requests the database has not logged",
                      extra={"count": result["usage_orphaned"]})

    async def _flush_loop(self) -> None:
        """A round starts every flush interval: a round that took longer than that (a backlog)
        is followed at once by the next, so applying is not paused while records wait."""
        delay = self._flush_interval
        while True:
            await asyncio.sleep(delay)
            try:
                started = time.monotonic()
                await self.flush()
                delay = max(0.0, self._flush_interval - (time.monotonic() - started))
            except Exception as exc:  # noqa: BLE001 - the journal keeps it; retried
                metrics.JOURNAL_FLUSH_FAILURES.inc()
                log.warning("journal flush failed; retrying", extra={"error": repr(exc)})
                delay = min(max(delay * 2, self._flush_interval), 2.0)

    async def _expire_loop(self) -> None:
        interval = min(self.ttl.total_seconds() / 4, 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                metrics.DB_ROUND_TRIPS.labels("expire").inc()
                expired = await self._pool.fetchval("SELECT warden_expire(10000)")
                metrics.RESERVATIONS_EXPIRED.inc(expired)
            except Exception as exc:  # noqa: BLE001 - next round
                log.warning("expiring reservations failed", extra={"error": repr(exc)})
