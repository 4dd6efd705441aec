"""What the rest of Warden needs from storage. Postgres implements each of these in
store/postgres.py; tests/contract runs one suite against it.

Admin-facing rows are plain mappings keyed by column name (asyncpg Records satisfy this);
the data-plane methods speak the engine's dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from warden.engine import PolicyRecord, ProviderSwitch
from warden.engine.pricing import Price
from warden.keys import KeyRecord

Row = Mapping[str, Any]


class DirectoryStore(Protocol):
    """Orgs, teams, apps, users, API keys and provider switches. Creating something that exists
    raises ALREADY_EXISTS; naming a parent that does not exist (or belongs to another org)
    raises NOT_FOUND. Lists are ordered by id; `after` is exclusive. Users carry `team_ids`."""

    async def create_org(self, org: Row) -> Row: ...
    async def get_org(self, org_id: str) -> Row | None: ...
    async def list_orgs(self, after: str, limit: int) -> list[Row]: ...
    async def create_team(self, team: Row) -> Row: ...
    async def list_teams(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_app(self, app: Row) -> Row: ...
    async def list_apps(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_user(self, user: Row) -> Row: ...
    async def list_users(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_api_key(self, key: Row) -> Row: ...
    async def list_api_keys(self, app_id: str, after: str, limit: int) -> list[Row]: ...
    async def revoke_api_key(self, key_id: str) -> Row | None: ...

    async def rotate_api_key(self, key_id: str, new_key: Row, grace: timedelta) -> Row:
        """Create `new_key` (id, prefix, hash) as a copy of the key's app, user, models and
        expiry, and end the old key's life after `grace` (never later than it already ends).
        NOT_FOUND for an unknown key, FAILED_PRECONDITION for a revoked or expired one."""
        ...

    async def set_provider_switch(self, switch: Row) -> Row: ...
    async def list_provider_switches(self, org_id: str) -> list[Row]: ...


class PolicyStore(Protocol):
    async def create_policy(self, policy: Row) -> Row: ...
    async def get_policy(self, policy_id: str) -> Row | None: ...

    async def update_policy(self, policy: Row, revision: int) -> Row:
        """Replace a policy's settings and bump its revision. `revision` > 0 makes it
        conditional (ABORTED when the stored revision differs). NOT_FOUND for an unknown id,
        FAILED_PRECONDITION for a changed scope or policy type."""
        ...

    async def delete_policy(self, policy_id: str) -> bool: ...
    async def list_policies(self, scope: tuple[str, str] | None, after: str,
                            limit: int) -> list[Row]: ...


class LookupStore(Protocol):
    """What every Authorize needs; read through warden.cache.Cache, not on the hot path."""

    async def find_api_key(self, prefix: str) -> KeyRecord | None: ...

    async def find_app(self, app_id: str) -> tuple[str, str] | None:
        """(org id, team id or "") of the app, or None."""
        ...

    async def user_teams(self, org_id: str, user_id: str) -> tuple[str, ...] | None:
        """The user's teams, or None when the org has no such user."""
        ...

    async def policies_for(self, scopes: Sequence[tuple[str, str]]
                           ) -> dict[tuple[str, str], tuple[PolicyRecord, ...]]:
        """The policies of each scope (every scope asked for is a key)."""
        ...

    async def provider_switches(self) -> tuple[ProviderSwitch, ...]: ...
    async def prices(self) -> dict[tuple[str, str], Price]: ...


class ChangeFeed(Protocol):
    async def run(self, on_change: Callable[[str, str], None],
                  on_state: Callable[[bool], None]) -> None:
        """Until cancelled: call on_change(table, row id) for every committed change to a cached
        table; on_state(True) each time the feed is listening (changes before it may have been
        missed), on_state(False) as soon as it is not."""
        ...


class PriceStore(Protocol):
    async def set_price(self, price: Row) -> Row: ...
    async def list_prices(self) -> list[Row]: ...


class AuditSink(Protocol):
    """What the API writes straight to the database (audit events go through the journal:
    ledger.py)."""

    async def admin_refused(self, method: str, peer: str, reason: str) -> None:
        """Record an Admin call refused for its credentials."""
        ...


@dataclass(frozen=True)
class Declared:
    """The state `Admin.Apply` converges the orgs it names to. Rows use the tables' column
    names; users carry `team_ids` (their memberships); policies carry `id` plus the columns of
    api.policies.policy_row."""

    orgs: Sequence[Row] = ()
    teams: Sequence[Row] = ()
    apps: Sequence[Row] = ()
    users: Sequence[Row] = ()
    policies: Sequence[Row] = ()


@dataclass(frozen=True)
class Change:
    kind: str  # org | team | app | user | policy
    id: str
    action: str  # create | update | delete
    fields: tuple[str, ...] = field(default=())


class ApplyStore(Protocol):
    async def apply(self, declared: Declared, dry_run: bool) -> list[Change]:
        """Converge the declared orgs in one transaction (serialized against other applies) and
        return every change in the order made; with dry_run, compute them and roll back. A
        declaration that cannot be applied raises WardenError and changes nothing."""
        ...
