"""The Postgres implementations of store/base.py, all over one asyncpg pool."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg

from warden.errors import StoreUnavailable, WardenError, already_exists, not_found
from warden.store.base import Row

# Errors that mean "the database is away", not "this request is wrong": lost or refused
# connections (SQLSTATE classes 08, 53, 57), client-side connection state, and timeouts.
_DATABASE_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.InsufficientResourcesError,
                    asyncpg.OperatorInterventionError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError, OSError, TimeoutError)


def database_unavailable(exc: BaseException) -> bool:
    # A database closed to connections answers 55000 at connect time.
    return isinstance(exc, _DATABASE_ERRORS) or (
        isinstance(exc, asyncpg.ObjectNotInPrerequisiteStateError)
        and "not currently accepting connections" in str(exc))


Store = TypeVar("Store", bound=type)


def _unavailable_as_store_error(method: Callable) -> Callable:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if database_unavailable(exc):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise
    return call


def postgres_store(cls: Store) -> Store:
    """Every public coroutine method of a Postgres store raises StoreUnavailable when the
    database is away, so that callers outside store/ never see asyncpg's errors."""
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _unavailable_as_store_error(method))
    return cls


# The temporary table each flush COPYs its audit events into (store/decision_log.py): one per
# session, made when the connection is, emptied by every commit.
AUDIT_IN = "warden_audit_in"
AUDIT_COLUMNS = ("org_id", "app_id", "event_id", "event_time", "action", "request_id",
                 "user_id", "model", "provider", "attributes", "time_assigned")
CREATE_AUDIT_IN = (
    f"CREATE TEMP TABLE IF NOT EXISTS {AUDIT_IN} (n bigint GENERATED ALWAYS AS IDENTITY,"
    " org_id text, app_id text, event_id text, event_time timestamptz, action text,"
    " request_id text, user_id text, model text, provider text, attributes jsonb,"
    " time_assigned boolean) ON COMMIT DELETE ROWS")


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(CREATE_AUDIT_IN)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Connections go back to the pool without asyncpg's reset query (a second round trip per
    call): Warden leaves no session state on them but AUDIT_IN, which is kept on purpose (no
    LISTEN, cursors, SET or session locks; migrate() releases its lock itself). An open
    transaction is still rolled back."""


async def create_pool(url: str, min_size: int, max_size: int, command_timeout: float,
                      connect_timeout: float = 60.0) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, command_timeout=command_timeout or None,
        timeout=connect_timeout, init=init_connection, reset=_keep_session,
    )


@asynccontextmanager
async def _translated(what: str):
    """Turn constraint violations into the API's errors, naming what the caller sent."""
    try:
        yield
    except asyncpg.UniqueViolationError:
        raise already_exists(what) from None
    except asyncpg.ForeignKeyViolationError as exc:
        raise not_found(f"{_parent(exc)} referenced by {what}") from None


def _parent(exc: asyncpg.ForeignKeyViolationError) -> str:
    # detail reads: Key (org_id)=(acme) is not present in table "orgs".
    detail = getattr(exc, "detail", "") or ""
    return detail.removeprefix("Key ").split(" is not present")[0] or "parent"


def insert_sql(table: str, row: Row) -> tuple[str, list[Any]]:
    columns = [c for c, v in row.items() if v is not None]
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *"
    return sql, [row[c] for c in columns]


# Shared with store/apply.py, which writes the same rows.
ADD_MEMBERSHIPS = ("INSERT INTO user_teams (org_id, user_id, team_id)"
                   " SELECT $1, $2, unnest($3::text[])")
APP_PRINCIPALS = ("array(SELECT p.principal FROM app_principals p WHERE p.app_id = a.id"
                  " ORDER BY principal) AS principals")
UPDATE_POLICY_COLUMNS = ("id", "name", "mode", "priority", "locked", "failure_mode", "config")
# Every setting replaced, the revision bumped; scope and type never change in place.
UPDATE_POLICY = ("UPDATE policies SET name = $2, mode = $3, priority = $4, locked = $5,"
                 " failure_mode = $6, config = $7, revision = revision + 1, update_time = now()"
                 " WHERE id = $1")


async def add_principals(conn: asyncpg.Connection, app_id: str, principals: list[str]) -> None:
    """Name the app by these workload identities; ALREADY_EXISTS naming the first one another
    app holds (one principal names one app, across orgs)."""
    taken = await conn.fetchrow(
        "SELECT principal, app_id FROM app_principals WHERE principal = ANY($1::text[])"
        " AND app_id <> $2 ORDER BY principal LIMIT 1", principals, app_id)
    if taken is not None:
        raise already_exists(f"principal {taken['principal']!r} (it names app "
                             f"{taken['app_id']!r})")
    async with _translated(f"a principal of app {app_id!r}"):
        await conn.execute("INSERT INTO app_principals (principal, app_id)"
                           " SELECT unnest($2::text[]), $1",
                           app_id, principals)


@postgres_store
class PostgresDirectoryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _create(self, table: str, row: Row, what: str) -> Row:
        sql, args = insert_sql(table, row)
        async with _translated(what):
            return await self._pool.fetchrow(sql, *args)

    async def create_org(self, org: Row) -> Row:
        return await self._create("orgs", org, f"org {org['id']!r}")

    async def get_org(self, org_id: str) -> Row | None:
        return await self._pool.fetchrow("SELECT * FROM orgs WHERE id = $1", org_id)

    async def list_orgs(self, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            "SELECT * FROM orgs WHERE id > $1 ORDER BY id LIMIT $2", after, limit)

    async def create_team(self, team: Row) -> Row:
        return await self._create("teams", team, f"team {team['id']!r}")

    async def list_teams(self, org_id: str, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            "SELECT * FROM teams WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            org_id, after, limit)

    async def _create_with(self, table: str, row: Row, what: str, listed: str,
                           add: Callable[[asyncpg.Connection, list[str]], Awaitable[None]]
                           ) -> Row:
        """Insert a row and the rows of one of its listed fields (an app's principals, a
        user's teams) in one transaction."""
        items = list(row[listed])
        async with self._pool.acquire() as conn, conn.transaction():
            sql, args = insert_sql(table, {k: v for k, v in row.items() if k != listed})
            async with _translated(what):
                created = await conn.fetchrow(sql, *args)
                await add(conn, items)
        return {**created, listed: sorted(items)}

    async def create_app(self, app: Row) -> Row:
        return await self._create_with(
            "apps", app, f"app {app['id']!r}", "principals",
            lambda conn, principals: add_principals(conn, app["id"], principals))

    async def create_user(self, user: Row) -> Row:
        return await self._create_with(
            "users", user, f"user {user['id']!r}", "team_ids",
            lambda conn, teams: conn.execute(ADD_MEMBERSHIPS, user["org_id"], user["id"], teams))

    async def list_users(self, org_id: str, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            "SELECT u.*, array(SELECT team_id FROM user_teams t WHERE t.user_id = u.id"
            " ORDER BY team_id) AS team_ids FROM users u"
            " WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3", org_id, after, limit)

    async def list_apps(self, org_id: str, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            f"SELECT a.*, {APP_PRINCIPALS} FROM apps a"
            " WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3", org_id, after, limit)

    async def create_api_key(self, key: Row) -> Row:
        app = await self._pool.fetchrow("SELECT org_id FROM apps WHERE id = $1", key["app_id"])
        if app is None:
            raise not_found(f"app {key['app_id']!r}")
        return await self._create("api_keys", {**key, "org_id": app["org_id"]},
                                  f"API key {key['id']!r}")

    async def list_api_keys(self, app_id: str, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            "SELECT * FROM api_keys WHERE app_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            app_id, after, limit)

    async def revoke_api_key(self, key_id: str) -> Row | None:
        return await self._pool.fetchrow(
            # A revocation ends a key now, also one in its rotation grace (a revoke_time ahead);
            # one already ended keeps its time.
            "UPDATE api_keys SET revoke_time = CASE WHEN revoke_time <= now() THEN revoke_time"
            " ELSE now() END WHERE id = $1 RETURNING *", key_id)

    async def rotate_api_key(self, key_id: str, new_key: Row, grace: timedelta) -> Row:
        async with self._pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                "SELECT *, now() AS now FROM api_keys WHERE id = $1 FOR UPDATE", key_id)
            if old is None:
                raise not_found(f"API key {key_id!r}")
            for column, state in (("revoke_time", "revoked"), ("expire_time", "expired")):
                if old[column] is not None and old[column] <= old["now"]:
                    raise WardenError("FAILED_PRECONDITION", "FAILED_PRECONDITION",
                                      f"API key {key_id!r} is {state}; create a new key instead")
            await conn.execute(
                "UPDATE api_keys SET revoke_time = least(coalesce(revoke_time, 'infinity'),"
                " now() + $2::interval) WHERE id = $1", key_id, grace)
            copied = {c: old[c] for c in ("org_id", "app_id", "user_id", "display_name",
                                          "allowed_models", "expire_time")}
            sql, args = insert_sql("api_keys", {**copied, **new_key, "rotated_from": key_id})
            async with _translated(f"API key {new_key['id']!r}"):
                return await conn.fetchrow(sql, *args)

    async def set_provider_switch(self, switch: Row) -> Row:
        if switch["org_id"] and await self.get_org(switch["org_id"]) is None:
            raise not_found(f"org {switch['org_id']!r}")
        return await self._pool.fetchrow(
            "INSERT INTO provider_switches (provider, model, org_id, enabled, reason)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, model, org_id) DO UPDATE SET"
            " enabled = EXCLUDED.enabled, reason = EXCLUDED.reason, update_time = now()"
            " RETURNING *", switch["provider"], switch["model"], switch["org_id"],
            switch["enabled"], switch["reason"])

    async def list_provider_switches(self, org_id: str) -> list[Row]:
        return await self._pool.fetch(
            "SELECT * FROM provider_switches WHERE $1 = '' OR org_id IN ('', $1)"
            " ORDER BY provider, model, org_id", org_id)


# The org a scope belongs to, by scope kind (the policy store and reporting).
SCOPE_ORG = {
    "org": "SELECT id FROM orgs WHERE id = $1",
    "team": "SELECT org_id FROM teams WHERE id = $1",
    "app": "SELECT org_id FROM apps WHERE id = $1",
    "user": "SELECT org_id FROM users WHERE id = $1",
    "api_key": "SELECT org_id FROM api_keys WHERE id = $1",
}


@postgres_store
class PostgresPolicyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_policy(self, policy: Row) -> Row:
        kind, scope_id = policy["scope_kind"], policy["scope_id"]
        org_id = await self._pool.fetchval(SCOPE_ORG[kind], scope_id)
        if org_id is None:
            raise not_found(f"{kind} {scope_id!r}")
        sql, args = insert_sql("policies", {**policy, "org_id": org_id})
        async with _translated(f"policy {policy['id']!r}"):
            return await self._pool.fetchrow(sql, *args)

    async def get_policy(self, policy_id: str) -> Row | None:
        return await self._pool.fetchrow("SELECT * FROM policies WHERE id = $1", policy_id)

    async def update_policy(self, policy: Row, revision: int) -> Row:
        async with self._pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow("SELECT * FROM policies WHERE id = $1 FOR UPDATE",
                                      policy["id"])
            if old is None:
                raise not_found(f"policy {policy['id']!r}")
            if revision and revision != old["revision"]:
                raise WardenError(
                    "ABORTED", "REVISION_MISMATCH",
                    f"policy {policy['id']!r} is at revision {old['revision']}, not {revision}: "
                    "it changed since you read it; read it again and retry")
            for column in ("scope_kind", "scope_id", "policy_type"):
                if policy[column] != old[column]:
                    raise WardenError(
                        "FAILED_PRECONDITION", "FAILED_PRECONDITION",
                        f"policy {policy['id']!r} cannot change its {column} "
                        f"({old[column]!r} -> {policy[column]!r}): its counters belong to it; "
                        "create a new policy and delete this one")
            return await conn.fetchrow(UPDATE_POLICY + " RETURNING *",
                                       *(policy[c] for c in UPDATE_POLICY_COLUMNS))

    async def delete_policy(self, policy_id: str) -> bool:
        return await self._pool.execute("DELETE FROM policies WHERE id = $1", policy_id) \
            == "DELETE 1"

    async def list_policies(self, scope: tuple[str, str] | None, after: str,
                            limit: int) -> list[Row]:
        if scope is None:
            return await self._pool.fetch(
                "SELECT * FROM policies WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
        return await self._pool.fetch(
            "SELECT * FROM policies WHERE scope_kind = $1 AND scope_id = $2 AND id > $3 "
            "ORDER BY id LIMIT $4", *scope, after, limit)


@postgres_store
class PostgresPriceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def set_price(self, price: Row) -> Row:
        return await self._pool.fetchrow(
            "INSERT INTO model_prices (provider, model, input_micros_per_million,"
            " output_micros_per_million, cached_input_micros_per_million)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, model) DO UPDATE SET"
            " input_micros_per_million = EXCLUDED.input_micros_per_million,"
            " output_micros_per_million = EXCLUDED.output_micros_per_million,"
            " cached_input_micros_per_million = EXCLUDED.cached_input_micros_per_million,"
            " update_time = now() RETURNING *",
            price["provider"], price["model"], price["input_micros_per_million"],
            price["output_micros_per_million"], price["cached_input_micros_per_million"])

    async def list_prices(self) -> list[Row]:
        return await self._pool.fetch("SELECT * FROM model_prices ORDER BY provider, model")


@postgres_store
class PostgresAuditSink:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def admin_refused(self, method: str, peer: str, reason: str) -> None:
        await self._pool.execute(
            "INSERT INTO admin_refusals (method, peer, reason) VALUES ($1, $2, $3)",
            method, peer, reason)
