"""The Python client's OpenAI SDK wrapper (warden_client.openai) with the real `openai`
package, a live sidecar and a fake OpenAI-compatible server started by the test: the decision
applied to what the provider receives, denials raised as OpenAI errors, usage recorded from
the answer, from a stream's usage chunk, and from its chunks when the caller stops reading."""

from __future__ import annotations

import asyncio
import gc

import openai
import pytest

from tests.fake_openai import FakeOpenAI
from tests.helpers import rate_limit, tenant, until
from warden.v1 import admin_pb2, types_pb2
from warden_client import AsyncWardenClient, WardenClient
from warden_client.openai import wrap

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is my parcel? Mail me at ann@example.com"}]
APP = types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")


@pytest.fixture
async def upstream():
    fake = FakeOpenAI(usage=(30, 12, 0), completion=12)
    port = await fake.start()
    yield fake, f"http://127.0.0.1:{port}/v1"
    await fake.close()


async def _policy(client, policy_id: str, **config) -> None:
    await client.admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=types_pb2.Policy(
        id=policy_id, scope=APP, **config)), metadata=client.auth)


async def _stored(warden, db, count: int):
    async def there() -> bool:
        await warden.components.flusher.flush()
        return await db.fetchval("SELECT count(*) FROM usage") >= count
    await until(there, within=5.0, step=0.05)
    return await db.fetch("SELECT * FROM usage ORDER BY record_time")


async def test_a_completion_goes_as_decided_and_records_its_usage(warden, client, db,
                                                                  upstream) -> None:
    fake, base_url = upstream
    key = await tenant(client)
    await _policy(client, "cap", routing=types_pb2.RoutingConfig(max_tokens_cap=100))
    await _policy(client, "pii", pii=types_pb2.PiiConfig(
        action=types_pb2.GUARDRAIL_ACTION_REDACT, entities=["email"]))
    async with AsyncWardenClient(warden.target, api_key=key) as w, openai.AsyncOpenAI(
            base_url=base_url, api_key="sk-upstream") as upstream_client:
        llm = wrap(upstream_client, w)
        answer = await llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                   max_tokens=4000)
    assert answer.usage.completion_tokens == 12
    sent = fake.received[-1].json
    assert sent["max_tokens"] == 100 and sent["model"] == "gpt-4o-mini"
    assert sent["messages"][1]["content"] == "Where is my parcel? Mail me at [EMAIL]"
    (row,) = await _stored(warden, db, 1)
    assert (row["input_tokens"], row["output_tokens"], row["outcome"]) == (30, 12, "completed")


async def test_a_denial_is_an_openai_error(warden, client, upstream) -> None:
    fake, base_url = upstream
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, policy_id="rpm")
    async with AsyncWardenClient(warden.target, api_key=key) as w, openai.AsyncOpenAI(
            base_url=base_url, api_key="sk-upstream") as upstream_client:
        llm = wrap(upstream_client, w)
        await llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as denied:
            await llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert denied.value.status_code == 429 and denied.value.code == "rate_limit_exceeded"
    assert denied.value.warden_decision.reason == "RATE_LIMITED"
    assert int(denied.value.response.headers["retry-after"]) >= 1
    assert len(fake.received) == 1  # the denied call never reached the provider
    _ = llm.models  # the rest of the OpenAI client passes through


async def test_a_stream_records_its_usage_chunk_or_what_it_counted(warden, client, db,
                                                                  upstream) -> None:
    fake, base_url = upstream
    key = await tenant(client)
    async with AsyncWardenClient(warden.target, api_key=key) as w, openai.AsyncOpenAI(
            base_url=base_url, api_key="sk-upstream") as upstream_client:
        llm = wrap(upstream_client, w)
        stream = await llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                   stream=True)
        text = "".join([c.choices[0].delta.content async for c in stream if c.choices])
        assert len(text.split()) == 12
        assert fake.received[-1].json["stream_options"] == {"include_usage": True}
        # The caller stops after three chunks and closes the stream.
        async with await llm.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
            for _ in range(3):
                await stream.__anext__()
    rows = await _stored(warden, db, 2)
    assert [(r["output_tokens"], r["outcome"]) for r in rows] == [
        (12, "completed"), (3, "cancelled")]
    assert rows[1]["input_tokens"] > 0  # the prompt, estimated


async def test_the_blocking_wrapper_records_a_stream_dropped_unread(warden, client, db,
                                                                   upstream) -> None:
    fake, base_url = upstream
    key = await tenant(client)

    def calls() -> None:
        with WardenClient(warden.target, api_key=key) as w, openai.OpenAI(
                base_url=base_url, api_key="sk-upstream") as upstream_client:
            llm = wrap(upstream_client, w)
            llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                        max_completion_tokens=50)
            stream = llm.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 stream=True)
            next(stream), next(stream)
            del stream  # never read to the end, never closed
            gc.collect()

    await asyncio.to_thread(calls)
    assert fake.received[0].json["max_completion_tokens"] == 50
    rows = await _stored(warden, db, 2)
    assert [(r["output_tokens"], r["outcome"]) for r in rows] == [
        (12, "completed"), (2, "cancelled")]
    with pytest.raises(TypeError), openai.OpenAI(base_url=base_url, api_key="x") as sync_client:
        wrap(sync_client, AsyncWardenClient(warden.target, api_key=key))
