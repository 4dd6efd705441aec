"""Numbered SQL migrations (migrations/NNNN_name.sql), applied in order under an advisory lock so
that many sidecars starting together apply each exactly once. Each file runs in its own
transaction together with its row in schema_migrations."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("warden.migrate")

# Arbitrary but fixed: pg_advisory_lock key shared by every Warden process.
_LOCK_KEY = 0x57415244454E  # "WARDEN"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaError(RuntimeError):
    """The database schema is not one this Warden can run against."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def known_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("warden.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations must be numbered 1..n without gaps: {found}")
    return found


_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


def _compare(applied: dict[int, str], known: list[Migration]) -> list[Migration]:
    """Return the pending migrations, or raise if the database is from another Warden."""
    by_version = {m.version: m for m in known}
    newer = sorted(v for v in applied if v not in by_version)
    if newer:
        raise SchemaError(
            f"the database has schema version {max(newer)}, newer than this Warden knows "
            f"({len(known)}); upgrade Warden")
    changed = [v for v, c in applied.items() if by_version[v].checksum != c]
    if changed:
        raise SchemaError(f"applied migrations {changed} differ from this Warden's files")
    return [m for m in known if m.version not in applied]


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations; return the versions applied by this call."""
    known = known_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_TABLE)
        done = []
        for migration in _compare(await _applied(conn), known):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum)
            log.info("applied migration", extra={"version": migration.version,
                                                 "migration": migration.name})
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def check_schema(conn: asyncpg.Connection) -> None:
    """Refuse to run against a schema that is behind, ahead of, or different from ours."""
    pending = _compare(await _applied(conn), known_migrations())
    if pending:
        raise SchemaError(
            f"the database lacks migrations {[m.version for m in pending]}; "
            "run `warden migrate` (or start with WARDEN_MIGRATE=true)")
