"""The Postgres implementations of store/base.py, all over one asyncpg pool."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from warden.engine import Decision, LimitOutcome, Plan
from warden.engine.pricing import Price
from warden.errors import WardenError, already_exists, not_found
from warden.store.base import Row


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, min_size: int, max_size: int,
                      command_timeout: float) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, command_timeout=command_timeout or None,
        init=init_connection,
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
UPDATE_POLICY_COLUMNS = ("id", "name", "mode", "priority", "locked", "failure_mode", "config")
# Every setting replaced, the revision bumped; scope and type never change in place.
UPDATE_POLICY = ("UPDATE policies SET name = $2, mode = $3, priority = $4, locked = $5,"
                 " failure_mode = $6, config = $7, revision = revision + 1, update_time = now()"
                 " WHERE id = $1")


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

    async def create_app(self, app: Row) -> Row:
        return await self._create("apps", app, f"app {app['id']!r}")

    async def create_user(self, user: Row) -> Row:
        teams = list(user["team_ids"])
        row = {k: v for k, v in user.items() if k != "team_ids"}
        async with self._pool.acquire() as conn, conn.transaction():
            sql, args = insert_sql("users", row)
            async with _translated(f"user {user['id']!r}"):
                created = await conn.fetchrow(sql, *args)
            async with _translated(f"user {user['id']!r}"):
                await conn.execute(ADD_MEMBERSHIPS, user["org_id"], user["id"], teams)
        return {**created, "team_ids": sorted(teams)}

    async def list_users(self, org_id: str, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            "SELECT u.*, array(SELECT team_id FROM user_teams t WHERE t.user_id = u.id"
            " ORDER BY team_id) AS team_ids FROM users u"
            " WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3", org_id, after, limit)

    async def list_apps(self, org_id: str, after: str, limit: int) -> list[Row]:
        return await self._pool.fetch(
            "SELECT * FROM apps WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            org_id, after, limit)

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
            "UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) WHERE id = $1 "
            "RETURNING *", key_id)

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


# The org a policy's scope belongs to, by scope kind.
_SCOPE_ORG = {
    "org": "SELECT id FROM orgs WHERE id = $1",
    "team": "SELECT org_id FROM teams WHERE id = $1",
    "app": "SELECT org_id FROM apps WHERE id = $1",
    "user": "SELECT org_id FROM users WHERE id = $1",
    "api_key": "SELECT org_id FROM api_keys WHERE id = $1",
}


class PostgresPolicyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_policy(self, policy: Row) -> Row:
        kind, scope_id = policy["scope_kind"], policy["scope_id"]
        org_id = await self._pool.fetchval(_SCOPE_ORG[kind], scope_id)
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


# One statement per limit: take `amount` of the current window if it fits, and report the
# window's count either way. ON CONFLICT ... WHERE re-checks the locked row, so concurrent
# sidecars can never push a window past its limit.
_TAKE = """
WITH w AS (SELECT date_bin($2::interval, now(), timestamptz 'epoch') AS start),
up AS (
    INSERT INTO rate_counters AS c (policy_id, window_start, count)
    SELECT $1::text, w.start, $3::bigint FROM w WHERE $3::bigint <= $4::bigint
    ON CONFLICT (policy_id, window_start) DO UPDATE SET count = c.count + EXCLUDED.count
        WHERE c.count + EXCLUDED.count <= $4::bigint
    RETURNING c.count)
SELECT (SELECT count FROM up) AS taken,
       coalesce((SELECT r.count FROM rate_counters r
                 WHERE r.policy_id = $1::text AND r.window_start = w.start), 0) AS current,
       now() AS now, w.start + $2::interval AS reset_time
FROM w
"""

_LOG_DECISION = """
WITH touched AS (
    UPDATE api_keys SET last_used_time = now()
    WHERE id = $3 AND (last_used_time IS NULL OR last_used_time < now() - interval '1 minute'))
INSERT INTO requests (org_id, request_id, app_id, api_key_id, user_id, model, provider,
                      decision, reason, input_tokens, max_output_tokens)
VALUES ($1, $2, $4, $3, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (org_id, request_id) DO NOTHING
RETURNING 1
"""


class PostgresCounterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def authorize(self, plan: Plan,
                        decide: Callable[[Plan, list[LimitOutcome]], Decision]) -> Decision:
        identity, request = plan.identity, plan.request
        async with self._pool.acquire() as conn, conn.transaction():
            limits = conn.transaction()
            await limits.start()
            outcomes = []
            for check in plan.checks:
                assert check.policy.rate_limit is not None
                limit = check.policy.rate_limit
                row = await conn.fetchrow(
                    _TAKE, check.policy.id, timedelta(seconds=limit.window_seconds),
                    check.amount, limit.limit)
                admitted = row["taken"] is not None
                outcomes.append(LimitOutcome(check, admitted, row["current"] if not admitted
                                             else row["taken"], row["now"], row["reset_time"]))
            decision = decide(plan, outcomes)
            if decision.allowed:
                await limits.commit()
            else:
                await limits.rollback()
            # An allowed call is logged with the model and provider it was routed to, which
            # RecordUsage prices by default.
            route = decision.route
            logged = await conn.fetchval(
                _LOG_DECISION, identity.org_id, request.request_id, identity.api_key_id,
                identity.app_id, request.user_id or identity.user_id,
                route.model if route else request.model,
                route.provider if route else request.provider,
                "allow" if decision.allowed else "deny", decision.reason.value,
                request.input_tokens, request.max_output_tokens)
            if logged is None:
                raise WardenError(
                    "ALREADY_EXISTS", "REQUEST_ID_REUSED",
                    f"request_id {request.request_id!r} was already authorized; "
                    "use a new id for each LLM call")
        if not decision.allowed:
            # Nothing was counted: report the windows as they stand.
            outcomes = [o if not o.admitted else
                        LimitOutcome(o.check, True, o.used - o.check.amount, o.now, o.reset_time)
                        for o in outcomes]
            decision = decide(plan, outcomes)
        return decision


class PostgresUsageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record_usage(self, org_id: str, usage: Row,
                           cost: Callable[[Price], int] | None) -> tuple[int, bool]:
        request_id = usage["request_id"]
        async with self._pool.acquire() as conn, conn.transaction():
            request = await conn.fetchrow(
                "SELECT decision, model, provider FROM requests"
                " WHERE org_id = $1 AND request_id = $2", org_id, request_id)
            if request is None:
                raise WardenError("NOT_FOUND", "NOT_FOUND",
                                  f"no Authorize was made for request_id {request_id!r}")
            if request["decision"] != "allow":
                raise WardenError("FAILED_PRECONDITION", "REQUEST_NOT_AUTHORIZED",
                                  f"request_id {request_id!r} was denied by Authorize")
            row = {**usage, "model": usage["model"] or request["model"],
                   "provider": usage["provider"] or request["provider"]}
            if cost is not None:
                price = await conn.fetchrow(
                    "SELECT input_micros_per_million, output_micros_per_million,"
                    " cached_input_micros_per_million FROM model_prices"
                    " WHERE model = $1 AND provider IN ($2, '')"
                    " ORDER BY provider = $2 DESC LIMIT 1", row["model"], row["provider"])
                if price is None:
                    raise WardenError(
                        "FAILED_PRECONDITION", "MODEL_NOT_PRICED",
                        f"model {row['model']!r} (provider {row['provider']!r}) has no price; "
                        "set one with Admin.SetModelPrice or report cost_micros")
                row["cost_micros"], row["cost_source"] = cost(Price(**price)), "priced"
            sql, args = insert_sql("usage", {**row, "org_id": org_id})
            stored = await conn.fetchrow(sql.replace("RETURNING *", "ON CONFLICT DO NOTHING "
                                                     "RETURNING cost_micros"), *args)
            if stored is not None:
                return stored["cost_micros"], False
            existing = await conn.fetchrow(
                "SELECT * FROM usage WHERE org_id = $1 AND request_id = $2", org_id, request_id)
        # A priced cost may differ on retry if the price changed meanwhile; that is no conflict.
        compared = [k for k in row if not (k == "cost_micros" and row["cost_source"] == "priced")]
        if any(existing[k] != row[k] for k in compared):
            raise WardenError("ALREADY_EXISTS", "USAGE_CONFLICT",
                              f"usage for request_id {request_id!r} was already recorded "
                              "with different values")
        return existing["cost_micros"], True


class PostgresAuditSink:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append(self, org_id: str, app_id: str, events: Sequence[Row]) -> int:
        columns = ("event_id", "event_time", "action", "request_id", "user_id", "model",
                   "provider", "attributes")
        types = ("text", "timestamptz", "text", "text", "text", "text", "text", "jsonb")
        arrays = [[e[c] for e in events] for c in columns]
        unnest = ", ".join(f"${i + 3}::{t}[]" for i, t in enumerate(types))
        status = await self._pool.execute(
            f"INSERT INTO audit_events (org_id, app_id, {', '.join(columns)})"
            f" SELECT $1, $2, * FROM unnest({unnest}) ON CONFLICT DO NOTHING",
            org_id, app_id, *arrays)
        return int(status.rsplit(" ", 1)[1])

    async def admin_refused(self, method: str, peer: str, reason: str) -> None:
        await self._pool.execute(
            "INSERT INTO admin_refusals (method, peer, reason) VALUES ($1, $2, $3)",
            method, peer, reason)
