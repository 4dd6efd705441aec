"""Start-up checks, health, metrics, reflection, database loss, and graceful shutdown."""

import asyncio
import os
import signal
import sys
import urllib.request
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import ADMIN_TOKEN, KEY_PEPPER, Client, settings_for
from tests.helpers import authorize_request, expect_error, new_key, rate_limit, tenant
from warden.app import App, _check_pepper
from warden.errors import StartupError
from warden.store.migrate import SchemaError, known_migrations, migrate
from warden.v1 import types_pb2, warden_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(channel, service=""):
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def test_health_reflection_and_metrics(client, warden):
    for name in ("", "warden.v1.Warden", "warden.v1.Admin", "warden.component.database"):
        assert await _health(client.channel, name) == SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(ask()):
        names = {s.name for s in reply.list_services_response.service}
        assert {"warden.v1.Warden", "warden.v1.Admin", "grpc.health.v1.Health"} <= names
    key = await tenant(client)
    await client.warden.Authorize(authorize_request(key, "m1"))
    url = f"http://127.0.0.1:{warden.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'warden_decisions_total{decision="allow",reason="ALLOWED"}' in body
    assert 'warden_rpc_duration_seconds_count{code="OK",method="Authorize"}' in body
    assert 'warden_component_up{component="database"} 1.0' in body


async def test_database_loss_degrades_the_data_plane_and_recovers(client, warden, db_url,
                                                                   server_url):
    key = await tenant(client)
    seen = await new_key(client, "chat")
    await client.warden.Authorize(authorize_request(seen, "warm"))  # cached from here on
    name = urlsplit(db_url).path.lstrip("/")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1", name)
        # A key this sidecar never saw cannot be checked.
        error = await expect_error(client.warden.Authorize(authorize_request(key, "down")))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE,
                                              "DATABASE_UNAVAILABLE")
        assert error.retry_seconds == 1.0
        # One it knows is decided from the cache, and the decision waits in the journal.
        reply = await client.warden.Authorize(authorize_request(seen, "cached"))
        assert reply.decision == warden_pb2.DECISION_ALLOW
        await _eventually(lambda: _health(client.channel, "warden.component.database"),
                          NOT_SERVING)
        assert await _health(client.channel, "warden.v1.Admin") == NOT_SERVING
        assert await _health(client.channel) == SERVING
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await _eventually(lambda: _health(client.channel, "warden.component.database"), SERVING)
    reply = await client.warden.Authorize(authorize_request(key, "back"))
    assert reply.decision == warden_pb2.DECISION_ALLOW


async def _eventually(probe, expected, seconds=10.0):
    deadline = asyncio.get_running_loop().time() + seconds
    while (value := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {value}"
        await asyncio.sleep(0.1)


async def test_refuses_a_schema_it_does_not_know(empty_db, tmp_path):
    with pytest.raises(SchemaError, match="lacks migrations"):
        await App(settings_for(empty_db, str(tmp_path), migrate="false")).start()
    conn = await asyncpg.connect(empty_db)
    await migrate(conn)
    await conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
    await conn.close()
    app = App(settings_for(empty_db, str(tmp_path), migrate="false"))
    with pytest.raises(SchemaError, match="newer than this Warden"):
        await app.start()
    await app.stop()


async def test_refuses_a_different_key_pepper(warden, db_url, tmp_path):
    other = App(settings_for(db_url, str(tmp_path / "other"), key_pepper="another-pepper"))
    with pytest.raises(StartupError, match="WARDEN_KEY_PEPPER"):
        await other.start()
    await other.stop()


async def test_sidecars_starting_together_agree_on_the_pepper(db_url):
    """The second of two first starts waits for the first one's fingerprint instead of reading
    a snapshot without it (and refusing to start with a misleading pepper error)."""
    first, second = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        async with first.transaction():
            await _check_pepper(first, KEY_PEPPER.encode())
            racing = asyncio.create_task(_check_pepper(second, KEY_PEPPER.encode()))
            await asyncio.sleep(0.3)
            assert not racing.done()  # waiting on the first start's row
        await racing
        with pytest.raises(StartupError):
            await _check_pepper(second, b"another pepper")
    finally:
        await first.close()
        await second.close()


async def test_concurrent_migrations_apply_once(empty_db):
    conns = [await asyncpg.connect(empty_db) for _ in range(4)]
    applied = await asyncio.gather(*(migrate(c) for c in conns))
    every = len(known_migrations())
    assert sorted(len(a) for a in applied) == [0, 0, 0, every]
    assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == every
    for c in conns:
        await c.close()


async def test_sigterm_drains_in_flight_rpcs_then_exits_cleanly(db_url, tmp_path, db):
    # A Unix socket: no port to find, and the second transport the server supports.
    env = {**os.environ, "WARDEN_DATABASE_URL": db_url, "WARDEN_LISTEN": f"unix:{tmp_path}/w.sock",
           "WARDEN_METRICS_LISTEN": "off", "WARDEN_DATA_DIR": str(tmp_path),
           "WARDEN_ADMIN_TOKEN": ADMIN_TOKEN, "WARDEN_KEY_PEPPER": KEY_PEPPER,
           "WARDEN_SHUTDOWN_GRACE_SECONDS": "10",
           # The in-flight call waits on a lock this test holds: not a database timeout.
           "WARDEN_DB_TIMEOUT_SECONDS": "30"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warden", "serve", env=env, stderr=asyncio.subprocess.PIPE)
    try:
        async with grpc.aio.insecure_channel(env["WARDEN_LISTEN"]) as channel:
            await _eventually(lambda: _health_or_none(channel, proc), SERVING, seconds=30)
            client = Client(channel)
            key = await tenant(client)
            await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, policy_id="rpm")
            await client.warden.Authorize(authorize_request(key, "first"))
            # A key never looked up yet, whose lookup waits while api_keys is locked: the next
            # Authorize is in flight while SIGTERM arrives.
            fresh = await new_key(client, "chat")
            tx = db.transaction()
            await tx.start()
            await db.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
            in_flight = asyncio.ensure_future(
                client.warden.Authorize(authorize_request(fresh, "in-flight")))
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            # NOT_SERVING at once; soon after, server.stop() refuses new calls outright.
            await _eventually(lambda: _not_serving(channel), True)
            await tx.rollback()
            reply = await in_flight
            assert reply.decision == warden_pb2.DECISION_ALLOW
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        log = (await proc.stderr.read()).decode()
        assert log.index('"shutting down"') < log.index('"stopped"')
        # The journal was applied on the way out, and the unspent lease given back.
        logged = await db.fetch("SELECT request_id FROM requests ORDER BY request_id")
        assert [r["request_id"] for r in logged] == ["first", "in-flight"]
        assert await db.fetchval("SELECT sum(granted) FROM quota_buckets") == 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _not_serving(channel):
    return await _health_or_none(channel) in (NOT_SERVING, None)


async def _health_or_none(channel, proc=None):
    if proc is not None and proc.returncode is not None:
        raise AssertionError(f"warden exited: {(await proc.stderr.read()).decode()}")
    try:
        return await _health(channel)
    except grpc.aio.AioRpcError:
        return None
