"""Reporting over the decision log, usage and quota counters (Admin GetUsage, GetBudgetSummary,
ListTopSpenders, GetRequestMetrics), and retention of quota buckets. docs/reporting.md says what
each number means.

A request belongs to a time range when it was authorized in it (requests.create_time); its usage
counts with it. A counter's `used` comes from warden_lease asked for nothing (p_want 0): the same
sum enforcement sees, leases held by sidecars included. warden_lease takes an advisory lock per
policy, so the policies are visited in id order, as every other locker does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

import asyncpg

from warden.store.base import Row
from warden.store.postgres import SCOPE_ORG as _SCOPE_ORG
from warden.store.postgres import postgres_store

# Whether request r belongs to scope (kind, id), both SQL expressions. A team's requests are
# those of its apps and of its users (memberships as they are now, not as they were).
_IN_SCOPE = """CASE {kind}
    WHEN 'org' THEN r.org_id = {id}
    WHEN 'app' THEN r.app_id = {id}
    WHEN 'user' THEN r.user_id = {id}
    WHEN 'api_key' THEN r.api_key_id = {id}
    WHEN 'team' THEN r.app_id IN (SELECT a.id FROM apps a WHERE a.team_id = {id})
        OR r.user_id IN (SELECT t.user_id FROM user_teams t WHERE t.team_id = {id})
    ELSE false END"""

# warden_lease's arguments for a quota policy's config (proto3 JSON): its limit, sliding window
# (rate limits) and calendar period (budgets).
_LIMIT = """CASE p.policy_type WHEN 'budget' THEN (p.config ->> 'limit_micros')::bigint
    ELSE (p.config ->> 'limit')::bigint END"""
_WINDOW = """CASE p.config ->> 'window' WHEN 'WINDOW_MINUTE' THEN interval '1 minute'
    WHEN 'WINDOW_HOUR' THEN interval '1 hour' WHEN 'WINDOW_DAY' THEN interval '1 day' END"""
_PERIOD = """CASE p.policy_type WHEN 'budget' THEN lower(substr(p.config ->> 'period', 8))
    ELSE '' END"""

# Each quota policy of the selection, in id order, with its counter as it stands.
_QUOTAS = f"""
WITH p AS MATERIALIZED (
    SELECT * FROM policies p
    WHERE p.policy_type IN ('rate_limit', 'budget') AND {{where}}
    ORDER BY p.id)
SELECT p.*, l.used, l.bucket_start AS window_start, l.bucket_end AS window_end, l.reset_time
FROM p CROSS JOIN LATERAL warden_lease(p.id, {_LIMIT}, 0, {_WINDOW}, {_PERIOD}, 0, NULL, 0) l
ORDER BY p.id
"""

_REQUEST_IN_SCOPE = _IN_SCOPE.format(kind="$4::text", id="$5::text")
_USAGE = f"""
SELECT count(*) AS requests,
       count(*) FILTER (WHERE r.decision = 'allow') AS allowed,
       count(*) FILTER (WHERE r.decision = 'deny') AS denied,
       coalesce(sum(u.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(u.output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(u.cached_input_tokens), 0)::bigint AS cached_input_tokens,
       coalesce(sum(u.cost_micros), 0)::bigint AS cost_micros
FROM requests r LEFT JOIN usage u ON u.org_id = r.org_id AND u.request_id = r.request_id
WHERE r.org_id = $1 AND r.create_time >= $2 AND r.create_time < $3
  AND {_REQUEST_IN_SCOPE}
"""

# Per budget and per (model, provider) of its period's allowed calls: the settled cost and the
# reservations not settled yet. Selectors are matched afterwards, in Python, with the engine's
# own pattern rules; the groups are few.
_BUDGETS = _QUOTAS.format(where="p.org_id = $1 AND p.policy_type = 'budget'"
                         " AND ($2 = '' OR (p.scope_kind = $2 AND p.scope_id = $3))")
_BUDGET_IN_SCOPE = _IN_SCOPE.format(kind="b.scope_kind", id="b.scope_id")
_BUDGET_SPEND = f"""
WITH b AS MATERIALIZED ({_BUDGETS})
SELECT b.*, s.model, s.provider, coalesce(s.spent, 0)::bigint AS spent,
       coalesce(s.reserved, 0)::bigint AS reserved
FROM b LEFT JOIN LATERAL (
    SELECT r.model, r.provider, sum(u.cost_micros) AS spent,
           sum(r.reserved_cost_micros) FILTER (WHERE u.request_id IS NULL) AS reserved
    FROM requests r LEFT JOIN usage u ON u.org_id = r.org_id AND u.request_id = r.request_id
    WHERE r.org_id = $1 AND r.decision = 'allow'
      AND r.create_time >= b.window_start AND r.create_time < b.window_end
      AND {_BUDGET_IN_SCOPE}
    GROUP BY r.model, r.provider) s ON true
ORDER BY b.id, s.model, s.provider
"""

# The key each grouping ranks by; a team grouping counts a request for every team it is in.
_SPENDER_KEYS = {
    "app": "SELECT r.app_id AS key",
    "user": "SELECT r.user_id AS key",
    "api_key": "SELECT r.api_key_id AS key",
    "model": "SELECT r.model AS key",
    "provider": "SELECT r.provider AS key",
    "team": ("SELECT a.team_id AS key FROM apps a WHERE a.id = r.app_id AND a.team_id IS NOT NULL"
             " UNION SELECT t.team_id FROM user_teams t"
             " WHERE t.org_id = r.org_id AND t.user_id = r.user_id"),
}

_TOP_SPENDERS = """
SELECT k.key, count(*) AS requests,
       coalesce(sum(u.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(u.output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(u.cost_micros), 0)::bigint AS cost_micros
FROM requests r LEFT JOIN usage u ON u.org_id = r.org_id AND u.request_id = r.request_id
CROSS JOIN LATERAL ({keys}) k
WHERE r.org_id = $1 AND r.create_time >= $2 AND r.create_time < $3
GROUP BY k.key
ORDER BY cost_micros DESC, k.key
LIMIT $4
"""

_REQUEST_METRICS = """
WITH f AS (
    SELECT r.decision, r.reason, u.outcome, u.input_tokens, u.output_tokens,
           u.cached_input_tokens, u.cost_micros, u.latency_ms
    FROM requests r LEFT JOIN usage u ON u.org_id = r.org_id AND u.request_id = r.request_id
    WHERE r.org_id = $1 AND r.create_time >= $2 AND r.create_time < $3
      AND ($4 = '' OR r.app_id = $4) AND ($5 = '' OR r.model = $5))
SELECT count(*) AS requests,
       count(*) FILTER (WHERE decision = 'allow') AS allowed,
       count(*) FILTER (WHERE decision = 'deny') AS denied,
       count(*) FILTER (WHERE outcome = 'completed') AS completed,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE outcome = 'expired') AS expired,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(cached_input_tokens), 0)::bigint AS cached_input_tokens,
       coalesce(sum(cost_micros), 0)::bigint AS cost_micros,
       count(latency_ms) AS latency_count,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY latency_ms) AS latency_ms,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(d.reason, d.n) ORDER BY d.n DESC, d.reason),
                        '[]')
        FROM (SELECT reason, count(*) AS n FROM f WHERE decision = 'deny' GROUP BY reason) d)
           AS deny_reasons
FROM f
"""

# A bucket no window or period can count any more: a rate limit's buckets older than its window
# and one bucket (warden_lease counts from the bucket before the window, whole), a budget's
# buckets of past periods in its org's time zone. Config changes move the line with them.
_PRUNE = f"""
DELETE FROM quota_buckets q
USING policies p JOIN orgs o ON o.id = p.org_id
WHERE q.policy_id = p.id AND q.bucket_start < now() - $1::interval
  AND CASE p.policy_type
      WHEN 'rate_limit' THEN q.bucket_start < now() - {_WINDOW} - {_WINDOW} / 120
      WHEN 'budget' THEN q.bucket_start < date_trunc({_PERIOD}, now(), o.time_zone)
      ELSE false END
"""


class ReportingStore(Protocol):
    """Read-only answers for the reporting RPCs. Times are [start, end); scopes are
    (kind, id) as stored in policies.scope_kind/scope_id."""

    async def scope_org(self, kind: str, scope_id: str) -> Row | None:
        """The org (id, time_zone, currency) the scope belongs to, or None when there is no
        such scope."""
        ...

    async def usage(self, org_id: str, scope: tuple[str, str], start: datetime,
                    end: datetime) -> Row:
        """Decisions (requests, allowed, denied) of the scope's requests in range, and their
        settled tokens and cost_micros."""
        ...

    async def quotas(self, scope: tuple[str, str]) -> list[Row]:
        """Every rate_limit and budget policy attached to exactly this scope, with its counter:
        used, window_start, window_end, reset_time."""
        ...

    async def budgets(self, org_id: str, scope: tuple[str, str] | None) -> list[Row]:
        """Every budget of the org (or of exactly the scope) with its counter, and `spend`:
        [(model, provider, spent, reserved)] of its scope's allowed calls in its period."""
        ...

    async def top_spenders(self, org_id: str, group_by: str, start: datetime, end: datetime,
                           limit: int) -> list[Row]:
        """(key, requests, input_tokens, output_tokens, cost_micros), cost descending then key."""
        ...

    async def request_metrics(self, org_id: str, app_id: str, model: str, start: datetime,
                              end: datetime) -> Row:
        """Decision and outcome counts, tokens, cost, latency count and [p50, p90, p99] (None
        without latencies), and deny_reasons [[reason, count]] most frequent first."""
        ...


@postgres_store
class PostgresReportingStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def scope_org(self, kind: str, scope_id: str) -> Row | None:
        return await self._pool.fetchrow(
            f"SELECT * FROM orgs WHERE id = ({_SCOPE_ORG[kind]})", scope_id)

    async def usage(self, org_id: str, scope: tuple[str, str], start: datetime,
                    end: datetime) -> Row:
        return await self._pool.fetchrow(_USAGE, org_id, start, end, *scope)

    async def quotas(self, scope: tuple[str, str]) -> list[Row]:
        return await self._pool.fetch(
            _QUOTAS.format(where="p.scope_kind = $1 AND p.scope_id = $2"), *scope)

    async def budgets(self, org_id: str, scope: tuple[str, str] | None) -> list[Row]:
        rows = await self._pool.fetch(_BUDGET_SPEND, org_id, *(scope or ("", "")))
        budgets: dict[str, dict] = {}
        for row in rows:
            budget = budgets.setdefault(row["id"], {**row, "spend": []})
            if row["model"] is not None:
                budget["spend"].append((row["model"], row["provider"], row["spent"],
                                        row["reserved"]))
        for budget in budgets.values():
            for column in ("model", "provider", "spent", "reserved"):
                del budget[column]
        return list(budgets.values())

    async def top_spenders(self, org_id: str, group_by: str, start: datetime, end: datetime,
                           limit: int) -> list[Row]:
        return await self._pool.fetch(_TOP_SPENDERS.format(keys=_SPENDER_KEYS[group_by]),
                                      org_id, start, end, limit)

    async def request_metrics(self, org_id: str, app_id: str, model: str, start: datetime,
                              end: datetime) -> Row:
        return await self._pool.fetchrow(_REQUEST_METRICS, org_id, start, end, app_id, model)


async def prune_quota_buckets(pool: asyncpg.Pool | asyncpg.Connection,
                              older_than: timedelta) -> int:
    """Delete the quota buckets no window or period can still count that are also older than
    `older_than`; return how many. Safe to run from any number of sidecars at once."""
    status = await pool.execute(_PRUNE, older_than)
    return int(status.rsplit(" ", 1)[1])
