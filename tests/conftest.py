"""Shared fixtures: a real Postgres (embedded pgserver by default, or WARDEN_TEST_DATABASE_URL),
a fresh database per test cloned from a migrated template, and a real Warden on a real port."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from warden.app import App
from warden.settings import Settings
from warden.store.migrate import migrate
from warden.v1 import admin_pb2_grpc, warden_pb2_grpc

ADMIN_TOKEN = "test-admin-token"
KEY_PEPPER = "test-key-pepper"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a maintenance database on the Postgres server the tests use."""
    external = os.environ.get("WARDEN_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import pgserver

    pgdata = tempfile.mkdtemp(prefix="warden-test-pg-")
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"warden_tpl_{uuid.uuid4().hex[:10]}"

    async def setup() -> None:
        conn = await asyncpg.connect(server_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        conn = await asyncpg.connect(with_database(server_url, name))
        await migrate(conn)
        await conn.close()

    asyncio.run(setup())
    yield name
    asyncio.run(_drop(server_url, name))


async def _drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture
async def empty_db(server_url: str) -> AsyncIterator[str]:
    """A new database with no schema at all."""
    name = f"warden_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(server_url, name)
    await _drop(server_url, name)


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """A new, migrated database for this test alone."""
    name = f"warden_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await conn.close()
    yield with_database(server_url, name)
    await _drop(server_url, name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


def settings_for(db_url: str, data_dir: str, **overrides: str) -> Settings:
    values = {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "database_url": db_url,
              "data_dir": data_dir, "admin_token": ADMIN_TOKEN, "key_pepper": KEY_PEPPER,
              "shutdown_grace_seconds": "2", "health_interval_seconds": "0.2",
              # A loaded test machine may take over a second to grant a lease: that must not
              # turn into a fail-open admission. Outage tests stop the database instead.
              "lease_timeout_seconds": "30"}
    values.update(overrides)
    return Settings.load(env={}, overrides=values)


@pytest.fixture
async def warden(db_url: str, tmp_path) -> AsyncIterator[App]:
    app = App(settings_for(db_url, str(tmp_path)))
    await app.start()
    yield app
    await app.stop()


class Client:
    """Stubs for one running Warden, with the admin token on Admin calls."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.warden = warden_pb2_grpc.WardenStub(channel)
        self.admin = admin_pb2_grpc.AdminStub(channel)
        self.channel = channel
        self.auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture
async def client(warden: App) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(warden.target) as channel:
        yield Client(channel)


@pytest.fixture(autouse=True)
async def _no_unhandled_loop_errors() -> AsyncIterator[None]:
    """Fail a test whose event loop saw an exception nobody handled."""
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    loop.set_exception_handler(None)
    assert not seen, f"unhandled exceptions in the event loop: {seen}"


@pytest.fixture
async def fleet(tmp_path):
    """Sidecar processes (tests/sidecars.py), killed at the end if a test left any running."""
    from tests.sidecars import Fleet

    sidecars = Fleet(tmp_path)
    try:
        yield sidecars
    finally:
        await sidecars.close()


@pytest.fixture
async def private_pg() -> AsyncIterator:
    """A Postgres of the test's own that it may stop and start (tests/sidecars.py)."""
    from tests.sidecars import PrivatePostgres

    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(pg.start)
        yield pg
    finally:
        await asyncio.to_thread(pg.cleanup)
