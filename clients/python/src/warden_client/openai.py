"""The OpenAI SDK through Warden: `wrap(openai_client, warden_client)` gives an object whose
`chat.completions.create(...)` is authorized first, made with the decision applied, and
settled after; everything else is the OpenAI client's own. Needs the `openai` extra
(`pip install 'warden-client[openai]'`).

    from openai import OpenAI
    from warden_client import WardenClient
    from warden_client.openai import wrap

    client = wrap(OpenAI(), WardenClient(api_key="wk_..."))
    answer = client.chat.completions.create(model="chat", messages=[...], max_tokens=512)

- The decision applied: the routed model; the `max_tokens` (or `max_completion_tokens`, the
  one the call named) lowered to what Warden allows; the redacted messages when a PII policy
  redacts.
- A denial raises what an OpenAI user already handles: `openai.RateLimitError` (429) for a
  rate limit or budget, `openai.PermissionDeniedError` (403) for a policy, and
  `openai.InternalServerError` (503) when a quota or every provider's circuit is unavailable,
  with an OpenAI-style body (`error.code` as Warden's Envoy answers name it) and the decision
  as `warden_decision`.
- Usage is recorded from the answer's `usage`. With `stream=True`, `stream_options.
  include_usage` is added and the usage recorded when the stream ends; when it breaks, or the
  caller closes it or stops reading (the stream is garbage collected), the usage is what the
  chunks counted so far (each content chunk a token, the prompt about four characters a
  token), with the outcome failed or cancelled.
- `wrap(AsyncOpenAI(), AsyncWardenClient(...))` is the same for asyncio, except that an async
  stream dropped unread cannot record from the garbage collector: close it (`async with`) or
  read it to the end; otherwise its reservation expires and is settled at what was reserved.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
from openai import _exceptions

from warden_client._client import AsyncWardenClient, WardenClient
from warden_client._decision import Decision

__all__ = ["Wrapped", "wrap"]

# Denial reasons as OpenAI-style errors: (status, error class, error code).
_DENIALS = {
    "RATE_LIMITED": (429, openai.RateLimitError, "rate_limit_exceeded"),
    "BUDGET_EXHAUSTED": (429, openai.RateLimitError, "insufficient_quota"),
    "QUOTA_UNAVAILABLE": (503, openai.InternalServerError, "quota_unavailable"),
    "PROVIDER_UNAVAILABLE": (503, openai.InternalServerError, "provider_unavailable"),
}
_HTTP = getattr(_exceptions, "httpx2", None) or _exceptions.httpx  # the SDK's HTTP library


def _denied(decision: Decision) -> openai.APIStatusError:
    status, cls, code = _DENIALS.get(decision.reason, (403, openai.PermissionDeniedError, ""))
    code = code or decision.reason.lower()
    message = f"denied by Warden: {decision.message or decision.reason}"
    headers = {"retry-after": str(max(1, math.ceil(decision.retry_after)))} \
        if decision.retry_after else {}
    request = _HTTP.Request("POST", "https://warden.invalid/v1/chat/completions")
    error = cls(message, response=_HTTP.Response(status, headers=headers, request=request),
                body={"message": message, "type": "warden", "code": code})
    error.warden_decision = decision  # type: ignore[attr-defined]
    return error


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _prepare(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(model, authorize's arguments, the max-tokens key the call uses)."""
    key = "max_completion_tokens" if "max_completion_tokens" in kwargs else "max_tokens"
    messages = [{"role": m.get("role", "user"), "content": _text(m.get("content"))}
                for m in kwargs.get("messages", ())]
    return kwargs["model"], {"messages": messages,
                             "max_output_tokens": int(kwargs.get(key) or 0)}, key


def _apply(decision: Decision, kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    call = dict(kwargs, model=decision.model)
    if decision.max_output_tokens:
        call[key] = decision.max_output_tokens
    if decision.messages is not None:
        call["messages"] = [dict(m, content=r["content"]) for m, r in
                            zip(kwargs["messages"], decision.messages, strict=True)]
    if kwargs.get("stream"):
        call["stream_options"] = {**(kwargs.get("stream_options") or {}), "include_usage": True}
    return call


def _used(usage: Any) -> dict[str, int]:
    details = getattr(usage, "prompt_tokens_details", None)
    return {"input_tokens": usage.prompt_tokens or 0,
            "output_tokens": usage.completion_tokens or 0,
            "cached_input_tokens": getattr(details, "cached_tokens", 0) or 0}


class _Meter:
    """What a stream used: its usage chunk, else what its chunks counted."""

    def __init__(self, decision: Decision, prompt: dict[str, Any]) -> None:
        self.decision = decision
        chars = sum(len(m["content"]) + len(m["role"]) for m in prompt["messages"])
        self.estimate = -(-chars // 4)
        self.chunks = 0
        self.usage: dict[str, int] | None = None
        self.started = time.monotonic()
        self.recorded = False

    def saw(self, chunk: Any) -> None:
        if getattr(chunk, "usage", None):
            self.usage = _used(chunk.usage)
        self.chunks += sum(1 for c in getattr(chunk, "choices", ()) or ()
                           if getattr(c.delta, "content", None))

    def settlement(self, outcome: str) -> dict[str, Any]:
        self.recorded = True
        used = self.usage or {"input_tokens": self.estimate, "output_tokens": self.chunks}
        return {**used, "outcome": outcome, "latency": time.monotonic() - self.started,
                "reservation_id": self.decision.reservation_id}


class _Stream:
    """The SDK's stream, settled once it ends, breaks, is closed or is dropped."""

    def __init__(self, inner: Any, warden: WardenClient, meter: _Meter) -> None:
        self._inner, self._warden, self._meter = inner, warden, meter

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._inner)
        except StopIteration:
            self._settle("completed")
            raise
        except BaseException:
            self._settle("failed")
            raise
        self._meter.saw(chunk)
        return chunk

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._settle("cancelled")
        self._inner.close()

    def __del__(self) -> None:
        self._settle("cancelled")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _settle(self, outcome: str) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None and not meter.recorded and not meter.decision.fail_open:
            self._warden.record_usage(meter.decision.request_id, **meter.settlement(outcome))


class _AsyncStream:
    def __init__(self, inner: Any, warden: AsyncWardenClient, meter: _Meter) -> None:
        self._inner, self._warden, self._meter = inner, warden, meter

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            await self._settle("completed")
            raise
        except BaseException:
            await self._settle("failed")
            raise
        self._meter.saw(chunk)
        return chunk

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._settle("cancelled")
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def _settle(self, outcome: str) -> None:
        meter = self._meter
        if not meter.recorded and not meter.decision.fail_open:
            await self._warden.record_usage(meter.decision.request_id,
                                            **meter.settlement(outcome))


class _Completions:
    def __init__(self, inner: Any, warden: WardenClient) -> None:
        self._inner, self._warden = inner, warden

    def create(self, **kwargs: Any) -> Any:
        model, prompt, key = _prepare(kwargs)
        decision = self._warden.authorize(model, **prompt)
        if not decision.allowed:
            raise _denied(decision)
        meter = _Meter(decision, prompt)
        try:
            answer = self._inner.create(**_apply(decision, kwargs, key))
        except BaseException:
            if not decision.fail_open:
                self._warden.record_usage(decision.request_id, **meter.settlement("failed"))
            raise
        if kwargs.get("stream"):
            return _Stream(answer, self._warden, meter)
        if not decision.fail_open:
            meter.usage = _used(answer.usage) if answer.usage else None
            self._warden.record_usage(decision.request_id, **meter.settlement("completed"))
        return answer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class _AsyncCompletions:
    def __init__(self, inner: Any, warden: AsyncWardenClient) -> None:
        self._inner, self._warden = inner, warden

    async def create(self, **kwargs: Any) -> Any:
        model, prompt, key = _prepare(kwargs)
        decision = await self._warden.authorize(model, **prompt)
        if not decision.allowed:
            raise _denied(decision)
        meter = _Meter(decision, prompt)
        try:
            answer = await self._inner.create(**_apply(decision, kwargs, key))
        except BaseException:
            if not decision.fail_open:
                await self._warden.record_usage(decision.request_id,
                                                **meter.settlement("failed"))
            raise
        if kwargs.get("stream"):
            return _AsyncStream(answer, self._warden, meter)
        if not decision.fail_open:
            meter.usage = _used(answer.usage) if answer.usage else None
            await self._warden.record_usage(decision.request_id,
                                            **meter.settlement("completed"))
        return answer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class _Chat:
    def __init__(self, inner: Any, completions: Any) -> None:
        self._inner, self.completions = inner, completions

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class Wrapped:
    """An OpenAI client whose chat completions go through Warden."""

    def __init__(self, client: Any, warden: WardenClient | AsyncWardenClient) -> None:
        self._client = client
        completions = client.chat.completions
        self.chat = _Chat(client.chat, _AsyncCompletions(completions, warden)
                          if isinstance(warden, AsyncWardenClient)
                          else _Completions(completions, warden))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._client, name)


def wrap(client: Any, warden: WardenClient | AsyncWardenClient) -> Wrapped:
    """`client` (openai.OpenAI with a WardenClient, or openai.AsyncOpenAI with an
    AsyncWardenClient) with its chat completions through Warden."""
    if isinstance(client, openai.AsyncOpenAI) != isinstance(warden, AsyncWardenClient):
        raise TypeError("wrap OpenAI with WardenClient, AsyncOpenAI with AsyncWardenClient")
    return Wrapped(client, warden)
