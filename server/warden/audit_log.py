"""Audit appends: a caller's batch of events, scrubbed by its audit setting and journaled as
one record (stored all or none), acknowledged once it is fsync'd. The flusher stores the events
with the decisions and usage of their batch, in one transaction (flusher.py)."""

from __future__ import annotations

from typing import Any

from warden import metrics
from warden.cache import Cache
from warden.engine import Identity
from warden.engine.audit import audit_setting, scrub_json
from warden.errors import WardenError
from warden.journal import Journal
from warden.keys import KeyRecord
from warden.records import copy_rows


class AuditLog:
    def __init__(self, journal: Journal, cache: Cache, key_pepper: bytes,
                 retry_after: float) -> None:
        self._journal = journal
        self._cache = cache
        self._pepper = key_pepper
        self._retry_after = retry_after

    async def append(self, caller: KeyRecord, events: list[dict[str, Any]]) -> None:
        """Journal a validated batch and return once it is fsync'd. A full journal refuses the
        batch rather than drop anything later. An event: its text fields by column name,
        "attributes" as compact JSON text (engine.audit.compact_json), and "time_assigned":
        True when the sidecar chose its time for a caller's event id."""
        journal = self._journal
        if journal.full():
            metrics.JOURNAL_REFUSED.inc(len(events))
            raise WardenError(
                "RESOURCE_EXHAUSTED", "JOURNAL_FULL",
                f"the sidecar's journal holds {journal.pending_bytes()} bytes not yet "
                f"written to the database (WARDEN_JOURNAL_MAX_BYTES): retry later",
                retry_after_seconds=self._retry_after)
        setting = audit_setting(await self._cache.policies(Identity(
            caller.org_id, caller.app_id, caller.id, "", caller.team_ids).scopes()))
        for event in events:
            event["attributes"] = scrub_json(event["attributes"], setting, self._pepper)
        record = {"kind": "audit", "rows": len(events)}
        assigned = sum(1 for e in events if e.get("time_assigned"))
        if assigned:
            record["assigned"] = assigned  # these rows need the flush's look-up by id
        await journal.sync(journal.append(
            record, copy_rows(caller.org_id, caller.app_id, events)))
        metrics.AUDIT_EVENTS.inc(len(events))
