"""audit_events is partitioned by UTC month of event_time (migrations/0004_audit_partitions.sql,
docs/audit.md). Every sidecar runs `maintain_audit_partitions` before it serves and hourly; one
at a time does the work (an advisory lock), the others skip the round.

- Partitions are made MONTHS_AHEAD months ahead, and for the month before (events are accepted
  up to 30 days old), so that normal traffic never reaches the default partition. Rows that do
  (a journal replayed months late, a hand-written insert) are moved into their month's
  partition when it is made: nothing is refused, and a flush never fails for want of one.
- Retention detaches and drops whole partitions whose month ended more than the retention ago:
  rows are never deleted one by one. A month therefore stays until its last day is older than
  the retention (up to a month longer than it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from warden import metrics

log = logging.getLogger("warden.audit")

MONTHS_AHEAD = 3
# Whoever waits longer than this for a lock on audit_events gives up until the next round, so
# that a long query does not queue every insert behind the maintenance's lock request.
LOCK_TIMEOUT = "2s"
# pg_advisory_xact_lock key ("WARDAUDT"), also taken by the SQL functions.
_LOCK_KEY = 0x5741524441554454


@dataclass(frozen=True)
class Maintenance:
    ran: bool  # False: another sidecar held the lock
    created: int = 0
    dropped: list[str] = field(default_factory=list)


async def maintain_audit_partitions(pool: asyncpg.Pool,
                                    retention: timedelta | None) -> Maintenance:
    """Create the partitions due and, with a retention, drop those past it (database clock)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
                return Maintenance(ran=False)
            created = await conn.fetchval("SELECT warden_audit_partitions(now(), $1)",
                                          MONTHS_AHEAD)
            dropped = [] if retention is None else [r[0] for r in await conn.fetch(
                "SELECT warden_audit_drop_partitions(now(), $1)", retention)]
    if created:
        metrics.AUDIT_PARTITIONS.labels("created").inc(created)
        log.info("audit partitions created", extra={"count": created})
    if dropped:
        metrics.AUDIT_PARTITIONS.labels("dropped").inc(len(dropped))
        log.info("audit partitions past retention dropped",
                 extra={"partitions": dropped, "retention_days": retention.days})
    return Maintenance(True, created, dropped)

