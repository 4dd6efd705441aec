"""A fake OpenAI-compatible LLM endpoint for the benches: `POST /v1/chat/completions` waits
--delay-ms, then answers a chat.completion with a short reply and fixed usage.

    python bench/fake_llm.py --listen 127.0.0.1:8081 [--delay-ms 20]
                             [--usage 180,120,40]   # prompt, completion, cached prompt tokens

HTTP/1.1 with keep-alive on asyncio streams, nothing else: the bench's calls stand for an app's
LLM calls, so that what Warden adds around them is measured next to a call of realistic
shape. Any other path is 404.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

REPLY = "I have opened a trace for order 48213-B; if the parcel is lost we will resend it."


def completion(request: dict, usage: tuple[int, int, int], n: int) -> bytes:
    prompt, completion_tokens, cached = usage
    return json.dumps({
        "id": f"chatcmpl-bench{n:012d}", "object": "chat.completion", "created": int(time.time()),
        "model": request.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                  "total_tokens": prompt + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }).encode()


def response(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def serve(listen: str, delay: float, usage: tuple[int, int, int]) -> None:
    answered = 0

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                length = int({k.lower(): v for k, v in headers.items()}
                             .get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if method != "POST" or path != "/v1/chat/completions":
                    writer.write(response("404 Not Found", b'{"error": "not found"}'))
                else:
                    await asyncio.sleep(delay)
                    answered += 1
                    writer.write(response("200 OK", completion(json.loads(body or b"{}"),
                                                               usage, answered)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(connection, host, int(port))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with server:
        await stopping.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="how long each completion takes")
    parser.add_argument("--usage", default="180,120,40",
                        help="prompt, completion and cached prompt tokens every answer reports")
    args = parser.parse_args()
    usage = tuple(int(v) for v in args.usage.split(","))
    if len(usage) != 3:
        parser.error("--usage takes three numbers")
    asyncio.run(serve(args.listen, args.delay_ms / 1000, usage))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
