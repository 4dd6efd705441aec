"""Two real sidecar processes on one database: a change made through sidecar A reaches
sidecar B's cache within a second (key revocation, policy create/update/delete, provider
switches), also after every connection to the database was killed.

B runs with a ten-minute cache TTL, and before each change the test checks that B answers the
old decision from its cache (its cache hit counters rise); only the change feed (LISTEN/NOTIFY)
can then explain B answering the new one within the second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from tests.helpers import rich_error
from tests.sidecars import Sidecar, sample
from warden.v1 import admin_pb2, types_pb2, warden_pb2

# What the policies issue promises: a change is enforced by every sidecar within a second.
PROPAGATION_SECONDS = 1.0
POLL_SECONDS = 0.02
# Losing the feed connection is noticed at once (or by the next liveness query, every
# WARDEN_HEALTH_INTERVAL_SECONDS) and retried with backoff: generous, it is not the promise.
RECONNECT_SECONDS = 15.0

ALLOW = "DECISION_ALLOW"
DENY = "DECISION_DENY"


@pytest.fixture
async def sidecars(db_url: str, fleet) -> tuple[Sidecar, Sidecar]:
    """A and B on the test's database, each with a metrics port; started together, as a
    deployment's replicas are (both record the key pepper's fingerprint on this fresh database
    at once). B's cache TTL is ten minutes: a TTL expiry cannot pass for propagation."""
    a, b = await asyncio.gather(
        fleet.start("a", db_url, WARDEN_METRICS_LISTEN="127.0.0.1:0"),
        fleet.start("b", db_url, WARDEN_METRICS_LISTEN="127.0.0.1:0",
                    WARDEN_CACHE_TTL_SECONDS="600"))
    assert a.metrics_port and b.metrics_port
    return a, b


# --- the tenant and what B answers ---------------------------------------------------------

@dataclass
class Tenant:
    key: str
    key_id: str


async def _tenant(a: Sidecar) -> Tenant:
    """Org acme, team support, app chat (in support), user alice (in support) and her key;
    an org model_access policy "models" allowing gpt-4o-mini and gpt-4o."""
    admin, auth = a.client.admin, a.client.auth
    await admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id="acme")),
                          metadata=auth)
    await admin.CreateTeam(admin_pb2.CreateTeamRequest(
        team=admin_pb2.Team(id="support", org_id="acme")), metadata=auth)
    await admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(id="chat", org_id="acme", team_id="support")), metadata=auth)
    await admin.CreateUser(admin_pb2.CreateUserRequest(
        user=admin_pb2.User(id="alice", org_id="acme", team_ids=["support"])), metadata=auth)
    key = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        app_id="chat", user_id="alice"), metadata=auth)
    await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=_model_access(
        ["gpt-4o-mini", "gpt-4o"])), metadata=auth)
    return Tenant(key.plaintext, key.api_key.id)


def _model_access(allow: list[str], revision: int = 0) -> types_pb2.Policy:
    return types_pb2.Policy(
        id="models", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id="acme"),
        model_access=types_pb2.ModelAccessConfig(allow_models=allow), revision=revision)


async def _answer(b: Sidecar, key: str, model: str = "gpt-4o-mini") -> tuple:
    """B's answer in short: (decision, reason, provider, model, max_output_tokens), or
    (status code, reason) for an error."""
    request = warden_pb2.AuthorizeRequest(
        request_id=uuid.uuid4().hex, api_key=key, model=model, provider="openai",
        max_output_tokens=500)
    try:
        reply = await b.client.warden.Authorize(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, rich_error(exc).reason
    return (warden_pb2.Decision.Name(reply.decision), types_pb2.Reason.Name(reply.reason),
            reply.route.provider, reply.route.model, reply.route.max_output_tokens)


def _allowed(model: str = "gpt-4o-mini", provider: str = "openai", max_tokens: int = 500
             ) -> tuple:
    return ALLOW, "REASON_ALLOWED", provider, model, max_tokens


def _denied(reason: str) -> tuple:
    return DENY, f"REASON_{reason}", "", "", 0


async def _answers_from_cache(b: Sidecar, key: str, expected: tuple, **request) -> None:
    """B gives the old answer, and gives it from its cache: without that, B answering the new
    one later would prove nothing about propagation. A notification of the test's own setup
    that reaches B late (a loaded machine) rightly empties what B had just cached: B is given
    a few rounds to answer twice in a row from its cache."""
    for _ in range(5):
        assert await _answer(b, key, **request) == expected  # loads whatever was not cached
        before = await b.scrape()
        assert await _answer(b, key, **request) == expected
        after = await b.scrape()
        counts = {cache: [(sample(body, "warden_cache_hits_total", cache=cache),
                           sample(body, "warden_cache_misses_total", cache=cache))
                          for body in (before, after)]
                  for cache in ("api_keys", "compiled_sets")}
        if all(now[0] > was[0] and now[1] == was[1] for was, now in counts.values()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"B did not answer from its caches: (hits, misses) {counts}")


async def _propagates(b: Sidecar, key: str, expected: tuple, change: str, **request) -> float:
    """Seconds until B answers `expected`, polled from the moment the change returned."""
    start = time.monotonic()
    while True:
        answer = await _answer(b, key, **request)
        elapsed = time.monotonic() - start
        if answer == expected:
            return elapsed
        assert elapsed < PROPAGATION_SECONDS, (
            f"{change}: B still answered {answer} {elapsed:.3f} s later, expected {expected}")
        await asyncio.sleep(POLL_SECONDS)


# --- the tests -----------------------------------------------------------------------------

async def test_revocation_reaches_the_other_sidecar(sidecars):
    a, b = sidecars
    tenant = await _tenant(a)
    await _answers_from_cache(b, tenant.key, _allowed())
    await a.client.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=tenant.key_id),
                                      metadata=a.client.auth)
    await _propagates(b, tenant.key, ("UNAUTHENTICATED", "API_KEY_REVOKED"), "RevokeApiKey")


async def test_policy_changes_reach_the_other_sidecar(sidecars):
    a, b = sidecars
    admin, auth = a.client.admin, a.client.auth
    tenant = await _tenant(a)

    # Update: the org stops allowing gpt-4o-mini.
    await _answers_from_cache(b, tenant.key, _allowed())
    current = (await admin.GetPolicy(admin_pb2.GetPolicyRequest(id="models"),
                                     metadata=auth)).policy
    await admin.UpdatePolicy(admin_pb2.UpdatePolicyRequest(
        policy=_model_access(["gpt-4o"], revision=current.revision)), metadata=auth)
    await _propagates(b, tenant.key, _denied("MODEL_NOT_ALLOWED"), "UpdatePolicy")

    # Create: a routing policy on the team, a scope B has cached as having no policies.
    await _answers_from_cache(b, tenant.key, _allowed("gpt-4o"), model="gpt-4o")
    await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="support-routing", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_TEAM,
                                                    id="support"),
        routing=types_pb2.RoutingConfig(
            rules=[types_pb2.RouteRule(alias="gpt-4o", targets=[
                types_pb2.RouteTarget(provider="azure", model="gpt-4o")])],
            max_tokens_cap=100))), metadata=auth)
    routed = _allowed("gpt-4o", provider="azure", max_tokens=100)
    await _propagates(b, tenant.key, routed, "CreatePolicy", model="gpt-4o")

    # Delete: back to the model and provider the caller asked for.
    await _answers_from_cache(b, tenant.key, routed, model="gpt-4o")
    await admin.DeletePolicy(admin_pb2.DeletePolicyRequest(id="support-routing"),
                             metadata=auth)
    await _propagates(b, tenant.key, _allowed("gpt-4o"), "DeletePolicy", model="gpt-4o")


async def test_provider_switch_reaches_the_other_sidecar(sidecars):
    a, b = sidecars
    tenant = await _tenant(a)

    async def switch(enabled: bool) -> None:
        await a.client.admin.SetProviderSwitch(admin_pb2.SetProviderSwitchRequest(
            switch=admin_pb2.ProviderSwitch(provider="openai", enabled=enabled,
                                            reason="" if enabled else "incident 42")),
            metadata=a.client.auth)

    await _answers_from_cache(b, tenant.key, _allowed())
    await switch(False)
    await _propagates(b, tenant.key, _denied("PROVIDER_DISABLED"), "switch off")
    await _answers_from_cache(b, tenant.key, _denied("PROVIDER_DISABLED"))
    await switch(True)
    await _propagates(b, tenant.key, _allowed(), "switch on")


async def test_changes_still_propagate_after_the_connections_are_killed(sidecars, db_url,
                                                                         server_url):
    a, b = sidecars
    tenant = await _tenant(a)
    await _answers_from_cache(b, tenant.key, _allowed())
    before = await b.scrape()
    database = urlsplit(db_url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        # Every backend of the test database: both feeds' listeners (pg_stat_activity cannot
        # tell A's from B's) and both pools' connections.
        listeners = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')", database)
        killed = await conn.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()) AS t", database)
    finally:
        await conn.close()
    assert listeners >= 2 and killed > listeners

    # The feed is back when it counted the loss and reports itself up again.
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        body = await b.scrape()
        reconnects = [sample(x, "warden_change_feed_losses_total") for x in (before, body)]
        if reconnects[1] > reconnects[0] and \
                sample(body, "warden_component_up", component="change_feed") == 1:
            break
        assert time.monotonic() < deadline, \
            f"B's change feed not back after {RECONNECT_SECONDS:.0f} s:\n{b.log_tail()}"
        await asyncio.sleep(0.1)
    # Notifications sent while the feed was away are lost: B must have dropped everything.
    assert sample(body, "warden_cache_invalidations_total", cache="api_keys", how="full") > \
        sample(before, "warden_cache_invalidations_total", cache="api_keys", how="full")

    # The pools reconnect too: B answers at once, from a re-warmed cache ...
    await _answers_from_cache(b, tenant.key, _allowed())
    # ... and the new LISTEN connection carries the next change.
    await a.client.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=tenant.key_id),
                                      metadata=a.client.auth)
    await _propagates(b, tenant.key, ("UNAUTHENTICATED", "API_KEY_REVOKED"),
                      "RevokeApiKey after reconnect")
