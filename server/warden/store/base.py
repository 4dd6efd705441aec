"""What the rest of Warden needs from storage. Postgres implements each of these in
store/postgres.py; tests/contract runs one suite against it.

Admin-facing rows are plain mappings keyed by column name (asyncpg Records satisfy this);
the data-plane methods speak the engine's dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from warden.engine import Decision, LimitOutcome, Plan, PolicyRecord
from warden.engine.pricing import Price
from warden.keys import KeyRecord

Row = Mapping[str, Any]


class DirectoryStore(Protocol):
    """Orgs, apps and API keys. Creating something that exists raises ALREADY_EXISTS; naming a
    parent that does not exist raises NOT_FOUND. Lists are ordered by id; `after` is exclusive."""

    async def create_org(self, org: Row) -> Row: ...
    async def get_org(self, org_id: str) -> Row | None: ...
    async def list_orgs(self, after: str, limit: int) -> list[Row]: ...
    async def create_app(self, app: Row) -> Row: ...
    async def list_apps(self, org_id: str, after: str, limit: int) -> list[Row]: ...
    async def create_api_key(self, key: Row) -> Row: ...
    async def list_api_keys(self, app_id: str, after: str, limit: int) -> list[Row]: ...
    async def revoke_api_key(self, key_id: str) -> Row | None: ...
    async def find_api_key(self, prefix: str) -> KeyRecord | None: ...


class PolicyStore(Protocol):
    async def create_policy(self, policy: Row) -> Row: ...
    async def get_policy(self, policy_id: str) -> Row | None: ...
    async def delete_policy(self, policy_id: str) -> bool: ...
    async def list_policies(self, scope: tuple[str, str] | None, after: str,
                            limit: int) -> list[Row]: ...
    async def policies_for(self, scopes: Sequence[tuple[str, str]]) -> list[PolicyRecord]: ...


class PriceStore(Protocol):
    async def set_price(self, price: Row) -> Row: ...
    async def list_prices(self) -> list[Row]: ...


class CounterStore(Protocol):
    async def authorize(self, plan: Plan,
                        decide: Callable[[Plan, list[LimitOutcome]], Decision]) -> Decision:
        """Take the plan's limit checks all-or-nothing on the database clock, let `decide` turn
        the outcomes into a Decision, and log the decision under the request id, in one
        transaction. A request id already logged for the org raises ALREADY_EXISTS and counts
        nothing."""
        ...


class UsageStore(Protocol):
    async def record_usage(self, org_id: str, usage: Row,
                           cost: Callable[[Price], int] | None) -> tuple[int, bool]:
        """Store the usage of an allowed request once; return (cost_micros, duplicate).
        `cost` prices it when the caller did not report `cost_micros`."""
        ...


class AuditSink(Protocol):
    async def append(self, org_id: str, app_id: str, events: Sequence[Row]) -> int:
        """Store the events atomically, each once per (org, event_id); return how many were new."""
        ...
