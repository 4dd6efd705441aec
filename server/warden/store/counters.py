"""The Postgres CounterStore: quota_buckets and the warden_lease / warden_adjust functions of
migrations/0003_quotas.sql, and budget alert events in audit_events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from warden.store.base import BudgetAlert, Grant
from warden.store.postgres import postgres_store

_LEASE = "SELECT * FROM warden_lease($1, $2, $3, $4, $5, $6, $7, $8)"
_ADJUST = "SELECT warden_adjust($1::text[], $2::timestamptz[], $3::bigint[])"
# Sidecars that see the same crossing give the event the same id but each its own time, and the
# audit key holds the time (migrations/0004): so they take turns (a lock on the id, then a
# statement whose snapshot is taken after it) and only the first stores it. The alert is marked
# time_assigned, which is what the index by id holds (migrations/0007).
_ALERT_LOCK = "SELECT pg_advisory_xact_lock(1463898692, hashtext($1))"  # 1463898692: "WARD"
_ALERT = """
INSERT INTO audit_events (org_id, event_id, app_id, event_time, action, attributes,
                          time_assigned)
SELECT p.org_id, $2, CASE WHEN p.scope_kind = 'app' THEN p.scope_id ELSE '' END, $3,
       'budget.alert', $4::jsonb, true
FROM policies p WHERE p.id = $1 AND NOT EXISTS (
    SELECT 1 FROM audit_events a
    WHERE a.time_assigned AND a.org_id = p.org_id AND a.event_id = $2)
ON CONFLICT (org_id, event_time, event_id) DO NOTHING RETURNING org_id"""


@postgres_store
class PostgresCounterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lease(self, policy_id: str, limit: int, want: int, window: timedelta | None,
                    period: str, debt: int, returned: tuple[datetime, int] | None) -> Grant:
        bucket, amount = returned or (None, 0)
        row = await self._pool.fetchrow(_LEASE, policy_id, limit, want, window, period, debt,
                                        bucket, amount)
        return Grant(row["granted"], row["used"], row["bucket_start"], row["bucket_end"],
                     row["reset_time"], row["db_now"])

    async def adjust(self, deltas: Sequence[tuple[str, datetime, int]]) -> None:
        await self._pool.execute(_ADJUST, [d[0] for d in deltas], [d[1] for d in deltas],
                                 [d[2] for d in deltas])

    async def raise_alert(self, alert: BudgetAlert) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_ALERT_LOCK, alert.event_id)
            stored = await conn.fetchval(_ALERT, alert.policy_id, alert.event_id, alert.time,
                                         dict(alert.attributes))
        return stored is not None
