"""What Warden adds to one LLM call, as an app that makes one call at a time sees it.

    python bench/latency.py [--rounds 3] [--seconds 10] [--warmup 2] [--llm-ms 20]
                            [--database-url URL | embedded] [--json PATH]

One operation, at concurrency 1: Authorize, then the LLM call, then RecordUsage of that
request with the usage the LLM reported. The LLM is bench/fake_llm.py, a local fake
OpenAI-compatible HTTP server the bench starts, which answers `POST /v1/chat/completions`
after --llm-ms (a real HTTP round trip on a kept-alive connection, not an asyncio.sleep), with
the usage of bench/tenant.py so that both servers price it alike. The same operation runs
against one `warden serve` with the tenant of bench/tenant.py (six policies, four quota
leases, every decision explained) and against bench/noop_server.py; rounds alternate the two.

For each server it reports p50 and p99 of Authorize, of RecordUsage, of their sum per
operation ("added latency": what the sidecar adds to the LLM call) and of the LLM call, as
medians of the rounds, and Warden's added latency against the no-op's. Every answer is checked
(allowed; the usage's cost; not a duplicate) and the database must hold every decision and
usage row Warden acknowledged; otherwise exit 1.
"""

from __future__ import annotations

import asyncio
import json
import time

import harness
import tenant
from harness import Bench, num, ratio, table
from load import Call, WrongAnswer, allowed, alternate, medians, problems_of, run_load
from servers import CALL_TIMEOUT, say

from warden.v1 import types_pb2, warden_pb2, warden_pb2_grpc

SERVERS = ("no-op", "Warden")
SPANS = ("authorize", "record_usage", "added", "llm")
SPAN_NAMES = {"authorize": "Authorize", "record_usage": "RecordUsage",
              "added": "**added** (both)", "llm": "LLM call"}


class LLM:
    """A client of the fake LLM: one kept-alive HTTP/1.1 connection per call in flight."""

    def __init__(self, target: str) -> None:
        self._host, port = target.rsplit(":", 1)
        self._port = int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def complete(self, model: str, messages: list[dict], max_tokens: int) -> dict:
        body = json.dumps({"model": model, "messages": messages,
                           "max_tokens": max_tokens}).encode()
        reader, writer = self._idle.pop() if self._idle else \
            await asyncio.open_connection(self._host, self._port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: llm\r\n"
                     b"content-type: application/json\r\n"
                     + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        if not head.startswith("HTTP/1.1 200"):
            writer.close()
            raise WrongAnswer("LLM", head.split("\r\n", 1)[0])
        length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:"))
        answer = json.loads(await reader.readexactly(length))
        self._idle.append((reader, writer))
        return answer

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def llm_call(api_key: str, llm_target: str) -> Call:
    make = tenant.requests(api_key)
    llm = LLM(llm_target)

    async def call(stub: warden_pb2_grpc.WardenStub, n: int, spans: dict[str, float]) -> int:
        request = make(n)
        start = time.perf_counter()
        reply = allowed(await stub.Authorize(request, timeout=CALL_TIMEOUT))
        authorized = time.perf_counter()
        answer = await llm.complete(reply.route.model, [
            {"role": m.role, "content": m.content} for m in request.messages],
            reply.route.max_output_tokens)
        answered = time.perf_counter()
        usage = answer["usage"]
        recorded = await stub.RecordUsage(warden_pb2.RecordUsageRequest(
            request_id=request.request_id, api_key=request.api_key,
            usage=types_pb2.Usage(input_tokens=usage["prompt_tokens"],
                                  output_tokens=usage["completion_tokens"],
                                  cached_input_tokens=usage["prompt_tokens_details"]
                                  ["cached_tokens"]),
            outcome=warden_pb2.OUTCOME_COMPLETED, reservation_id=reply.reservation_id),
            timeout=CALL_TIMEOUT)
        end = time.perf_counter()
        tenant.check_recorded(recorded)
        spans.update(authorize=authorized - start, llm=answered - authorized,
                     record_usage=end - answered, added=authorized - start + end - answered)
        return reply.ByteSize() + recorded.ByteSize()

    return call


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden, the no-op server and the fake LLM ...")
    warden = bench.warden(database_url)
    key = asyncio.run(tenant.create(warden.target, bench.auth))
    servers = {"no-op": bench.noop(), "Warden": warden}
    u = tenant.USAGE
    llm = bench.fake_llm(args.llm_ms, "--usage",
                         f"{u.input_tokens},{u.output_tokens},{u.cached_input_tokens}")

    def measure(name: str, round_: int) -> dict:
        s = servers[name]
        r = run_load([s.target], llm_call(key, llm.target), 1, args.warmup, args.seconds,
                     [s.pid])
        # Flat, so that medians() takes each span's percentiles over the rounds.
        return {**r, **{f"{span}_{q}": r["spans"].get(span, {}).get(q) for span in SPANS
                        for q in ("p50_ms", "p99_ms")}}

    runs = alternate(args.rounds, SERVERS, measure)
    for name, results in runs.items():
        for r in results:
            for p in problems_of(f"round {r['round']}, {name}", r):
                bench.problem(p)
    answered = sum(r["ops"] for r in runs["Warden"])
    harness.check_stored(bench, database_url, {
        "allowed decisions": ("SELECT count(*) FROM requests WHERE decision = 'allow'",
                              answered),
        "usage rows": ("SELECT count(*) FROM usage", answered)})
    keys = ["ops_per_s", "server_cpu_ms", *(f"{s}_{q}" for s in SPANS
                                            for q in ("p50_ms", "p99_ms"))]
    return {"runs": runs, "medians": {name: medians(rs, keys) for name, rs in runs.items()}}


def report(context: dict, results: dict) -> None:
    med, runs = results["medians"], results["runs"]
    rows = []
    for span in SPANS:
        noop, warden = med["no-op"], med["Warden"]
        rows.append([SPAN_NAMES[span], num(noop[f"{span}_p50_ms"], 2),
                     num(noop[f"{span}_p99_ms"], 2), num(warden[f"{span}_p50_ms"], 2),
                     num(warden[f"{span}_p99_ms"], 2),
                     ratio(noop[f"{span}_p50_ms"], warden[f"{span}_p50_ms"]),
                     ratio(noop[f"{span}_p99_ms"], warden[f"{span}_p99_ms"])])
    print(table(["per operation", "no-op p50 ms:", "no-op p99 ms:", "Warden p50 ms:",
                 "Warden p99 ms:", "Warden/no-op p50:", "Warden/no-op p99:"], rows,
                f"**One LLM call at a time** (Authorize, a {context['llm_ms']:g} ms fake LLM "
                f"call, RecordUsage), medians of {context['rounds']} rounds of "
                f"{context['seconds_s']:g} s"))
    print(table(["round", "server", "ops/s:", "added p50 ms:", "added p99 ms:",
                 "server CPU ms/op:"],
                [[r["round"], name, num(r["ops_per_s"], 1), num(r["added_p50_ms"], 2),
                  num(r["added_p99_ms"], 2), num(r.get("server_cpu_ms"), 3)]
                 for r, name in sorted(((r, n) for n, rs in runs.items() for r in rs),
                                       key=lambda x: x[0]["round"])], "Each round"))
    noop, warden = med["no-op"], med["Warden"]
    print(f"\nWarden adds {num(warden['added_p50_ms'], 2)} ms at p50 and "
          f"{num(warden['added_p99_ms'], 2)} ms at p99 to each LLM call; the no-op "
          f"{num(noop['added_p50_ms'], 2)} and {num(noop['added_p99_ms'], 2)} ms.")


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each server")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds run but not measured before each run")
    p.add_argument("--llm-ms", type=float, default=20.0,
                   help="how long the fake LLM takes to answer")
    args = p.parse_args()
    harness.positive(p, args, "rounds")
    harness.positive(p, args, "seconds", at_least=0.1)
    harness.positive(p, args, "llm_ms", at_least=0)
    harness.main(p, work, report, lambda a: {
        "rounds": a.rounds, "seconds_s": a.seconds, "warmup_s": a.warmup,
        "llm_ms": a.llm_ms, "concurrency": 1}, args)


if __name__ == "__main__":
    main()
