"""Circuit breaking from what Warden sees, with real sidecars, a real Postgres and fake
OpenAI-compatible providers over HTTP: an app authorizes, calls the provider the route names
and reports the outcome with RecordUsage. When the primary provider starts failing its circuit
opens and every sidecar routes to the fallback within a second; after the cool-down exactly one
probe call goes to the primary, and its success closes the circuit everywhere again.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid

import asyncpg
import grpc
import pytest

from tests.fake_openai import FakeOpenAI
from tests.helpers import authorize_request, expect_error, tenant, until
from tests.sidecars import Sidecar, sample
from warden.v1 import admin_pb2, types_pb2, warden_pb2

AGREE_SECONDS = 1.0  # every sidecar routes by a circuit's change within this
COOLDOWN = 1.5


async def _provider_call(port: int) -> int:
    """The app's call to a provider: the HTTP status it answered."""
    def post() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(
                {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
                {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()
    return await asyncio.to_thread(post)


async def _settle(stub, key: str, request_id: str, ok: bool,
                  outcome: int | None = None) -> None:
    await stub.RecordUsage(warden_pb2.RecordUsageRequest(
        request_id=request_id, api_key=key,
        outcome=outcome or (warden_pb2.OUTCOME_COMPLETED if ok else warden_pb2.OUTCOME_FAILED),
        usage=types_pb2.Usage(input_tokens=10, output_tokens=5 if ok else 0)))


async def _routing(client, org: str = "acme") -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="chat-routing", scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_ORG, id=org),
        mode=types_pb2.POLICY_MODE_ENFORCE, routing=types_pb2.RoutingConfig(rules=[
            types_pb2.RouteRule(alias="chat", targets=[
                types_pb2.RouteTarget(provider="primary", model="gpt-4o"),
                types_pb2.RouteTarget(provider="backup", model="gpt-4o")])]))),
        metadata=client.auth)


@pytest.fixture
async def providers():
    fakes = {"primary": FakeOpenAI(), "backup": FakeOpenAI()}
    ports = {name: await fake.start() for name, fake in fakes.items()}
    yield fakes, ports
    for fake in fakes.values():
        await fake.close()


async def test_a_failing_provider_opens_its_circuit_on_every_sidecar_and_a_probe_closes_it(
        db_url: str, fleet, providers) -> None:
    fakes, ports = providers
    circuit_env = {"WARDEN_CIRCUIT_MIN_CALLS": "6", "WARDEN_CIRCUIT_ERROR_RATE": "0.5",
                   "WARDEN_CIRCUIT_CONSECUTIVE_FAILURES": "0",
                   "WARDEN_CIRCUIT_COOLDOWN_SECONDS": str(COOLDOWN),
                   # B decides from its cache: only the change feed can move it in time.
                   "WARDEN_CACHE_TTL_SECONDS": "600", "WARDEN_METRICS_LISTEN": "127.0.0.1:0"}
    a, b = await asyncio.gather(fleet.start("a", db_url, **circuit_env),
                                fleet.start("b", db_url, **circuit_env))
    assert a.client is not None
    key = await tenant(a.client)
    await _routing(a.client)
    db = await asyncpg.connect(db_url)

    async def authorize(sidecar: Sidecar) -> tuple[str, warden_pb2.AuthorizeResponse]:
        request_id = uuid.uuid4().hex
        reply = await sidecar.warden.Authorize(authorize_request(key, request_id, model="chat"))
        assert reply.decision == warden_pb2.DECISION_ALLOW, reply
        return request_id, reply

    async def llm_call(sidecar: Sidecar) -> str:
        """Authorize, call the routed provider, report its outcome: the provider used."""
        request_id, reply = await authorize(sidecar)
        status = await _provider_call(ports[reply.route.provider])
        await _settle(sidecar.warden, key, request_id, status == 200)
        return reply.route.provider

    async def routes_to(sidecar: Sidecar, provider: str) -> bool:
        return (await authorize(sidecar))[1].route.provider == provider

    try:
        # Healthy: both sidecars route to the primary (B from now on answers from its cache).
        assert [await llm_call(a) for _ in range(4)] == ["primary"] * 4
        assert await routes_to(b, "primary")

        # The primary fails; A's app keeps calling until A routes it elsewhere.
        fakes["primary"].status = 500
        used = []
        while not used or used[-1] == "primary":
            used.append(await llm_call(a))
            assert len(used) < 40, used
            await asyncio.sleep(0.02)
        # 4 healthy, then failures: the window's error rate reached 0.5 with 6 calls or more.
        assert used.count("primary") >= 4, used
        opened = await db.fetchrow("SELECT * FROM circuits WHERE provider = 'primary'")
        assert opened["state"] == "open" and "calls failed within 30 s" in opened["reason"]
        started = time.monotonic()
        await until(lambda: routes_to(b, "backup"), within=AGREE_SECONDS)
        _, reply = await authorize(b)
        routing = next(r for r in reply.results if r.policy_id == "chat-routing")
        assert "skipped primary/gpt-4o: the circuit of primary/gpt-4o is open" in routing.message
        assert time.monotonic() - started < AGREE_SECONDS

        # The provider recovers. After the cool-down one call, on one sidecar, is the probe.
        fakes["primary"].status = 200
        await asyncio.sleep(COOLDOWN)
        probe = None
        deadline = time.monotonic() + 5
        while probe is None:
            assert time.monotonic() < deadline, "no probe was let through"
            for sidecar in (a, b):
                request_id, reply = await authorize(sidecar)
                if reply.route.provider == "primary":
                    probe = (sidecar, request_id)
                    break
            await asyncio.sleep(0.05)
        half_open = await db.fetchrow("SELECT * FROM circuits WHERE provider = 'primary'")
        assert half_open["state"] == "half_open"
        # While the probe is out, every other call on either sidecar goes to the backup.
        for sidecar in (a, b) * 5:
            assert await routes_to(sidecar, "backup")

        # The probe succeeds: the circuit closes, and both sidecars use the primary again.
        assert await _provider_call(ports["primary"]) == 200
        await _settle(probe[0].warden, key, probe[1], True)
        for sidecar in (a, b):
            await until(lambda s=sidecar: routes_to(s, "primary"), within=AGREE_SECONDS + 0.5)
        closed = await db.fetchrow("SELECT * FROM circuits WHERE provider = 'primary'")
        assert closed["state"] == "closed" and closed["reason"] == "the probe call succeeded"
        # One sidecar's report opened it, one probe was claimed, one report closed it.
        scraped = [await s.scrape() for s in (a, b)]
        counted = [sum(sample(text, name, **labels) for text in scraped) for name, labels in (
            ("warden_circuit_transitions_total", {"to": "open"}),
            ("warden_circuit_transitions_total", {"to": "closed"}),
            ("warden_circuit_probes_total", {}))]
        assert counted == [1, 1, 1], counted
    finally:
        await db.close()


async def _failures(client, key: str, count: int, provider: str = "openai",
                    outcome: int = warden_pb2.OUTCOME_FAILED) -> None:
    for _ in range(count):
        request_id = uuid.uuid4().hex
        reply = await client.warden.Authorize(authorize_request(
            key, request_id, model="gpt-4o", provider=provider))
        assert reply.decision == warden_pb2.DECISION_ALLOW, reply
        await _settle(client.warden, key, request_id, False, outcome)


async def _circuit(client, mode: int, reason: str = "", **thresholds) -> admin_pb2.Circuit:
    reply = await client.admin.SetCircuit(admin_pb2.SetCircuitRequest(
        provider="openai", model="gpt-4o", mode=mode, reason=reason,
        thresholds=admin_pb2.CircuitThresholds(**thresholds)), metadata=client.auth)
    return reply.circuit


async def test_a_circuit_with_no_fallback_denies_with_retry_after_and_operators_override_it(
        client) -> None:
    key = await tenant(client)
    # This circuit's own thresholds: two failures in a row open it for a minute.
    set_ = await _circuit(client, admin_pb2.CIRCUIT_MODE_AUTOMATIC, consecutive_failures=2,
                          cooldown_seconds=60)
    assert set_.state == admin_pb2.CIRCUIT_STATE_CLOSED
    assert set_.thresholds.consecutive_failures == 2 and not set_.thresholds.HasField("min_calls")

    async def answer() -> warden_pb2.AuthorizeResponse:
        return await client.warden.Authorize(authorize_request(
            key, uuid.uuid4().hex, model="gpt-4o", provider="openai"))

    # Cancelled calls say nothing of the provider; one failure is not two in a row.
    await _failures(client, key, 3, outcome=warden_pb2.OUTCOME_CANCELLED)
    await _failures(client, key, 1)
    await asyncio.sleep(0.6)  # two reports
    assert (await answer()).decision == warden_pb2.DECISION_ALLOW

    await _failures(client, key, 1)

    async def denied() -> bool:
        return (await answer()).decision == warden_pb2.DECISION_DENY
    await until(denied, within=AGREE_SECONDS)
    reply = await answer()
    assert reply.reason == types_pb2.REASON_PROVIDER_UNAVAILABLE
    assert "the circuit of openai/gpt-4o is open: 2 calls in a row failed" in \
        reply.results[0].message
    assert 55 <= reply.retry_after.seconds <= 60
    listed = (await client.admin.ListCircuits(admin_pb2.ListCircuitsRequest(),
                                              metadata=client.auth)).circuits
    assert [(c.provider, c.model, c.state, c.window_calls, c.window_failures,
             c.consecutive_failures) for c in listed] == [
        ("openai", "gpt-4o", admin_pb2.CIRCUIT_STATE_OPEN, 2, 2, 2)]
    assert listed[0].retry_time.seconds > listed[0].open_time.seconds

    # Forced closed: allowed at once, and failures no longer open it.
    forced = await _circuit(client, admin_pb2.CIRCUIT_MODE_FORCED_CLOSED,
                            "the provider confirmed the incident is over",
                            consecutive_failures=2)
    assert (forced.state, forced.mode) == (admin_pb2.CIRCUIT_STATE_CLOSED,
                                           admin_pb2.CIRCUIT_MODE_FORCED_CLOSED)
    assert (await answer()).decision == warden_pb2.DECISION_ALLOW
    await _failures(client, key, 4)
    await asyncio.sleep(0.6)
    assert (await answer()).decision == warden_pb2.DECISION_ALLOW

    # Forced open: refused with the operator's reason and no retry time.
    await _circuit(client, admin_pb2.CIRCUIT_MODE_FORCED_OPEN, "provider incident INC-7")
    reply = await answer()
    assert reply.reason == types_pb2.REASON_PROVIDER_UNAVAILABLE
    assert "forced open by an operator: provider incident INC-7" in reply.results[0].message
    assert not reply.HasField("retry_after")

    # Back to automatic: closed, with an empty window.
    back = await _circuit(client, admin_pb2.CIRCUIT_MODE_AUTOMATIC)
    assert (back.state, back.window_calls, back.consecutive_failures) == (
        admin_pb2.CIRCUIT_STATE_CLOSED, 0, 0)
    assert (await answer()).decision == warden_pb2.DECISION_ALLOW


@pytest.mark.parametrize(("request_fields", "field", "says"), [
    ({"provider": "openai", "mode": admin_pb2.CIRCUIT_MODE_AUTOMATIC}, "model", "is required"),
    ({"model": "m", "provider": "p"}, "mode", "is required"),
    ({"model": "m", "mode": admin_pb2.CIRCUIT_MODE_FORCED_OPEN}, "reason",
     "is required when forcing"),
    ({"model": "m" * 201, "mode": admin_pb2.CIRCUIT_MODE_AUTOMATIC}, "model", "at most 200"),
    ({"model": "m", "mode": admin_pb2.CIRCUIT_MODE_AUTOMATIC,
      "thresholds": admin_pb2.CircuitThresholds(error_rate=1.5)}, "thresholds.error_rate",
     "(0, 1]"),
    ({"model": "m", "mode": admin_pb2.CIRCUIT_MODE_AUTOMATIC,
      "thresholds": admin_pb2.CircuitThresholds(window_seconds=0)},
     "thresholds.window_seconds", "1 to 3600"),
    ({"model": "m", "mode": admin_pb2.CIRCUIT_MODE_AUTOMATIC,
      "thresholds": admin_pb2.CircuitThresholds(cooldown_seconds=-1)},
     "thresholds.cooldown_seconds", "more than 0"),
    ({"model": "m", "mode": admin_pb2.CIRCUIT_MODE_AUTOMATIC,
      "thresholds": admin_pb2.CircuitThresholds(min_calls=0)}, "thresholds.min_calls",
     "at least 1"),
])
async def test_bad_circuit_settings_are_refused_with_the_field(client, request_fields, field,
                                                              says) -> None:
    error = await expect_error(client.admin.SetCircuit(
        admin_pb2.SetCircuitRequest(**request_fields), metadata=client.auth))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert says in error.violations[field], error.violations
    listed = await client.admin.ListCircuits(admin_pb2.ListCircuitsRequest(),
                                             metadata=client.auth)
    assert not listed.circuits  # nothing half-written
