"""Applies the journal to the decision log: sealed segments, oldest first, in batches, each
batch one transaction (DecisionLog.apply), exactly once per record whatever the replays. While
the store is away the journal grows and is applied when it returns. At start, whatever a
previous run left in the journal is applied before the sidecar serves. Also runs the expiry of
reservations that were never settled.

A record the store refuses for a value in it (validation should keep such values out; an
older sidecar's journal may hold one) would fail its batch on every retry: the batch is halved
until the record is found, the rest applied in order, and the record set aside in the journal
directory's rejected.jsonl (fsync'd, with the store's error), counted and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from warden import metrics
from warden.errors import StoreRefused
from warden.journal import Journal, split
from warden.records import audit_rows
from warden.reservations import Reservations
from warden.store.base import Batch, DecisionLog

log = logging.getLogger("warden.flusher")

# Rows per flush call (a decision or usage record is one; an audit record, one per event):
# about 0.2 s of Postgres work, well inside WARDEN_DB_TIMEOUT_SECONDS.
BATCH = 5000
# Records the store refused, one JSON line each ({"time", "error", "record"}, and "payload"
# when it has one: an audit record's COPY rows), in the journal directory: kept for a person
# to look at, never applied again by Warden.
REJECTED = "rejected.jsonl"


class Flusher:
    def __init__(self, journal: Journal, log_store: DecisionLog, reservations: Reservations,
                 sidecar_id: str, clock: Callable[[], datetime], flush_interval: float,
                 expire_interval: float) -> None:
        self._journal = journal
        self._log = log_store
        self._reservations = reservations
        self._sidecar_id = sidecar_id
        self._clock = clock
        self._flush_interval = flush_interval
        self._expire_interval = expire_interval
        self._flushing = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._replayed: set[Path] = set()  # segments an earlier run left
        self._claim: asyncio.Future | None = None  # a claim of held usage, started

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
        for task in (*self._tasks, self._claim):
            if task is not None:
                task.cancel()
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - the journal keeps it for the next start
            log.warning("journal not flushed at shutdown; the next start applies it",
                        exc_info=True)
        await self._journal.close()

    async def flush(self) -> None:
        """Apply every sealed journal segment to the decision log, oldest first."""
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
        """apply(); but a batch the store refuses for a value in it is halved until the record
        at fault is found, and the rest applied, in order."""
        try:
            await self.apply(records, fresh)
        except StoreRefused as exc:
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
        line = json.dumps({"time": self._clock().isoformat(), "error": str(exc),
                           "record": json.loads(data),
                           **({"payload": payload.decode(errors="replace")} if payload else {})}
                          ).encode() + b"\n"
        with path.open("ab") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        metrics.JOURNAL_DROPPED.labels("rejected").inc()
        log.error("the database refused a journal record; it is set aside and the rest applied",
                  extra={"kind": kind, "error": str(exc), "file": str(path)})

    async def apply(self, records: list[tuple[str, bytes]], fresh: bool = False) -> None:
        """Apply (kind, body) records as the journal holds them, in one transaction, and settle
        what the decision log hands over: usage of this sidecar's reservations that other
        sidecars stored. `fresh`: records this process journaled."""
        kinds: dict[str, list[bytes]] = {"decision": [], "usage": [], "audit": []}
        for kind, body in records:
            kinds[kind].append(body)
        metrics.DB_ROUND_TRIPS.labels("flush").inc()
        applied = await self._log.apply(Batch(
            kinds["decision"], kinds["usage"], [audit_rows(b) for b in kinds["audit"]], fresh,
            self._sidecar_id))
        self._reservations.settled_elsewhere(applied.settled_elsewhere)
        if applied.audit_orphaned:
            metrics.JOURNAL_DROPPED.labels("audit_orphan").inc(applied.audit_orphaned)
            log.error("audit events of orgs the database does not have",
                      extra={"count": applied.audit_orphaned})
        if applied.conflicting:
            metrics.JOURNAL_DROPPED.labels("conflict").inc(applied.conflicting)
            log.warning("request ids already logged for another call, by another sidecar",
                        extra={"count": applied.conflicting})
        if applied.usage_orphaned:
            metrics.JOURNAL_DROPPED.labels("orphan").inc(applied.usage_orphaned)
            log.error("usage for requests the database has not logged",
                      extra={"count": applied.usage_orphaned})

    async def _flush_loop(self) -> None:
        """A round starts every flush interval: a round that took longer than that (a backlog)
        is followed at once by the next, so applying is not paused while records wait."""
        loop = asyncio.get_running_loop()
        delay = self._flush_interval
        while True:
            await asyncio.sleep(delay)
            try:
                started = loop.time()
                await self.flush()
                delay = max(0.0, self._flush_interval - (loop.time() - started))
            except Exception as exc:  # noqa: BLE001 - the journal keeps it; retried
                metrics.JOURNAL_FLUSH_FAILURES.inc()
                log.warning("journal flush failed; retrying", extra={"error": repr(exc)})
                delay = min(max(delay * 2, self._flush_interval), 2.0)

    def held(self, sidecar_id: str) -> None:
        """The decision log holds usage for `sidecar_id` (the change feed says so): claim it
        now if it is this sidecar's, rather than with the next flush that has records."""
        if sidecar_id == self._sidecar_id and self._claim is None:
            self._claim = asyncio.ensure_future(self._claim_held())

    async def _claim_held(self) -> None:
        try:
            async with self._flushing:
                self._claim = None  # a notification from now on needs another claim
                await self.apply([])
        except Exception as exc:  # noqa: BLE001 - the next flush or expiry round claims it
            log.warning("claiming usage held for this sidecar failed",
                        extra={"error": repr(exc)})

    async def _expire_loop(self) -> None:
        """Expire what nobody settled; and claim what is held for this sidecar, should a
        notification have been missed."""
        while True:
            await asyncio.sleep(self._expire_interval)
            try:
                metrics.DB_ROUND_TRIPS.labels("expire").inc()
                metrics.RESERVATIONS_EXPIRED.inc(await self._log.expire(10000))
                if self._reservations.awaiting_usage():
                    async with self._flushing:
                        await self.apply([])
            except Exception as exc:  # noqa: BLE001 - next round
                log.warning("expiring reservations failed", extra={"error": repr(exc)})
