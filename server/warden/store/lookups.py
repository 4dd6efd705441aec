"""Postgres LookupStore (what the cache reads) and ChangeFeed (LISTEN on the channel the
triggers of migrations/0002 notify)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence

import asyncpg

from warden import metrics
from warden.engine import Circuit, PolicyRecord, ProviderSwitch, policy_from_row
from warden.engine.pricing import Price
from warden.keys import KeyRecord
from warden.store.base import REFUNDS
from warden.store.postgres import postgres_store

log = logging.getLogger("warden.changes")

CHANNEL = "warden_changes"
# Settlements held for a sidecar (migrations/0008): the payload is its sidecar id.
REFUNDS_CHANNEL = "warden_refunds"

# The key, its app's team and its user's teams, in one round trip.
_FIND_KEY = """
SELECT k.id, k.org_id, k.app_id, coalesce(k.user_id, '') AS user_id, k.hash, k.allowed_models,
       k.expire_time, k.revoke_time,
       array(SELECT a.team_id FROM apps a WHERE a.id = k.app_id AND a.team_id IS NOT NULL
             UNION SELECT t.team_id FROM user_teams t WHERE t.user_id = k.user_id
             ORDER BY 1) AS team_ids
FROM api_keys k WHERE k.prefix = $1
"""


@postgres_store
class PostgresLookupStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find_api_key(self, prefix: str) -> KeyRecord | None:
        row = await self._pool.fetchrow(_FIND_KEY, prefix)
        if row is None:
            return None
        return KeyRecord(**{**row, "allowed_models": tuple(row["allowed_models"]),
                            "team_ids": tuple(row["team_ids"])})

    async def find_app(self, app_id: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(
            "SELECT org_id, coalesce(team_id, '') AS team_id FROM apps WHERE id = $1", app_id)
        return None if row is None else (row["org_id"], row["team_id"])

    async def find_principal(self, principal: str) -> str | None:
        return await self._pool.fetchval(
            "SELECT app_id FROM app_principals WHERE principal = $1", principal)

    async def user_teams(self, org_id: str, user_id: str) -> tuple[str, ...] | None:
        row = await self._pool.fetchrow(
            "SELECT array(SELECT team_id FROM user_teams t WHERE t.user_id = u.id"
            " ORDER BY team_id) AS team_ids FROM users u WHERE u.org_id = $1 AND u.id = $2",
            org_id, user_id)
        return None if row is None else tuple(row["team_ids"])

    async def policies_for(self, scopes: Sequence[tuple[str, str]]
                           ) -> dict[tuple[str, str], tuple[PolicyRecord, ...]]:
        rows = await self._pool.fetch(
            "SELECT p.* FROM policies p JOIN unnest($1::text[], $2::text[]) AS s(kind, id)"
            " ON p.scope_kind = s.kind AND p.scope_id = s.id ORDER BY p.id",
            [k for k, _ in scopes], [i for _, i in scopes])
        found: dict[tuple[str, str], list[PolicyRecord]] = {tuple(s): [] for s in scopes}
        for row in rows:
            found[(row["scope_kind"], row["scope_id"])].append(policy_from_row(row))
        return {scope: tuple(policies) for scope, policies in found.items()}

    async def provider_switches(self) -> tuple[ProviderSwitch, ...]:
        rows = await self._pool.fetch(
            "SELECT provider, model, org_id, enabled, reason FROM provider_switches"
            " WHERE NOT enabled")
        return tuple(ProviderSwitch(**row) for row in rows)

    async def circuits(self) -> tuple[Circuit, ...]:
        rows = await self._pool.fetch(
            "SELECT provider, model, state, forced = 'open' AS forced, reason, retry_time"
            " FROM circuits WHERE forced = 'open' OR (forced IS NULL AND state <> 'closed')")
        return tuple(Circuit(**row) for row in rows)

    async def prices(self) -> dict[tuple[str, str], Price]:
        rows = await self._pool.fetch(
            "SELECT provider, model, input_micros_per_million, output_micros_per_million,"
            " cached_input_micros_per_million FROM model_prices")
        return {(r["provider"], r["model"]): Price(*list(r.values())[2:]) for r in rows}


class PostgresChangeFeed:
    """One dedicated connection LISTENing on CHANNEL. A lost connection is noticed by asyncpg's
    termination callback or by a failed liveness query (every check interval), whichever comes
    first; the feed reports it at once and reconnects with backoff (0.1 s doubling to 2 s)."""

    def __init__(self, url: str, check_interval: float) -> None:
        self._url = url
        self._check_interval = check_interval

    async def run(self, on_change: Callable[[str, str], None],
                  on_state: Callable[[bool], None]) -> None:
        backoff = 0.1
        while True:
            listening = False

            def started() -> None:
                nonlocal listening
                listening = True
                metrics.COMPONENT_UP.labels("change_feed").set(1)
                on_state(True)

            try:
                await self._listen(on_change, started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                log.warning("change feed lost" if listening else "change feed cannot connect",
                            extra={"error": repr(exc)})
            metrics.COMPONENT_UP.labels("change_feed").set(0)
            on_state(False)
            if listening:
                metrics.CHANGE_FEED_LOSSES.inc()
                backoff = 0.1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _listen(self, on_change: Callable[[str, str], None],
                      started: Callable[[], None]) -> None:
        lost = asyncio.Event()

        def notified(_conn, _pid, _channel, payload: str) -> None:
            try:
                change = json.loads(payload)
                table, row_id = change["table"], change["id"] or ""
            except (ValueError, KeyError, TypeError):
                log.error("unreadable change notification", extra={"payload": payload[:200]})
                on_change("", "")  # an unknown table: the cache drops everything
                return
            on_change(table, row_id)

        conn = await asyncpg.connect(self._url, timeout=max(self._check_interval, 1.0))
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, notified)
            await conn.add_listener(REFUNDS_CHANNEL,
                                    lambda _c, _p, _ch, payload: on_change(REFUNDS, payload))
            started()
            log.info("change feed listening")
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self._check_interval)
                except TimeoutError:
                    await conn.fetchval("SELECT 1", timeout=max(self._check_interval, 1.0))
            raise ConnectionError("change feed connection closed")
        finally:
            conn.terminate()
