"""Envoy's ext_proc Process on a real Warden over a real gRPC port, message by message as Envoy
sends them (through a real Envoy: test_envoy_mesh.py): the decision, the body sent upstream,
and the usage settled from the answer."""

from __future__ import annotations

import asyncio
import json

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from tests.helpers import tenant, until
from warden.v1 import admin_pb2, types_pb2

APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")


def headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]),
        end_of_stream=end)


class Exchange:
    """One Process stream: send a message, read Warden's answer to it."""

    def __init__(self, stub) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = stub.Process(self._requests())

    async def _requests(self):
        while (message := await self.queue.get()) is not None:
            yield message

    async def send(self, **message) -> ep.ProcessingResponse:
        await self.queue.put(ep.ProcessingRequest(**message))
        return await self.call.read()


@pytest.fixture
async def proc(client):
    stub = external_processor_pb2_grpc.ExternalProcessorStub(client.channel)
    key = await tenant(client)
    exchanges = []

    def start() -> Exchange:
        exchanges.append(Exchange(stub))
        return exchanges[-1]

    start.key = key
    yield start
    for exchange in exchanges:
        exchange.call.cancel()


def request_headers(key: str, rid: str, path: str = "/v1/chat/completions") -> dict[str, str]:
    return {":method": "POST", ":path": path, ":authority": "api.openai.com",
            "authorization": f"Bearer {key}", "x-request-id": rid,
            "content-type": "application/json"}


async def _usage_row(db, rid: str):
    return await db.fetchrow("SELECT * FROM usage WHERE request_id = $1", rid)


async def test_a_json_answer_settles_from_its_usage(proc, db):
    x = proc()
    first = await x.send(request_headers=headers(request_headers(proc.key, "p1")))
    assert first.WhichOneof("response") == "request_headers"
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    answer = await x.send(request_body=ep.HttpBody(body=body, end_of_stream=True))
    mutation = answer.request_body.response.header_mutation
    assert "authorization" in mutation.remove_headers
    assert {h.header.key for h in mutation.set_headers} >= {"x-warden-reservation-id"}
    assert not answer.request_body.response.HasField("body_mutation")  # nothing to rewrite
    await x.send(response_headers=headers({":status": "200",
                                           "content-type": "application/json"}))
    usage = {"prompt_tokens": 9, "completion_tokens": 21}
    await x.send(response_body=ep.HttpBody(body=json.dumps({"usage": usage}).encode(),
                                           end_of_stream=True))

    async def stored():
        return await _usage_row(db, "p1") is not None
    await until(stored, within=10)
    row = await _usage_row(db, "p1")
    assert (row["input_tokens"], row["output_tokens"], row["outcome"]) == (9, 21, "completed")


async def test_the_body_is_rewritten_to_the_route_and_a_stream_asks_for_usage(proc, client):
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id="chat-tph", scope=APP, rate_limit=types_pb2.RateLimitConfig(
            metric=types_pb2.METRIC_OUTPUT_TOKENS, window=types_pb2.WINDOW_HOUR, limit=50))),
        metadata=client.auth)
    x = proc()
    await x.send(request_headers=headers(request_headers(proc.key, "p2")))
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "max_tokens": 500,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    answer = await x.send(request_body=ep.HttpBody(body=body, end_of_stream=True))
    sent = json.loads(answer.request_body.response.body_mutation.body)
    assert sent["max_tokens"] == 50 and sent["stream_options"] == {"include_usage": True}
    set_headers = {h.header.key: h.header.raw_value.decode()
                   for h in answer.request_body.response.header_mutation.set_headers}
    assert set_headers["content-length"] == str(len(answer.request_body.response
                                                     .body_mutation.body))


async def test_no_key_is_answered_at_the_request_headers(proc):
    x = proc()
    pairs = request_headers("", "p3")
    del pairs["authorization"]
    answer = await x.send(request_headers=headers(pairs))
    assert answer.immediate_response.status.code == 401
    assert json.loads(answer.immediate_response.body)["error"]["code"] == "invalid_api_key"


async def test_a_body_that_is_not_json_is_400(proc):
    x = proc()
    await x.send(request_headers=headers(request_headers(proc.key, "p4")))
    answer = await x.send(request_body=ep.HttpBody(body=b"{oops", end_of_stream=True))
    assert answer.immediate_response.status.code == 400
