"""The benches' load driver: workers on one asyncio loop in the bench process, each making one
operation after another (an operation is whatever a bench's `Call` does: one Authorize, a
pair, a whole LLM call), a warm-up, a measured period, and what was measured: operations per
second, latencies, errors by kind, the bench's own CPU and the servers' CPU per operation.
Also alternating rounds, and the raw calls that capture Warden's answers for the replaying
no-op.

Every answer counts, warm-up included: an error or a wrong answer at any time is an error.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from harness import median
from servers import CALL_TIMEOUT, cpu_seconds, machine_busy, say

from warden.v1 import types_pb2, warden_pb2, warden_pb2_grpc

# call(stub, n, spans) -> bytes answered. n is unique per operation within a drive; the call
# may time parts of its operation into spans (name -> seconds), kept for measured operations.
Call = Callable[[Any, int, dict[str, float]], Awaitable[int]]


class WrongAnswer(Exception):
    """A call succeeded but answered something the bench did not expect."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def allowed(reply: warden_pb2.AuthorizeResponse) -> warden_pb2.AuthorizeResponse:
    """The reply, if it allows the call (for loads whose limits are never meant to deny)."""
    if reply.decision != warden_pb2.DECISION_ALLOW:
        refused = "; ".join(f"{r.policy_id} {types_pb2.Reason.Name(r.reason)} {r.message!r}"
                            for r in reply.results if not r.allowed)
        remaining = ", ".join(f"{limit.policy_id} {limit.remaining}" for limit in reply.limits)
        raise WrongAnswer("DENY", f"{warden_pb2.Decision.Name(reply.decision)} "
                                  f"{types_pb2.Reason.Name(reply.reason)} by {refused} "
                                  f"(remaining: {remaining})")
    return reply


def percentile_ms(ordered: Sequence[float], q: float) -> float | None:
    """Nearest rank of sorted seconds, in ms; None without a sample."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)


@dataclass
class Load:
    """Shared by the workers of one drive (times from time.perf_counter)."""

    measure_start: float
    stop_at: float
    ops: int = 0  # operations that succeeded, warm-up included
    completed: int = 0  # ... completed within the measured period
    latencies: list[float] = field(default_factory=list)  # ... started within it
    spans: dict[str, list[float]] = field(default_factory=dict)  # ... their parts
    errors: Counter = field(default_factory=Counter)
    first_error: str = ""
    response_bytes: int = 0


async def _worker(stub: Any, call: Call, load: Load, n: int,
                  step: int) -> None:
    spans: dict[str, float] = {}
    while (start := time.perf_counter()) < load.stop_at:
        spans.clear()
        try:
            size = await call(stub, n, spans)
        except grpc.aio.AioRpcError as exc:
            kind, detail = exc.code().name, exc.details()
        except WrongAnswer as exc:
            kind, detail = exc.kind, str(exc)
        else:
            end = time.perf_counter()
            load.ops += 1
            load.response_bytes = load.response_bytes or size
            # Throughput counts completions inside the window, whenever the operation
            # started; latencies, the operations started inside it.
            load.completed += load.measure_start <= end <= load.stop_at
            if start >= load.measure_start:
                load.latencies.append(end - start)
                for name, seconds in spans.items():
                    load.spans.setdefault(name, []).append(seconds)
            n += step
            continue
        n += step
        load.errors[kind] += 1
        load.first_error = load.first_error or f"{kind}: {detail}"


async def _window(load: Load, pids: Sequence[int], out: dict) -> None:
    """CPU of the servers, of the bench and of the machine over the measured period."""
    await asyncio.sleep(max(load.measure_start - time.perf_counter(), 0))
    start = (time.perf_counter(), cpu_seconds(pids), time.process_time(), machine_busy())
    await asyncio.sleep(max(load.stop_at - time.perf_counter(), 0))
    end = (time.perf_counter(), cpu_seconds(pids), time.process_time(), machine_busy())
    span, server, client, busy = (b - a for a, b in zip(start, end, strict=True))
    out.update(span=span, server=server, client=client, rest=busy - server - client)


async def drive(targets: Sequence[str], call: Call, concurrency: int, warmup: float,
                seconds: float, pids: Sequence[int] = (),
                stub_type: Callable[[grpc.aio.Channel], Any] = warden_pb2_grpc.WardenStub
                ) -> dict[str, Any]:
    """`concurrency` workers spread over one channel per target, for warmup + seconds. With
    `pids`, the CPU those processes spent per operation completed in the measured period.
    Each call is given a `stub_type` stub (Warden's, unless the bench measures another
    service)."""
    # Without a local subchannel pool, channels to one target share a single connection.
    channels = [grpc.aio.insecure_channel(t, options=[("grpc.use_local_subchannel_pool", 1)])
                for t in targets]
    try:
        return await drive_stubs([stub_type(c) for c in channels], call, concurrency, warmup,
                                 seconds, pids)
    finally:
        for channel in channels:
            await channel.close()


async def drive_stubs(stubs: Sequence[Any], call: Call, concurrency: int, warmup: float,
                      seconds: float, pids: Sequence[int] = ()) -> dict[str, Any]:
    """As drive, the workers spread over `stubs`: whatever `call` takes as its first argument
    (a gRPC stub, or an HTTP client for a bench of HTTP calls)."""
    now = time.perf_counter()
    load = Load(now + warmup, now + warmup + seconds)
    cpu: dict[str, float] = {}
    await asyncio.gather(_window(load, pids, cpu),
                         *(_worker(stubs[i % len(stubs)], call, load, i, concurrency)
                           for i in range(concurrency)))
    ok = sorted(load.latencies)
    result: dict[str, Any] = {
        "ops": load.ops, "completed": load.completed, "errors": sum(load.errors.values()),
        "error_codes": dict(load.errors), "first_error": load.first_error,
        "ops_per_s": round(load.completed / seconds, 1),
        "p50_ms": percentile_ms(ok, 0.50), "p99_ms": percentile_ms(ok, 0.99),
        "max_ms": percentile_ms(ok, 1.0), "response_bytes": load.response_bytes,
        # Near 100% of one core means the generator, not the server, set the pace.
        "client_cpu_pct": round(cpu["client"] / cpu["span"] * 100),
        # Everything else the machine ran meanwhile, Postgres included, as % of one core.
        "rest_cpu_pct": round(cpu["rest"] / cpu["span"] * 100),
        "spans": {name: {"p50_ms": percentile_ms(sorted(v), 0.50),
                         "p99_ms": percentile_ms(sorted(v), 0.99)}
                  for name, v in load.spans.items()}}
    if pids:
        result["server_cpu_ms"] = round(cpu["server"] * 1000 / max(load.completed, 1), 3)
        result["server_cpu_pct"] = round(cpu["server"] / cpu["span"] * 100)
    return result


def run_load(targets: Sequence[str], call: Call, concurrency: int, warmup: float,
             seconds: float, pids: Sequence[int] = (),
             stub_type: Callable[[grpc.aio.Channel], Any] = warden_pb2_grpc.WardenStub
             ) -> dict[str, Any]:
    return asyncio.run(drive(targets, call, concurrency, warmup, seconds, pids, stub_type))


def alternate(rounds: int, names: Sequence[str], measure: Callable[[str, int], dict]
              ) -> dict[str, list[dict]]:
    """Rounds of A, B, A, B ...: each round measures every name in turn, so that a slow
    minute of the shared machine falls on all of them and the medians compare like with
    like."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(1, rounds + 1):
        for name in names:
            say(f"round {r}/{rounds}: {name} ...")
            runs[name].append({"round": r, **measure(name, r)})
    return runs


def medians(runs: Sequence[dict], keys: Sequence[str]) -> dict[str, Any]:
    """Each key's median over the rounds, and its spread as [lowest, highest]."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = median(values)
        out[f"{key}_spread"] = [min(values), max(values)] if values else None
    return out


def problems_of(label: str, result: dict) -> list[str]:
    """A drive's errors, as the bench's problems."""
    if not result["errors"]:
        return []
    return [f"{label}: {result['errors']} errors {result['error_codes']}, first: "
            f"{result['first_error']}"]


async def raw_call(channel: grpc.aio.Channel, method: str, request: Message) -> bytes:
    """A Warden RPC whose answer is kept as the bytes the server sent."""
    stub = channel.unary_unary(f"/warden.v1.Warden/{method}",
                               request_serializer=type(request).SerializeToString,
                               response_deserializer=None)
    return await stub(request, timeout=CALL_TIMEOUT)
