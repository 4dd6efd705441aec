"""Postgres implementation of ApplyStore (store/base.py); the rules are in docs/policies-as-code.md.

One apply is one transaction under a transaction-scoped advisory lock, so two applies never
interleave: the second one computes its diff against what the first committed. A dry run does
exactly the same work and rolls back, so it reports what a real apply would do, refusals and
constraint errors included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from warden.errors import WardenError, not_found
from warden.store.base import Change, Declared, Row
from warden.store.postgres import (
    ADD_MEMBERSHIPS,
    UPDATE_POLICY,
    UPDATE_POLICY_COLUMNS,
    add_principals,
    insert_sql,
    postgres_store,
)

# Arbitrary but fixed, and distinct from the migration lock (store/migrate.py).
_LOCK_KEY = 0x57415244454E_0A
# An apply waits this long for another one to finish, instead of the per-call database timeout.
_LOCK_WAIT_SECONDS = 60.0

# Deleting what is still in use, or moving a row to another org: the message names the row
# and the way out.
_REFUSED = "FAILED_PRECONDITION"

_ORG_FIELDS = ("display_name", "time_zone", "currency")
_TEAM_FIELDS = ("display_name",)
_APP_FIELDS = ("display_name", "team_id", "principals")
_USER_FIELDS = ("display_name", "team_ids")
_POLICY_FIELDS = UPDATE_POLICY_COLUMNS[1:]
# A policy whose scope or type changes is another policy: its counters belong to the old one,
# so it is deleted and created again rather than updated.
_POLICY_IDENTITY = ("org_id", "scope_kind", "scope_id", "policy_type")


class _RollBack(Exception):
    """Raised to leave the transaction of a dry run without committing it."""


@postgres_store
class PostgresApplyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply(self, declared: Declared, dry_run: bool) -> list[Change]:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await _lock(conn)
                    changes = await _Convergence(conn, declared).run()
                    if dry_run:
                        raise _RollBack
            except _RollBack:
                pass
        return changes


async def _lock(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY,
                           timeout=_LOCK_WAIT_SECONDS)
    except TimeoutError:
        raise WardenError(
            "ABORTED", "BUSY",
            f"another apply has been running for over {_LOCK_WAIT_SECONDS:.0f} s; try again",
            retry_after_seconds=5.0) from None


def _differing(fields: Sequence[str], current: Row, wanted: Row) -> tuple[str, ...]:
    """The fields that differ; memberships (team_ids) are a set, in whatever order given."""
    def value(row: Row, field: str) -> object:
        return frozenset(row[field]) if field == "team_ids" else row[field]

    return tuple(sorted(f for f in fields if value(current, f) != value(wanted, f)))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class _Convergence:
    """The work of one apply, on one connection inside its transaction."""

    def __init__(self, conn: asyncpg.Connection, declared: Declared) -> None:
        self.conn = conn
        self.d = declared
        self.org_ids = [o["id"] for o in declared.orgs]
        self.changes: list[Change] = []

    async def run(self) -> list[Change]:
        orgs = {r["id"]: r for r in await self.conn.fetch(
            "SELECT * FROM orgs WHERE id = ANY($1::text[])", self.org_ids)}
        teams = await self._owned("team", "teams", self.d.teams)
        apps = await self._owned("app", "apps", self.d.apps)
        principals: dict[str, list[str]] = {a: [] for a in apps}
        for row in await self.conn.fetch(
                "SELECT app_id, principal FROM app_principals WHERE app_id = ANY($1::text[])"
                " ORDER BY principal", list(apps)):
            principals[row["app_id"]].append(row["principal"])
        apps = {i: {**r, "principals": principals[i]} for i, r in apps.items()}
        users = await self._owned("user", "users", self.d.users)
        memberships: dict[str, list[str]] = {u: [] for u in users}
        for row in await self.conn.fetch(
                "SELECT user_id, team_id FROM user_teams WHERE org_id = ANY($1::text[])"
                " ORDER BY team_id", self.org_ids):
            memberships.setdefault(row["user_id"], []).append(row["team_id"])
        users = {i: {**r, "team_ids": memberships[i]} for i, r in users.items()}
        wanted_policies = await self._with_policy_orgs()
        policies = await self._owned("policy", "policies", wanted_policies, movable=True)

        await self._converge_orgs(orgs)
        await self._upsert("team", teams, self.d.teams, _TEAM_FIELDS, self._write_team)
        await self._upsert("user", users, self.d.users, _USER_FIELDS, self._write_user)
        await self._release_principals(apps)
        await self._upsert("app", apps, self.d.apps, _APP_FIELDS, self._write_app)
        await self._converge_policies(policies, wanted_policies)

        # Deletions last, children before parents, once everything kept points at its new place.
        gone_apps = _gone(apps, self.d.apps)
        gone_users = _gone(users, self.d.users)
        await self._refuse_orphaning(apps, gone_apps, users, gone_users)
        for policy_id in _gone(policies, wanted_policies):
            await self._delete("policy", "policies", policy_id)
        for app_id in gone_apps:
            await self._delete("app", "apps", app_id)
        for user_id in gone_users:
            await self._delete("user", "users", user_id)
        gone_teams = _gone(teams, self.d.teams)
        await self._refuse_emptied_teams(gone_teams)
        for team_id in gone_teams:
            await self._delete("team", "teams", team_id)
        return self.changes

    async def _owned(self, kind: str, table: str, wanted: Sequence[Row],
                     movable: bool = False) -> dict[str, Row]:
        """The current rows of the declared orgs, after refusing declared ids that exist
        elsewhere: ids are global, and an apply must never take over another org's rows."""
        ids = [w["id"] for w in wanted]
        rows = await self.conn.fetch(
            f"SELECT * FROM {table} WHERE org_id = ANY($1::text[]) OR id = ANY($2::text[])"
            " ORDER BY id", self.org_ids, ids)
        by_id = {r["id"]: dict(r) for r in rows}
        for w in wanted:
            existing = by_id.get(w["id"])
            if existing is None:
                continue
            if existing["org_id"] not in self.org_ids:
                raise WardenError(
                    "ALREADY_EXISTS", "ALREADY_EXISTS",
                    f"{kind} {w['id']!r} already exists in org {existing['org_id']!r}, which "
                    "this apply does not declare; ids are global, so choose another id")
            if not movable and existing["org_id"] != w["org_id"]:
                raise WardenError(
                    "FAILED_PRECONDITION", _REFUSED,
                    f"{kind} {w['id']!r} belongs to org {existing['org_id']!r}; moving it to "
                    f"org {w['org_id']!r} is not supported: declare it under "
                    f"{existing['org_id']!r} or give it a new id")
        return {i: r for i, r in by_id.items() if r["org_id"] in self.org_ids}

    async def _with_policy_orgs(self) -> list[dict[str, Any]]:
        """Declared policies with the org their scope belongs to (as CreatePolicy stores it)."""
        org_of = {"org": {o: o for o in self.org_ids},
                  "team": {t["id"]: t["org_id"] for t in self.d.teams},
                  "app": {a["id"]: a["org_id"] for a in self.d.apps},
                  "user": {u["id"]: u["org_id"] for u in self.d.users}}
        key_ids = [p["scope_id"] for p in self.d.policies if p["scope_kind"] == "api_key"]
        org_of["api_key"] = {r["id"]: r["org_id"] for r in await self.conn.fetch(
            "SELECT id, org_id FROM api_keys WHERE id = ANY($1::text[])", key_ids)}
        result = []
        for i, policy in enumerate(self.d.policies):
            org_id = org_of[policy["scope_kind"]].get(policy["scope_id"])
            if org_id is None:
                # api/apply.py checked every other kind against the declaration.
                raise not_found(f"API key {policy['scope_id']!r} (the scope of policies[{i}], "
                                f"{policy['id']!r})")
            if org_id not in self.org_ids:
                raise WardenError(
                    "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                    f"invalid request: policies[{i}].scope.id",
                    [(f"policies[{i}].scope.id",
                      f"API key {policy['scope_id']!r} belongs to org {org_id!r}, which this "
                      "request does not declare")])
            result.append({**policy, "org_id": org_id})
        return result

    async def _execute(self, what: str, sql: str, *args: Any) -> None:
        """Run one write, turning a constraint violation into an error that names the row."""
        try:
            await self.conn.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise WardenError("ALREADY_EXISTS", "ALREADY_EXISTS",
                              f"cannot {what}: {exc.detail or exc}") from None
        except asyncpg.ForeignKeyViolationError as exc:
            detail = exc.detail or str(exc)
            if "still referenced" in detail:
                raise WardenError("FAILED_PRECONDITION", _REFUSED,
                                  f"cannot {what}: {detail}") from None
            raise WardenError("NOT_FOUND", "NOT_FOUND", f"cannot {what}: {detail}") from None

    async def _insert(self, what: str, table: str, row: Row) -> None:
        sql, args = insert_sql(table, row)
        await self._execute(what, sql, *args)

    async def _converge_orgs(self, current: Mapping[str, Row]) -> None:
        for org in self.d.orgs:
            existing = current.get(org["id"])
            if existing is None:
                await self._insert(f"create org {org['id']!r}", "orgs", org)
                self.changes.append(Change("org", org["id"], "create"))
            elif fields := _differing(_ORG_FIELDS, existing, org):
                await self._execute(
                    f"update org {org['id']!r}",
                    "UPDATE orgs SET display_name = $2, time_zone = $3, currency = $4"
                    " WHERE id = $1",
                    org["id"], org["display_name"], org["time_zone"], org["currency"])
                self.changes.append(Change("org", org["id"], "update", fields))

    async def _upsert(self, kind: str, current: Mapping[str, Row], wanted: Sequence[Row],
                      fields: Sequence[str],
                      write: Callable[[Row, Row | None], Awaitable[None]]) -> None:
        for row in wanted:
            existing = current.get(row["id"])
            if existing is None:
                await write(row, None)
                self.changes.append(Change(kind, row["id"], "create"))
            elif differing := _differing(fields, existing, row):
                await write(row, existing)
                self.changes.append(Change(kind, row["id"], "update", differing))

    async def _write_team(self, team: Row, existing: Row | None) -> None:
        if existing is None:
            await self._insert(f"create team {team['id']!r}", "teams", team)
        else:
            await self._execute(f"update team {team['id']!r}",
                                "UPDATE teams SET display_name = $2 WHERE id = $1",
                                team["id"], team["display_name"])

    async def _release_principals(self, apps: Mapping[str, Row]) -> None:
        """Before any app takes a principal: drop those their apps no longer declare, so that
        one apply can move a principal from one app to another."""
        wanted = {a["id"]: set(a["principals"]) for a in self.d.apps}
        for app_id, app in apps.items():
            if dropped := sorted(set(app["principals"]) - wanted.get(app_id, set())):
                await self._execute(f"remove principals from app {app_id!r}",
                                    "DELETE FROM app_principals WHERE app_id = $1"
                                    " AND principal = ANY($2::text[])", app_id, dropped)

    async def _write_app(self, app: Row, existing: Row | None) -> None:
        """The app and its principals, which are part of the app in the API."""
        if existing is None:
            await self._insert(f"create app {app['id']!r}", "apps",
                               {k: v for k, v in app.items() if k != "principals"})
        elif _differing(("display_name", "team_id"), existing, app):
            await self._execute(f"update app {app['id']!r}",
                                "UPDATE apps SET team_id = $2, display_name = $3 WHERE id = $1",
                                app["id"], app["team_id"], app["display_name"])
        added = sorted(set(app["principals"]) - set(existing["principals"] if existing else ()))
        if added:
            try:
                await add_principals(self.conn, app["id"], added)
            except WardenError as exc:
                raise WardenError(exc.code, exc.reason,
                                  f"cannot name app {app['id']!r}: {exc.message}") from None

    async def _write_user(self, user: Row, existing: Row | None) -> None:
        """The user and its memberships, which are part of the user in the API (team_ids)."""
        if existing is None:
            await self._insert(f"create user {user['id']!r}", "users",
                               {k: v for k, v in user.items() if k != "team_ids"})
        elif existing["display_name"] != user["display_name"]:
            await self._execute(f"update user {user['id']!r}",
                                "UPDATE users SET display_name = $2 WHERE id = $1",
                                user["id"], user["display_name"])
        had = set(existing["team_ids"]) if existing else set()
        wanted = set(user["team_ids"])
        if had - wanted:
            await self._execute(f"remove user {user['id']!r} from teams",
                                "DELETE FROM user_teams WHERE user_id = $1"
                                " AND team_id = ANY($2::text[])", user["id"], sorted(had - wanted))
        if wanted - had:
            await self._execute(f"add user {user['id']!r} to teams", ADD_MEMBERSHIPS,
                                user["org_id"], user["id"], sorted(wanted - had))

    async def _converge_policies(self, current: Mapping[str, Row],
                                 wanted: Sequence[Row]) -> None:
        for policy in wanted:
            pid = policy["id"]
            existing = current.get(pid)
            if existing is not None and _differing(_POLICY_IDENTITY, existing, policy):
                await self._delete("policy", "policies", pid)
                existing = None
            if existing is None:
                await self._insert(f"create policy {pid!r}", "policies", policy)
                self.changes.append(Change("policy", pid, "create"))
            elif fields := _differing(_POLICY_FIELDS, existing, policy):
                await self._execute(f"update policy {pid!r}", UPDATE_POLICY,
                                    *(policy[c] for c in UPDATE_POLICY_COLUMNS))
                self.changes.append(Change("policy", pid, "update", fields))

    async def _refuse_orphaning(self, apps: Mapping[str, Row], gone_apps: Sequence[str],
                                users: Mapping[str, Row], gone_users: Sequence[str]) -> None:
        """Refuse, naming every one at once, to delete apps or users that API keys or logged
        requests still name: the decision log and audit trail must keep meaning something."""
        problems = []
        for kind, rows, gone in (("app", apps, gone_apps), ("user", users, gone_users)):
            for row_id in gone:
                keys = await self.conn.fetchval(
                    f"SELECT count(*) FROM api_keys WHERE {kind}_id = $1", row_id)
                logged = await self.conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM requests WHERE org_id = $1"
                    f" AND {kind}_id = $2)", rows[row_id]["org_id"], row_id)
                uses = ([_plural(keys, "API key") + " (revoked keys count)"] if keys else []) \
                    + (["logged requests"] if logged else [])
                if uses:
                    problems.append(f"{kind} {row_id!r} has {' and '.join(uses)}")
        if problems:
            raise WardenError(
                "FAILED_PRECONDITION", _REFUSED,
                f"refusing to delete what is still in use: {'; '.join(problems)}. Keep them "
                "in the file; revoke their keys (warden keys revoke) to stop their use")

    async def _refuse_emptied_teams(self, gone_teams: Sequence[str]) -> None:
        rows = await self.conn.fetch(
            "SELECT team_id, array_agg(id ORDER BY id) AS apps FROM apps"
            " WHERE team_id = ANY($1::text[]) GROUP BY team_id ORDER BY team_id", gone_teams)
        if rows:
            problems = [f"team {r['team_id']!r} still has apps {', '.join(r['apps'])}"
                        for r in rows]
            raise WardenError(
                "FAILED_PRECONDITION", _REFUSED,
                f"refusing to delete teams that apps still belong to: {'; '.join(problems)}. "
                "Keep the team, or point those apps at another team (team_id) in the file")

    async def _delete(self, kind: str, table: str, row_id: str) -> None:
        await self._execute(f"delete {kind} {row_id!r}",
                            f"DELETE FROM {table} WHERE id = $1", row_id)
        self.changes.append(Change(kind, row_id, "delete"))


def _gone(current: Mapping[str, Row], wanted: Iterable[Row]) -> list[str]:
    keep = {w["id"] for w in wanted}
    return sorted(i for i in current if i not in keep)
