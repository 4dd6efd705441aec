"""The cache on one sidecar: hits, exact invalidation by the change feed for writes made by
anyone (here: plain SQL on another connection), and recovery when the feed connection dies.
Two sidecar processes: tests/integration/test_propagation.py."""

import asyncio
import time

import asyncpg
import grpc
from prometheus_client import REGISTRY

from tests.helpers import authorize_request, expect_error, rate_limit, tenant, until
from warden.v1 import types_pb2, warden_pb2


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_warm_authorize_reads_its_key_and_compiled_policy_set_from_the_cache(client):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, "chat-rpm")
    await client.warden.Authorize(authorize_request(key, "r0"))
    before = {c: (_sample("warden_cache_hits_total", cache=c),
                  _sample("warden_cache_misses_total", cache=c))
              for c in ("api_keys", "compiled_sets")}
    for i in range(5):
        await client.warden.Authorize(authorize_request(key, f"r{i + 1}"))
    for cache, (hits, misses) in before.items():
        assert _sample("warden_cache_misses_total", cache=cache) == misses, cache
        assert _sample("warden_cache_hits_total", cache=cache) >= hits + 5, cache


async def test_a_change_by_any_writer_reaches_the_cache_exactly(client, db):
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, "chat-rpm")
    await client.warden.Authorize(authorize_request(key, "r0"))
    # Let the notifications of the set-up writes arrive, then warm the cache again.
    await asyncio.sleep(0.3)
    await client.warden.Authorize(authorize_request(key, "r1"))
    policies = _sample("warden_cache_entries", cache="policies")
    assert policies >= 3  # org, app and key scopes
    exact = _sample("warden_cache_invalidations_total", cache="api_keys", how="exact")
    # Not through Admin: an operator's UPDATE is broadcast by the trigger all the same.
    await db.execute("UPDATE api_keys SET revoke_time = now()")

    async def refused() -> bool:
        try:
            await client.warden.Authorize(authorize_request(key, f"r{time.monotonic_ns()}"))
        except grpc.aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    await until(refused)
    assert _sample("warden_cache_invalidations_total", cache="api_keys", how="exact") == exact + 1
    # The policy entries were not touched by a key change.
    assert _sample("warden_cache_entries", cache="policies") == policies


async def test_the_feed_reconnects_and_starts_clean_after_losing_its_connection(client, db):
    key = await tenant(client)
    await client.warden.Authorize(authorize_request(key, "r0"))
    losses = _sample("warden_change_feed_losses_total")
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        " OR (query = 'SELECT 1' AND backend_type = 'client backend'"
        "     AND datname = current_database() AND pid <> pg_backend_pid())")
    assert killed >= 1

    async def reconnected() -> bool:
        return (_sample("warden_change_feed_losses_total") > losses
                and _sample("warden_component_up", component="change_feed") == 1)

    await until(reconnected, within=5.0)
    # Changes after the reconnect arrive again.
    await db.execute(
        "INSERT INTO provider_switches (provider, model, enabled, reason)"
        " VALUES ('openai', 'gpt-4o-mini', false, 'recalled')")

    async def switched_off() -> bool:
        reply = await client.warden.Authorize(authorize_request(key, f"r{time.monotonic_ns()}"))
        return reply.reason == types_pb2.REASON_PROVIDER_DISABLED

    await until(switched_off)


async def test_the_cache_holds_no_stale_key_after_a_write_on_this_sidecar(client):
    """Admin writes drop this sidecar's cache at once (no notification round trip)."""
    from warden.v1 import admin_pb2

    await tenant(client)
    created = await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id="chat"),
                                              metadata=client.auth)
    for i in range(20):
        key = created.plaintext
        assert (await client.warden.Authorize(authorize_request(key, f"a{i}"))).decision == \
            warden_pb2.DECISION_ALLOW
        await client.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=created.api_key.id),
                                        metadata=client.auth)
        error = await expect_error(client.warden.Authorize(authorize_request(key, f"b{i}")))
        assert error.reason == "API_KEY_REVOKED"
        created = await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(app_id="chat"),
                                                  metadata=client.auth)


async def test_while_the_feed_is_down_nothing_stale_is_served(client, db, server_url):
    """The feed is lost and cannot come back (new connections refused) while the pool's
    connections still work: answers must come from the database, not from the cache."""
    key = await tenant(client)
    await client.warden.Authorize(authorize_request(key, "r0"))
    name = await db.fetchval("SELECT current_database()")
    losses = _sample("warden_change_feed_losses_total")
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%' OR query = 'SELECT 1'")

        async def lost() -> bool:
            return _sample("warden_change_feed_losses_total") > losses

        await until(lost, within=5.0)
        # Asked again while the feed is away: this answer must not be kept.
        allowed = await client.warden.Authorize(authorize_request(key, "r1"))
        assert allowed.decision == warden_pb2.DECISION_ALLOW
        await db.execute("UPDATE api_keys SET revoke_time = now()")
        error = await expect_error(client.warden.Authorize(authorize_request(key, "r2")))
        assert error.reason == "API_KEY_REVOKED"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    async def listening() -> bool:
        return _sample("warden_component_up", component="change_feed") == 1

    await until(listening, within=5.0)
