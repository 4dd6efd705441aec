"""What an LLM answer used, read as it passes through ext_proc (envoy_proc.py): the usage of
a JSON answer, and a server-sent event stream metered chunk by chunk. Pure: no gRPC, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from warden.api.llm_http import error_body
from warden.api.validate import MAX_TOKENS


@dataclass(slots=True)
class Used:
    """What an answer used, by the names of the usage columns."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    counted: bool = False  # from the stream's chunks: the answer reported no usage


def reported_usage(usage: Any) -> Used | None:
    """OpenAI's usage object (chat and completions: prompt/completion tokens; responses:
    input/output tokens), or None when it is not one."""
    if not isinstance(usage, dict):
        return None
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens", 0))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    values = (inp, out, cached)
    if not all(type(v) is int and 0 <= v <= MAX_TOKENS for v in values) or cached > inp:
        return None
    return Used(inp, out, cached)


def json_usage(body: bytes) -> Used | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return reported_usage(data.get("usage")) if isinstance(data, dict) else None


class StreamMeter:
    """Reads a server-sent event stream of completion chunks as it passes: counts the chunks
    that carry output (one token each, as OpenAI streams them), keeps the usage a final chunk
    reports, and says where to cut the stream once `limit` output tokens have passed (0: no
    limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks = 0
        self.usage: Used | None = None
        self.done = False  # [DONE] seen
        self.malformed = False  # an event that is not a JSON chunk
        self._carry = b""  # the start of an event not yet complete (already passed on)

    def feed(self, data: bytes) -> int | None:
        """Take the next bytes of the stream; the offset in `data` after which it must be cut
        (the next event would go over the limit; negative when that event began in bytes
        already passed on), or None."""
        buffer = self._carry + data
        start = 0
        while True:
            end = _event_end(buffer, start)
            if end is None:
                break
            if self._event(buffer[start:end]):
                self._carry = b""
                return start - (len(buffer) - len(data))
            start = end
        self._carry = buffer[start:]
        return None

    def _event(self, event: bytes) -> bool:
        """Count one event; True when it would take the stream over its limit."""
        lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
        if not lines:
            return False
        payload = b"\n".join(lines)
        if payload == b"[DONE]":
            self.done = True
            return False
        try:
            chunk = json.loads(payload)
        except ValueError:
            self.malformed = True
            return False
        if not isinstance(chunk, dict):
            self.malformed = True
            return False
        usage = reported_usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list) and any(_has_output(c) for c in choices):
            if self.limit and self.chunks >= self.limit:
                return True
            self.chunks += 1
        return False

    def used(self, input_tokens: int) -> Used:
        """The usage reported, else what passed (the input as estimated when authorized)."""
        return self.usage or Used(input_tokens, self.chunks, counted=True)


def _event_end(buffer: bytes, start: int) -> int | None:
    """The end of the event starting at `start` (after its blank line), or None."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n")
            if (i := buffer.find(sep, start)) >= 0]
    return min(ends) if ends else None


def _has_output(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal"))
    return bool(choice.get("text"))


def cut_events(limit: int) -> bytes:
    """What a cut stream ends with: an error event a client can read, then [DONE]."""
    error = json.loads(error_body(429, f"stream ended by Warden after {limit} output tokens, "
                                  "the most this call's reservation covers",
                                  "max_tokens_reached"))
    return b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"
