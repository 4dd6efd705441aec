"""One fixture per store Protocol, each parametrized by implementation, so that every contract
test runs against every implementation (`test_x[postgres]`). An implementation is a `Backend`:
its stores, all over the same data, and the few writes and reads the suites need that no
Protocol of the control plane offers (decisions, usage, quota grants and audit events come from
the data plane; admin refusals are only ever written). Adding an implementation is one more
name in IMPLEMENTATIONS and one `<name>_backend` fixture.

Postgres runs with the real schema: one database per run, cloned from tests/conftest.py's
migrated template as db_url's databases are, and emptied back to the template's state before each
test: cloning and dropping a database per test costs about half a second on a small machine,
emptying this one a few milliseconds. Each test gets its own asyncpg pool, made as the server
makes it.
"""

from __future__ import annotations

import asyncio
import graphlib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import pytest

from tests.conftest import with_database
from warden.store.apply import PostgresApplyStore
from warden.store.audit_query import AuditQueryStore, PostgresAuditQueryStore
from warden.store.base import (
    ApplyStore,
    AuditSink,
    ChangeFeed,
    DirectoryStore,
    LookupStore,
    PolicyStore,
    PriceStore,
    Row,
)
from warden.store.lookups import PostgresChangeFeed, PostgresLookupStore
from warden.store.postgres import (
    PostgresAuditSink,
    PostgresDirectoryStore,
    PostgresPolicyStore,
    PostgresPriceStore,
    create_pool,
)
from warden.store.reporting import PostgresReportingStore, ReportingStore

IMPLEMENTATIONS = ["postgres"]


class Seed(Protocol):
    """What the suites write or read outside the Protocols under test."""

    async def now(self) -> datetime:
        """The store's clock, which key expiry, rotation grace and quota windows follow."""
        ...

    async def log_request(self, org_id: str, request_id: str, at: datetime, *, app_id: str,
                          api_key_id: str = "k1", user_id: str = "", model: str = "gpt-4o",
                          provider: str = "openai", decision: str = "allow",
                          reason: str = "ALLOWED", input_tokens: int = 0,
                          max_output_tokens: int = 100, reserved_cost_micros: int = 0) -> None:
        """A decision as the decision log stores it."""
        ...

    async def settle(self, org_id: str, request_id: str, input_tokens: int, output_tokens: int,
                     cost_micros: int, *, cached_input_tokens: int = 0,
                     outcome: str = "completed", latency_ms: int | None = None) -> None:
        """The usage of a logged request, recorded a second after its decision."""
        ...

    async def grant(self, policy_id: str, bucket_start: datetime, amount: int) -> None:
        """Allowance handed out by a quota's lease in the bucket starting at bucket_start."""
        ...

    async def store_event(self, org_id: str, event_id: str, at: datetime, *, app_id: str,
                          action: str = "llm.call", request_id: str = "", user_id: str = "",
                          model: str = "", provider: str = "",
                          attributes: Mapping[str, Any] | None = None) -> None:
        ...

    async def store_snapshot(self, org_id: str, snapshot_id: str, body: Any) -> None:
        """An explanation snapshot, which decision events name by id."""
        ...

    async def admin_refusals(self) -> list[Row]:
        """Every refusal AuditSink stored, oldest first: method, peer, reason, time."""
        ...

    async def interrupt_feed(self) -> int:
        """Cut the change feed's connection to the store; return how many were cut."""
        ...

    async def feed_connections(self) -> int:
        """How many connections change feeds hold open to the store."""
        ...


@dataclass(frozen=True)
class Backend:
    name: str
    directory: DirectoryStore
    policies: PolicyStore
    lookups: LookupStore
    feed: ChangeFeed
    prices: PriceStore
    audit: AuditSink
    apply: ApplyStore
    reporting: ReportingStore
    audit_query: AuditQueryStore
    seed: Seed


@pytest.fixture(params=IMPLEMENTATIONS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def directory_store(backend: Backend) -> DirectoryStore:
    return backend.directory


@pytest.fixture
def policy_store(backend: Backend) -> PolicyStore:
    return backend.policies


@pytest.fixture
def lookup_store(backend: Backend) -> LookupStore:
    return backend.lookups


@pytest.fixture
def change_feed(backend: Backend) -> ChangeFeed:
    return backend.feed


@pytest.fixture
def price_store(backend: Backend) -> PriceStore:
    return backend.prices


@pytest.fixture
def audit_sink(backend: Backend) -> AuditSink:
    return backend.audit


@pytest.fixture
def apply_store(backend: Backend) -> ApplyStore:
    return backend.apply


@pytest.fixture
def reporting_store(backend: Backend) -> ReportingStore:
    return backend.reporting


@pytest.fixture
def audit_query_store(backend: Backend) -> AuditQueryStore:
    return backend.audit_query


@pytest.fixture
def seed(backend: Backend) -> Seed:
    return backend.seed


# -- Postgres ------------------------------------------------------------------------------------

# The feed's own connections carry this name, so that a test can find and cut exactly them.
_FEED_APPLICATION = "warden_contract_feed"


class PostgresSeed:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def now(self) -> datetime:
        return await self._pool.fetchval("SELECT now()")

    async def log_request(self, org_id: str, request_id: str, at: datetime, *, app_id: str,
                          api_key_id: str = "k1", user_id: str = "", model: str = "gpt-4o",
                          provider: str = "openai", decision: str = "allow",
                          reason: str = "ALLOWED", input_tokens: int = 0,
                          max_output_tokens: int = 100, reserved_cost_micros: int = 0) -> None:
        await self._pool.execute(
            "INSERT INTO requests (org_id, request_id, app_id, api_key_id, user_id, model,"
            " provider, decision, reason, input_tokens, max_output_tokens, create_time,"
            " reserved_cost_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            " $13)", org_id, request_id, app_id, api_key_id, user_id, model, provider, decision,
            reason, input_tokens, max_output_tokens, at, reserved_cost_micros)

    async def settle(self, org_id: str, request_id: str, input_tokens: int, output_tokens: int,
                     cost_micros: int, *, cached_input_tokens: int = 0,
                     outcome: str = "completed", latency_ms: int | None = None) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO usage (org_id, request_id, input_tokens, output_tokens,"
                " cached_input_tokens, cost_micros, cost_source, model, provider, outcome,"
                " latency_ms, record_time)"
                " SELECT org_id, request_id, $3, $4, $5, $6, 'reported', model, provider, $7, $8,"
                " create_time + interval '1 second' FROM requests"
                " WHERE org_id = $1 AND request_id = $2", org_id, request_id, input_tokens,
                output_tokens, cached_input_tokens, cost_micros, outcome, latency_ms)
            await conn.execute(
                "UPDATE requests SET settle_time = create_time + interval '1 second'"
                " WHERE org_id = $1 AND request_id = $2", org_id, request_id)

    async def grant(self, policy_id: str, bucket_start: datetime, amount: int) -> None:
        await self._pool.execute(
            "INSERT INTO quota_buckets (policy_id, bucket_start, granted) VALUES ($1, $2, $3)",
            policy_id, bucket_start, amount)

    async def store_event(self, org_id: str, event_id: str, at: datetime, *, app_id: str,
                          action: str = "llm.call", request_id: str = "", user_id: str = "",
                          model: str = "", provider: str = "",
                          attributes: Mapping[str, Any] | None = None) -> None:
        await self._pool.execute(
            "INSERT INTO audit_events (org_id, event_id, app_id, event_time, action, request_id,"
            " user_id, model, provider, attributes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            " $10)", org_id, event_id, app_id, at, action, request_id, user_id, model, provider,
            dict(attributes or {}))

    async def store_snapshot(self, org_id: str, snapshot_id: str, body: Any) -> None:
        await self._pool.execute(
            "INSERT INTO explanation_snapshots (org_id, id, body) VALUES ($1, $2, $3)",
            org_id, snapshot_id, body)

    async def admin_refusals(self) -> list[Row]:
        return await self._pool.fetch(
            "SELECT method, peer, reason, time FROM admin_refusals ORDER BY id")

    async def interrupt_feed(self) -> int:
        return await self._pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()", _FEED_APPLICATION)

    async def feed_connections(self) -> int:
        return await self._pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()", _FEED_APPLICATION)


async def _emptying_sql(conn: asyncpg.Connection) -> str:
    """DELETEs, children first, of every table the migrations left empty (the migrations' own
    bookkeeping is kept), so that a table a new migration adds is emptied too."""
    tables = [r["name"] for r in await conn.fetch(
        "SELECT c.oid::regclass::text AS name FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")]
    empty = {t for t in tables if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {t})")}
    order = graphlib.TopologicalSorter({t: set() for t in empty})
    for ref in await conn.fetch(
            "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent"
            " FROM pg_constraint WHERE contype = 'f' AND conrelid <> confrelid"):
        if ref["child"] in empty and ref["parent"] in empty:
            order.add(ref["parent"], ref["child"])
    return "; ".join(f"DELETE FROM {t}" for t in order.static_order())


@dataclass(frozen=True)
class ContractDatabase:
    url: str
    emptying_sql: str


@pytest.fixture(scope="session")
def contract_database(server_url: str, template_db: str) -> Iterator[ContractDatabase]:
    name = f"warden_c_{uuid.uuid4().hex[:12]}"

    async def create() -> str:
        conn = await asyncpg.connect(server_url)
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        await conn.close()
        conn = await asyncpg.connect(with_database(server_url, name))
        try:
            return await _emptying_sql(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(server_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    emptying = asyncio.run(create())
    yield ContractDatabase(with_database(server_url, name), emptying)
    asyncio.run(drop())


@pytest.fixture
async def postgres_backend(contract_database: ContractDatabase) -> AsyncIterator[Backend]:
    db_url = contract_database.url
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(contract_database.emptying_sql)
    finally:
        await conn.close()
    pool = await create_pool(db_url, min_size=1, max_size=4, command_timeout=30)
    # asyncpg passes unknown URL parameters on as server settings.
    feed_url = f"{db_url}{'&' if '?' in db_url else '?'}application_name={_FEED_APPLICATION}"
    try:
        yield Backend(
            name="postgres",
            directory=PostgresDirectoryStore(pool),
            policies=PostgresPolicyStore(pool),
            lookups=PostgresLookupStore(pool),
            feed=PostgresChangeFeed(feed_url, check_interval=0.5),
            prices=PostgresPriceStore(pool),
            audit=PostgresAuditSink(pool),
            apply=PostgresApplyStore(pool),
            reporting=PostgresReportingStore(pool),
            audit_query=PostgresAuditQueryStore(pool),
            seed=PostgresSeed(pool),
        )
    finally:
        await pool.close()

