"""Postgres CircuitStore: the circuits and their windows of migrations/0010_circuits.sql."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from warden.store.base import CircuitDefaults, Row, Tally
from warden.store.postgres import postgres_store

_THRESHOLDS = ("error_rate", "min_calls", "window_seconds", "consecutive_failures",
               "cooldown_seconds")


@postgres_store
class PostgresCircuitStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def report(self, tallies: Sequence[Tally], defaults: CircuitDefaults
                     ) -> dict[tuple[str, str], str]:
        d, moved = defaults, {}
        async with self._pool.acquire() as conn, conn.transaction():
            # Sorted: two sidecars reporting the same circuits lock them in the same order.
            for t in sorted(tallies, key=lambda t: (t.provider, t.model)):
                state = await conn.fetchval(
                    "SELECT warden_circuit_report($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    t.provider, t.model, t.calls, t.failures, t.trailing, t.succeeded,
                    d.error_rate, d.min_calls, d.window_seconds, d.consecutive_failures,
                    d.cooldown_seconds)
                if state is not None:
                    moved[(t.provider, t.model)] = state
        return moved

    async def claim_probe(self, provider: str, model: str, owner: str, seconds: float
                          ) -> bool:
        claimed = await self._pool.fetchval(
            "UPDATE circuits SET state = 'half_open', probe_owner = $3,"
            " retry_time = clock_timestamp() + make_interval(secs => $4),"
            " update_time = clock_timestamp()"
            " WHERE provider = $1 AND model = $2 AND forced IS NULL"
            " AND state IN ('open', 'half_open') AND retry_time <= clock_timestamp()"
            " RETURNING true", provider, model, owner, seconds)
        return bool(claimed)

    async def set_circuit(self, circuit: Row) -> Row:
        values = [circuit[name] for name in _THRESHOLDS]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO circuits (provider, model) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                circuit["provider"], circuit["model"])
            old = await conn.fetchrow(
                "SELECT forced FROM circuits WHERE provider = $1 AND model = $2 FOR UPDATE",
                circuit["provider"], circuit["model"])
            moved = old["forced"] != circuit["forced"]
            if moved:
                await conn.execute(
                    "DELETE FROM circuit_calls WHERE provider = $1 AND model = $2",
                    circuit["provider"], circuit["model"])
            await conn.execute(
                "UPDATE circuits SET forced = $3, error_rate = $4, min_calls = $5,"
                " window_seconds = $6, consecutive_failures = $7, cooldown_seconds = $8,"
                " update_time = clock_timestamp()"
                + (", state = CASE WHEN $3::text = 'open' THEN 'open' ELSE 'closed' END,"
                   " reason = $9, failure_run = 0, probe_owner = NULL, retry_time = NULL,"
                   " open_time = CASE WHEN $3::text = 'open' THEN clock_timestamp() END"
                   if moved else "")
                + " WHERE provider = $1 AND model = $2",
                circuit["provider"], circuit["model"], circuit["forced"], *values,
                *((circuit["reason"],) if moved else ()))
            return (await self._list(conn, circuit["provider"], circuit["model"]))[0]

    async def list_circuits(self) -> list[Row]:
        """The window's calls are those kept at the circuit's last report."""
        async with self._pool.acquire() as conn:
            return await self._list(conn)

    @staticmethod
    async def _list(conn: asyncpg.Connection, provider: str | None = None,
                    model: str | None = None) -> list[Row]:
        return await conn.fetch(
            "SELECT c.*, coalesce(w.calls, 0) AS window_calls,"
            " coalesce(w.failures, 0) AS window_failures FROM circuits c"
            " LEFT JOIN LATERAL (SELECT sum(calls) AS calls, sum(failures) AS failures"
            " FROM circuit_calls k WHERE k.provider = c.provider AND k.model = c.model) w"
            " ON true"
            " WHERE $1::text IS NULL OR (c.provider = $1 AND c.model = $2)"
            " ORDER BY c.provider, c.model", provider, model)
