"""Reading the audit trail back (Admin ListAuditEvents and GetRequestStory).

Plain SELECTs on audit_events (with the explanation snapshots its decisions name), requests
and usage: they work the same whether audit_events is one table or partitioned by month (a
condition on event_time lets Postgres skip partitions).

Listing pages by keyset on (event_time, event_id), never by OFFSET: a page starts after the
last event of the previous one, so events stored meanwhile neither repeat nor push others out of
the walk. Ids compare bytewise (COLLATE "C"): the order, and so what a page token means, does
not depend on the database's locale. Only the filters given enter the SQL, so each combination
is planned for itself rather than through `$n = '' OR ...` guards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from warden.store.base import Row
from warden.store.postgres import postgres_store

_EVENT_COLUMNS = ("e.org_id, e.app_id, e.event_id, e.event_time, e.receive_time, e.action,"
                  " e.request_id, e.user_id, e.model, e.provider, e.attributes,"
                  " s.body AS snapshot")
# A decision's explanation names the snapshot of its fixed fields (engine/audit.py); another
# event's "snapshot" attribute is its own.
_EVENTS = ("audit_events e LEFT JOIN explanation_snapshots s ON e.action = 'authorize.decision'"
           " AND e.event_id = 'decision:' || e.request_id AND s.org_id = e.org_id"
           " AND s.id = e.attributes->>'snapshot'")

# The decision of a request with its settlement (usage) when there is one.
_DECISION = """
SELECT r.*, u.input_tokens AS used_input_tokens, u.output_tokens AS used_output_tokens,
       u.cached_input_tokens AS used_cached_input_tokens, u.cost_micros AS used_cost_micros,
       u.cost_source, u.model AS used_model, u.provider AS used_provider, u.outcome,
       u.latency_ms, u.record_time
FROM requests r LEFT JOIN usage u ON u.org_id = r.org_id AND u.request_id = r.request_id
WHERE r.org_id = $1 AND r.request_id = $2
"""

_REQUEST_EVENTS = f"""
SELECT {_EVENT_COLUMNS} FROM {_EVENTS}
WHERE e.org_id = $1 AND e.request_id = $2
ORDER BY e.event_time, e.event_id COLLATE "C"
LIMIT $3
"""


@dataclass(frozen=True)
class AuditFilter:
    """Which events of an org to list; empty strings and None filter nothing. Times are
    [start, end) on event_time; decision is 'allow', 'deny' or ''."""

    app_id: str = ""
    user_id: str = ""
    action: str = ""
    model: str = ""
    request_id: str = ""
    decision: str = ""
    start: datetime | None = None
    end: datetime | None = None


class AuditQueryStore(Protocol):
    async def list_events(self, org_id: str, where: AuditFilter,
                          after: tuple[datetime, str] | None, limit: int) -> list[Row]:
        """Up to `limit` events of the org matching `where`, ordered by (event_time,
        event_id), strictly after `after` in that order when given. Rows carry the
        audit_events columns (attributes decoded) and `snapshot`: the body of the snapshot a
        decision's explanation refers to, or None."""
        ...

    async def request_story(self, org_id: str, request_id: str,
                            max_events: int) -> tuple[Row | None, list[Row]]:
        """The request's decision row (requests columns plus its usage as used_* columns,
        cost_source, outcome, latency_ms and record_time, NULL when unsettled), or None when
        not logged; and its first `max_events` events, as list_events orders them. Both from
        one snapshot."""
        ...


def list_events_sql(where: AuditFilter, after: bool) -> tuple[str, list[str]]:
    """The query for `where` and which AuditFilter fields feed its parameters after $1 (org_id);
    with `after`, the last two parameters before the limit are the cursor's time and id."""
    conditions, fields = ["e.org_id = $1"], []

    def param(field: str) -> str:
        fields.append(field)
        return f"${len(fields) + 1}"

    for column in ("app_id", "user_id", "action", "model", "request_id"):
        if getattr(where, column):
            conditions.append(f"e.{column} = {param(column)}")
    if where.start is not None:
        conditions.append(f"e.event_time >= {param('start')}")
    if where.end is not None:
        conditions.append(f"e.event_time < {param('end')}")
    if where.decision:
        conditions.append(
            "EXISTS (SELECT 1 FROM requests r WHERE r.org_id = e.org_id"
            f" AND r.request_id = e.request_id AND r.decision = {param('decision')})")
    if after:
        # The first half alone can use the (org_id, event_time) index; the second breaks ties.
        at, event_id = param("after_time"), param("after_id")
        conditions.append(f"e.event_time >= {at}"
                          f" AND (e.event_time > {at} OR e.event_id COLLATE \"C\" > {event_id})")
    limit = param("limit")
    sql = (f"SELECT {_EVENT_COLUMNS} FROM {_EVENTS} WHERE {' AND '.join(conditions)}"
           f' ORDER BY e.event_time, e.event_id COLLATE "C" LIMIT {limit}')
    return sql, fields


@postgres_store
class PostgresAuditQueryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_events(self, org_id: str, where: AuditFilter,
                          after: tuple[datetime, str] | None, limit: int) -> list[Row]:
        sql, fields = list_events_sql(where, after is not None)
        values = {"after_time": after[0] if after else None,
                  "after_id": after[1] if after else None, "limit": limit}
        args = [values[f] if f in values else getattr(where, f) for f in fields]
        return await self._pool.fetch(sql, org_id, *args)

    async def request_story(self, org_id: str, request_id: str,
                            max_events: int) -> tuple[Row | None, list[Row]]:
        async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            decision = await conn.fetchrow(_DECISION, org_id, request_id)
            events = await conn.fetch(_REQUEST_EVENTS, org_id, request_id, max_events)
        return decision, events
