"""The HTTP side of the Envoy adapters, table by table: what a request asks, the answers, the body
sent upstream, and the metering of a streamed answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from warden.api import llm_body, llm_http
from warden.api.llm_http import BadCall, Message
from warden.api.llm_usage import StreamMeter, json_usage
from warden.engine import (
    Decision,
    Demand,
    PolicyRecord,
    QuotaCheck,
    QuotaOutcome,
    RateLimit,
    Reason,
    Route,
)

ID = {"x-request-id": "req-1"}


def chat(**fields) -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
                       **fields}).encode()


@pytest.mark.parametrize(("path", "kind"), [
    ("/v1/chat/completions", "chat.completions"), ("/openai/v1/chat/completions?x=1",
                                                   "chat.completions"),
    ("/v1/completions", "completions"), ("/v1/embeddings/", "embeddings"),
    ("/v1/responses", "responses"), ("/v1/models", ""), ("/", ""),
])
def test_the_path_names_the_kind_of_call(path, kind):
    assert llm_http.kind_of(path) == kind


@pytest.mark.parametrize(("headers", "key"), [
    ({"authorization": "Bearer wk_a"}, "wk_a"), ({"authorization": "bearer  wk_a "}, "wk_a"),
    ({"authorization": "Basic abc"}, ""), ({"x-api-key": "wk_b"}, "wk_b"),
    ({"authorization": "Bearer wk_a", "x-api-key": "wk_b"}, "wk_a"), ({}, ""),
])
def test_the_key_comes_from_the_first_configured_header(headers, key):
    assert llm_http.api_key(headers, ("authorization", "x-api-key")) == key


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/v1/chat/completions", chat(max_tokens=10, stream=True, user="u1"),
     {"model": "gpt-4o", "max_tokens": 10, "stream": True, "user": "u1",
      "messages": [Message("user", "Hi")]}),
    ("/v1/chat/completions", chat(max_completion_tokens=7, max_tokens=9),
     {"max_tokens": 7}),
    ("/v1/chat/completions", json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]}]}).encode(),
     {"messages": [Message("user", "a\n")]}),
    ("/v1/completions", b'{"model": "m", "prompt": "Say hi", "max_tokens": 3}',
     {"messages": [Message("user", "Say hi")], "max_tokens": 3}),
    ("/v1/embeddings", b'{"model": "e", "input": [[1, 2, 3], [4]]}',
     {"messages": [Message("user", " " * 16)]}),
    ("/v1/responses", b'{"model": "m", "input": "hello", "max_output_tokens": 5}',
     {"messages": [Message("user", "hello")], "max_tokens": 5}),
    ("/v1/responses", b'{"model": "m", "input": [{"role": "user", "content": "x"}]}',
     {"messages": [Message("user", "x")]}),
])
def test_what_a_body_asks(path, body, expected):
    call = llm_http.parse(path, ID, body)
    assert call.request_id == "req-1"
    for name, value in expected.items():
        assert getattr(call, name) == value, name


def test_an_embedding_reserves_one_output_token_and_the_input_is_estimated():
    call = llm_http.parse("/v1/embeddings", ID, b'{"model": "e", "input": "12345678"}')
    request = call.input(can_redact=True)
    assert (request.max_output_tokens, request.input_tokens) == (1, 3)  # "user" + 8: 12 chars


@pytest.mark.parametrize(("headers", "body", "where"), [
    (ID, b"{", "body"), (ID, b"\xc3\x28", "body"), (ID, b'"text"', "body"),
    (ID, b'{"model": 3, "messages": []}', "body.model"),
    (ID, b'{"model": "m"}', "body.messages"),
    (ID, chat(max_tokens=1.5), "body.max_tokens"),
    (ID, chat(stream="yes"), "body.stream"),
    (ID, b'{"model": "m", "messages": [{"role": "user", "content": "a\\u0000"}]}',
     "body.messages[0].content"),
    (ID, b'{"model": "m", "messages": ["hi"]}', "body.messages[0]"),
    ({"x-request-id": "a b"}, chat(), "header x-request-id"),
    ({"x-envoy-auth-partial-body": "true"}, chat(), "body"),
    (ID, None, "body"),
])
def test_a_body_that_cannot_be_read_is_a_bad_call(headers, body, where):
    with pytest.raises(BadCall) as caught:
        llm_http.parse("/v1/chat/completions", headers, body)
    assert caught.value.where == where


def test_no_request_id_gets_a_new_one_and_other_paths_need_no_body():
    call = llm_http.parse("/v1/models", {}, None)
    assert call.kind == "" and len(call.request_id) == 32


@pytest.mark.parametrize(("seconds", "text"), [
    (0.02, "20ms"), (0.0, "0ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"),
    (3723, "1h2m3s"),
])
def test_a_reset_is_written_as_openai_writes_it(seconds, text):
    assert llm_http.duration_text(seconds) == text


NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def outcome(policy_id: str, metric: str, limit: int, remaining: int, reset_s: float,
            window: str = "MINUTE", mode: str = "enforce") -> QuotaOutcome:
    policy = PolicyRecord(policy_id, "app", "chat", "rate_limit", mode,
                          rate_limit=RateLimit(metric, window, limit))
    return QuotaOutcome(QuotaCheck(policy, Demand(1)), True, 1, remaining, NOW,
                        NOW + timedelta(seconds=reset_s))


def test_rate_limit_headers_name_the_tightest_limit_per_group_and_every_limit_for_ietf():
    limits = [outcome("rpm", "REQUESTS", 100, 40, 30), outcome("rph", "REQUESTS", 1000, 10, 600,
                                                                "HOUR"),
              outcome("tpm", "TOTAL_TOKENS", 5000, 4000, 12.5),
              outcome("dry", "REQUESTS", 1, 0, 5, mode="dry_run")]
    headers = dict(llm_http.rate_limit_headers(limits, frozenset({"openai", "ietf"})))
    assert headers == {
        "x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "10m0s",
        "x-ratelimit-limit-tokens": "5000", "x-ratelimit-remaining-tokens": "4000",
        "x-ratelimit-reset-tokens": "13s",
        "ratelimit-policy": '"rpm";q=100;w=60, "rph";q=1000;w=3600, "tpm";q=5000;w=60;'
                            'qu="tokens"',
        "ratelimit": '"rpm";r=40;t=30, "rph";r=10;t=600, "tpm";r=4000;t=13'}
    assert llm_http.rate_limit_headers(limits, frozenset()) == []
    assert "ratelimit" not in dict(llm_http.rate_limit_headers(limits, frozenset({"openai"})))


def decision(route: Route | None, allowed: bool = True) -> Decision:
    return Decision(allowed, Reason.ALLOWED if allowed else Reason.RATE_LIMITED, [], [],
                    route=route)


def test_the_body_goes_upstream_as_the_decision_says():
    call = llm_http.parse("/v1/chat/completions", ID, chat(stream=True))
    body = json.loads(llm_body.rewritten(call, decision(Route("openai", "gpt-4o-mini", 300))))
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 300
    assert body["stream_options"] == {"include_usage": True}
    call = llm_http.parse("/v1/chat/completions", ID, chat(max_completion_tokens=300))
    assert llm_body.rewritten(call, decision(Route("", "gpt-4o", 300))) is None
    body = json.loads(llm_body.rewritten(call, decision(Route("", "gpt-4o", 100))))
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    call = llm_http.parse("/v1/chat/completions", ID, chat(
        stream=True, stream_options={"include_usage": True}))
    assert llm_body.rewritten(call, decision(Route("", "gpt-4o", 0))) is None


def test_upstream_headers_say_what_the_route_changed():
    call = llm_http.parse("/v1/chat/completions", ID, chat(max_tokens=500))
    headers = dict(llm_http.upstream_headers(call, decision(Route("azure", "gpt-4o-mini", 200)),
                                             "res"))
    assert headers == {"x-warden-request-id": "req-1", "x-warden-reservation-id": "res",
                       "x-warden-model": "gpt-4o-mini", "x-warden-provider": "azure",
                       "x-warden-max-tokens": "200"}


def sse(*chunks: dict | str) -> bytes:
    return b"".join(b"data: " + (c.encode() if isinstance(c, str) else json.dumps(c).encode())
                    + b"\n\n" for c in chunks)


def delta(text: str) -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0,
                                                           "delta": {"content": text}}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3,
                                  "prompt_tokens_details": {"cached_tokens": 2}}}


def test_a_stream_is_counted_across_chunk_boundaries_and_its_usage_kept():
    stream = sse(delta("a"), delta("b"), delta("c"), USAGE, "[DONE]")
    meter = StreamMeter(0)
    for i in range(0, len(stream), 7):  # events split anywhere
        assert meter.feed(stream[i:i + 7]) is None
    assert (meter.chunks, meter.done, meter.malformed) == (3, True, False)
    used = meter.used(99)
    assert (used.input_tokens, used.output_tokens, used.cached_input_tokens, used.counted) == (
        11, 3, 2, False)


def test_a_stream_without_usage_is_settled_from_its_chunks():
    meter = StreamMeter(0)
    meter.feed(sse(delta("a"), delta("b"), {"choices": [{"delta": {}, "finish_reason": "stop"}]}))
    used = meter.used(40)
    assert (used.input_tokens, used.output_tokens, used.counted) == (40, 2, True)
    assert not meter.done


def test_a_stream_is_cut_before_the_event_that_would_pass_its_limit():
    first, rest = sse(delta("a"), delta("b")), sse(delta("c"), delta("d"))
    meter = StreamMeter(3)
    assert meter.feed(first) is None
    offset = meter.feed(rest)
    assert offset == len(sse(delta("c"))) and meter.chunks == 3
    meter = StreamMeter(1)
    whole = sse(delta("a"), delta("b"))
    assert meter.feed(whole[:-5]) is None  # the second event began in bytes already passed
    assert meter.feed(whole[-5:]) < 0


def test_a_malformed_event_is_noted_and_not_counted():
    meter = StreamMeter(0)
    meter.feed(b"data: {not json\n\n" + sse(delta("a")))
    assert (meter.malformed, meter.chunks) == (True, 1)


@pytest.mark.parametrize(("body", "used"), [
    (b'{"usage": {"prompt_tokens": 5, "completion_tokens": 6}}', (5, 6, 0)),
    (b'{"usage": {"input_tokens": 5, "output_tokens": 6, '
     b'"input_tokens_details": {"cached_tokens": 1}}}', (5, 6, 1)),
    (b'{"usage": {"prompt_tokens": -1, "completion_tokens": 6}}', None),
    (b'{"usage": {"prompt_tokens": 1, "completion_tokens": 6, '
     b'"prompt_tokens_details": {"cached_tokens": 2}}}', None),
    (b"not json", None), (b"[]", None),
])
def test_the_usage_of_a_json_answer(body, used):
    found = json_usage(body)
    assert (found and (found.input_tokens, found.output_tokens,
                       found.cached_input_tokens)) == used
