"""Envoy's Check on a real Warden over a real gRPC port, request by request: every answer Warden
decides is a successful RPC with the verdict in CheckResponse.status and the HTTP answer in
denied_response (through a real Envoy: test_envoy_mesh.py)."""

from __future__ import annotations

import json

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from google.rpc import code_pb2

from tests.helpers import rate_limit, tenant
from warden.v1 import admin_pb2, types_pb2

APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")
CHAT = "/v1/chat/completions"


def body(model: str = "gpt-4o-mini", **fields) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello there"}],
                       **fields}).encode()


def check_request(headers: dict[str, str], raw_body: bytes | None = None, path: str = CHAT,
                  text_body: str = "") -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST", path=path, host="api.openai.com", headers=headers, body=text_body,
        raw_body=raw_body or b"")
    return external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http)))


def header_dict(options) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


@pytest.fixture
async def check(client):
    stub = external_auth_pb2_grpc.AuthorizationStub(client.channel)
    key = await tenant(client)

    async def call(headers=None, raw_body=None, **fields) -> external_auth_pb2.CheckResponse:
        if headers is None:
            headers = {"authorization": f"Bearer {key}", "x-request-id": fields.pop("rid", "r1")}
        return await stub.Check(check_request(headers, raw_body, **fields))

    call.key = key
    return call


def error_of(response: external_auth_pb2.CheckResponse) -> dict:
    return json.loads(response.denied_response.body)["error"]


async def test_an_allowed_call_reaches_the_upstream_without_its_key(check, client):
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 100, policy_id="chat-rpm")
    answer = await check(raw_body=body(max_tokens=50))
    assert answer.status.code == code_pb2.OK
    ok = answer.ok_response
    upstream = header_dict(ok.headers)
    assert upstream["x-warden-request-id"] == "r1"
    assert len(upstream["x-warden-reservation-id"]) == 32
    assert "x-warden-max-tokens" not in upstream and "x-warden-model" not in upstream
    assert "authorization" in ok.headers_to_remove and "x-api-key" in ok.headers_to_remove
    assert "x-warden-model" in ok.headers_to_remove  # a client's own is not passed on
    downstream = header_dict(ok.response_headers_to_add)
    assert downstream["x-ratelimit-limit-requests"] == "100"
    assert downstream["x-ratelimit-remaining-requests"].isdigit()
    assert downstream["ratelimit-policy"] == '"chat-rpm";q=100;w=60'
    metadata = json_format.MessageToDict(answer.dynamic_metadata)
    assert metadata["reservation_id"] == upstream["x-warden-reservation-id"]
    assert metadata | {"decision_id": ""} == {
        "decision_id": "", "reservation_id": metadata["reservation_id"], "request_id": "r1",
        "org_id": "acme", "app_id": "chat", "model": "gpt-4o-mini", "decision": "allow",
        "reason": "ALLOWED"}


async def test_the_key_may_come_in_x_api_key_and_the_body_as_text(check):
    answer = await check({"x-api-key": check.key}, text_body=body().decode())
    assert answer.status.code == code_pb2.OK


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "no Warden API key"),
    ({"authorization": "Basic dXNlcjpwYXNz"}, "no Warden API key"),
    ({"authorization": "Bearer wk_000000000000_" + "a" * 43}, "unknown API key"),
    ({"x-api-key": "sk-not-a-warden-key"}, "unknown API key"),
])
async def test_no_or_a_bad_key_is_401(check, headers, reason):
    answer = await check(headers, raw_body=body())
    assert answer.status.code == code_pb2.UNAUTHENTICATED
    assert answer.denied_response.status.code == 401
    error = error_of(answer)
    assert reason in error["message"] and error["code"] == "invalid_api_key"
    assert header_dict(answer.denied_response.headers)["content-type"] == "application/json"


async def test_a_model_not_allowed_is_403_with_the_policy_named(check, client):
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="only-mini", scope=APP, model_access=types_pb2.ModelAccessConfig(
            allow_models=["gpt-4o-mini"]))), metadata=client.auth)
    answer = await check(raw_body=body("gpt-4o"))
    assert answer.status.code == code_pb2.PERMISSION_DENIED
    assert answer.denied_response.status.code == 403
    error = error_of(answer)
    assert error["code"] == "model_not_allowed" and "only-mini" in error["message"]
    assert json_format.MessageToDict(answer.dynamic_metadata)["decision"] == "deny"


async def test_over_a_request_limit_is_429_with_retry_after(check, client):
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="chat-rpm")
    assert (await check(raw_body=body(), rid="a")).status.code == code_pb2.OK
    answer = await check(raw_body=body(), rid="b")
    assert answer.status.code == code_pb2.RESOURCE_EXHAUSTED
    assert answer.denied_response.status.code == 429
    headers = header_dict(answer.denied_response.headers)
    assert 1 <= int(headers["retry-after"]) <= 61  # a minute window, rounded up
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    error = error_of(answer)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")


async def test_a_token_limit_lowers_max_tokens_in_a_header(check, client):
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="chat-tph", scope=APP, rate_limit=types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_TOTAL_TOKENS, window=types_pb2.WINDOW_HOUR, limit=500))),
        metadata=client.auth)
    answer = await check(raw_body=body(max_completion_tokens=2000))
    assert answer.status.code == code_pb2.OK
    lowered = int(header_dict(answer.ok_response.headers)["x-warden-max-tokens"])
    assert 0 < lowered < 500
    assert header_dict(answer.ok_response.response_headers_to_add)[
        "x-ratelimit-limit-tokens"] == "500"


async def test_a_dry_run_denial_allows_the_call(check, client):
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="chat-rpm",
                     mode=types_pb2.POLICY_MODE_DRY_RUN)
    for rid in ("a", "b"):
        assert (await check(raw_body=body(), rid=rid)).status.code == code_pb2.OK


async def test_a_request_id_used_twice_is_409(check):
    assert (await check(raw_body=body(), rid="same")).status.code == code_pb2.OK
    answer = await check(raw_body=body(), rid="same")
    assert answer.denied_response.status.code == 409
    assert error_of(answer)["code"] == "request_id_reused"


@pytest.mark.parametrize(("raw", "extra", "where"), [
    (b"not json", {}, "body is not JSON"),
    (b"\xff\xfe{}", {}, "body is not UTF-8"),
    (b"[1, 2]", {}, "body must be a JSON object"),
    (b'{"messages": []}', {}, "body.model is required"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', {},
     "body.messages[0].content"),
    (b'{"model": "m", "messages": [], "max_tokens": -1}', {}, "body.max_tokens"),
    (body(), {"x-envoy-auth-partial-body": "true"}, "was cut at the proxy's buffer limit"),
    (None, {}, "body is required"),
    (body(), {"x-request-id": "not a valid id!"}, "header x-request-id"),
])
async def test_a_body_warden_cannot_read_is_400(check, raw, extra, where):
    answer = await check({"authorization": f"Bearer {check.key}", **extra}, raw_body=raw)
    assert answer.status.code == code_pb2.INVALID_ARGUMENT
    assert answer.denied_response.status.code == 400
    assert where in error_of(answer)["message"]


async def test_a_request_that_is_not_http_is_400(client):
    stub = external_auth_pb2_grpc.AuthorizationStub(client.channel)
    answer = await stub.Check(external_auth_pb2.CheckRequest())
    assert answer.denied_response.status.code == 400
    assert "attributes.request.http is required" in error_of(answer)["message"]


async def test_a_path_that_is_no_llm_call_is_authenticated_only(check):
    answer = await check(path="/v1/models")
    assert answer.status.code == code_pb2.OK
    assert "authorization" in answer.ok_response.headers_to_remove
    answer = await check({}, path="/v1/models")
    assert answer.denied_response.status.code == 401


async def test_undecodable_bytes_fail_the_rpc(client):
    """Not a CheckRequest at all: no verdict, a rich INVALID_ARGUMENT (Envoy's error path)."""
    call = client.channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"\x0a\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
