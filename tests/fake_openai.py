"""A fake OpenAI-compatible upstream for the mesh tests: HTTP/1.1 with keep-alive on asyncio
streams, started by the test on a free port, never the internet.

`POST /v1/chat/completions` answers a chat.completion whose usage is `usage` (prompt,
completion, cached prompt tokens), or `usage_of(request)`; with `"stream": true` it streams
one chunk per word of a `completion`-word reply, then, when the request asked for
`stream_options.include_usage`, the usage chunk, then `data: [DONE]`. It ignores
`max_tokens`, as a provider that overspends would: stopping the stream is Warden's part.
Every request is kept in `received`.

Knobs a test sets between requests: `status` (an error status answers an OpenAI-style error),
`stream_mode`: "normal"; "no_usage" (never a usage chunk); "cut" (the connection closes in
the middle of an event); "malformed" (events that are not JSON).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


class FakeOpenAI:
    def __init__(self, usage: tuple[int, int, int] = (30, 12, 0), completion: int = 12,
                 usage_of: Callable[[dict], tuple[int, int, int]] | None = None) -> None:
        self.usage = usage
        self.usage_of = usage_of  # a request's own usage, when set
        self.words = [f"w{i} " for i in range(completion)]
        self.received: list[Received] = []
        self.status = 200
        self.stream_mode = "normal"
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()

    def _usage(self, request: dict) -> dict:
        prompt, completion, cached = self.usage_of(request) if self.usage_of else self.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached}}

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await self._body(reader, headers)
                seen = Received(method, path, headers, body)
                self.received.append(seen)
                if not await self._answer(seen, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(parts)
                parts.append(data[:-2])
        length = int(headers.get("content-length", "0"))
        return await reader.readexactly(length) if length else b""

    async def _answer(self, seen: Received, writer: asyncio.StreamWriter) -> bool:
        """Write the answer; False when the connection must close after it."""
        if seen.method != "POST" or seen.path != "/v1/chat/completions":
            return self._json(writer, 404, {"error": {"message": "not found",
                                                      "type": "invalid_request_error"}})
        if self.status != 200:
            return self._json(writer, self.status, {"error": {
                "message": "the fake upstream failed", "type": "server_error"}})
        request = seen.json
        if not request.get("stream"):
            return self._json(writer, 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model", ""),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": "".join(self.words)}}],
                "usage": self._usage(request)})
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": request.get("model", "")}
        for n, word in enumerate(self.words):
            if self.stream_mode == "malformed":
                event = _event("{this is not json")
            else:
                event = _event({**base, "choices": [
                    {"index": 0, "delta": {"content": word}, "finish_reason": None}]})
            if self.stream_mode == "cut" and n == len(self.words) // 2:
                writer.write(_chunk(event[: len(event) // 2]))
                await writer.drain()
                return False
            writer.write(_chunk(event))
            await writer.drain()
            await asyncio.sleep(0.002)  # one event per read, as a provider's tokens arrive
        include_usage = (request.get("stream_options") or {}).get("include_usage")
        if include_usage and self.stream_mode != "no_usage":
            writer.write(_chunk(_event({**base, "choices": [], "usage": self._usage(request)})))
        writer.write(_chunk(_event("[DONE]")) + b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, payload: dict) -> bool:
        body = json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\n\r\n".encode() + body)
        return True
