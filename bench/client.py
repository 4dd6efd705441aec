"""What the Python client (clients/python) adds to Authorize over raw generated stubs, and
what its guard adds around an LLM call, against the same sidecar in the same run.

    python bench/client.py [--rounds 3] [--seconds 5] [--warmup 1] [--concurrency 1]
                           [--database-url URL | embedded] [--json PATH]

One `warden serve` with the tenant of bench/tenant.py (six policies, four quota leases, every
decision explained). Four runs alternate in each round: Authorize through raw stubs, the same
request through `AsyncWardenClient.authorize`; and a pair around a fake LLM call (an
`asyncio.sleep(0)`: the call itself is not what is measured), raw (Authorize, the call,
RecordUsage) and through `AsyncWardenClient.guard`. Every answer must allow; every RecordUsage
must be stored. Reported: calls per second, p50 and p99, the client process's CPU per
operation, and each client run's ratio to its raw run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

import grpc
import harness
import tenant
from harness import Bench, check_stored, num, ratio, table
from load import Call, allowed, alternate, drive_stubs, medians, problems_of
from servers import say

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python" / "src"))
from warden.v1 import warden_pb2_grpc  # noqa: E402
from warden_client import AsyncWardenClient  # noqa: E402 - the client's source tree

MODES = ("Authorize / raw stubs", "Authorize / client", "pair / raw stubs", "pair / guard")
FIGURES = ("ops_per_s", "p50_ms", "p99_ms", "client_cpu_ms")


def _message_dicts() -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in tenant.MESSAGES]


def raw_authorize(key: str) -> Call:
    return tenant.authorize_call(key)


def client_authorize(prefix: str) -> Call:
    messages = _message_dicts()

    async def call(client: AsyncWardenClient, n: int, spans: dict[str, float]) -> int:
        decision = await client.authorize(
            tenant.MODEL_ALIAS, request_id=f"{prefix}-{n}", messages=messages,
            max_output_tokens=tenant.MAX_OUTPUT_TOKENS, timeout=5.0)
        allowed(decision.response)
        return decision.response.ByteSize()

    return call


def raw_pair(key: str) -> Call:
    make = tenant.requests(key)

    async def call(stub: warden_pb2_grpc.WardenStub, n: int, spans: dict[str, float]) -> int:
        request = make(n)
        started = time.monotonic()
        reply = allowed(await stub.Authorize(request, timeout=5.0))
        await asyncio.sleep(0)  # the LLM call
        usage = tenant.usage_request(request, reply)
        usage.latency.FromTimedelta(timedelta(seconds=time.monotonic() - started))
        tenant.check_recorded(await stub.RecordUsage(usage, timeout=5.0))
        return reply.ByteSize()

    return call


def guard_pair(prefix: str) -> Call:
    messages = _message_dicts()
    used = tenant.USAGE

    async def call(client: AsyncWardenClient, n: int, spans: dict[str, float]) -> int:
        async with client.guard(tenant.MODEL_ALIAS, request_id=f"{prefix}-{n}",
                                messages=messages,
                                max_output_tokens=tenant.MAX_OUTPUT_TOKENS) as llm:
            await asyncio.sleep(0)  # the LLM call
            llm.used(used.input_tokens, used.output_tokens, used.cached_input_tokens)
        return llm.decision.response.ByteSize()

    return call


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden ...")
    warden = bench.warden(database_url)
    key = asyncio.run(tenant.create(warden.target, bench.auth))
    def measure(name: str, round_: int) -> dict:
        async def run() -> dict:
            if name.endswith("raw stubs"):  # new request ids for every run
                make_raw = raw_authorize if name.startswith("Authorize") else raw_pair
                return await _raw(warden.target, make_raw(key), args)
            make = client_authorize if name.startswith("Authorize") else guard_pair
            async with AsyncWardenClient(warden.target, api_key=key, timeout=5.0) as client:
                return await drive_stubs([client], make(f"client-{round_}-{name[:4]}"),
                                         args.concurrency, args.warmup, args.seconds)
        result = asyncio.run(run())
        result["client_cpu_ms"] = round(result["client_cpu_pct"] / 100 * 1000
                                        / max(result["ops_per_s"], 1e-9), 3)
        return result

    runs = alternate(args.rounds, list(MODES), measure)
    for name, results in runs.items():
        for r in results:
            for p in problems_of(f"round {r['round']}, {name}", r):
                bench.problem(p)
    pairs = sum(r["ops"] for m in ("pair / raw stubs", "pair / guard") for r in runs[m])
    check_stored(bench, database_url, {
        "usage rows": ("SELECT count(*) FROM usage", pairs)})
    return {"runs": runs,
            "medians": {name: medians(results, FIGURES) for name, results in runs.items()}}


async def _raw(target: str, call: Call, args) -> dict:
    async with grpc.aio.insecure_channel(target) as channel:
        return await drive_stubs([warden_pb2_grpc.WardenStub(channel)], call, args.concurrency,
                                 args.warmup, args.seconds)


def report(context: dict, results: dict) -> None:
    med = results["medians"]
    rows = []
    for base, other in (("Authorize / raw stubs", "Authorize / client"),
                        ("pair / raw stubs", "pair / guard")):
        for name in (base, other):
            m = med[name]
            rows.append([name, num(m["ops_per_s"], 1), num(m["p50_ms"], 2),
                         num(m["p99_ms"], 2), num(m["client_cpu_ms"], 3)])
        a, b = med[base], med[other]
        rows.append([f"**{other.split(' / ')[1]}/raw**",
                     ratio(a["ops_per_s"], b["ops_per_s"]),
                     f"**{ratio(a['p50_ms'], b['p50_ms'])}**", ratio(a["p99_ms"], b["p99_ms"]),
                     ratio(a["client_cpu_ms"], b["client_cpu_ms"])])
    print(table(["mode / through", "ops/s:", "p50 ms:", "p99 ms:", "client CPU ms/op:"], rows,
                f"The Python client against raw stubs, concurrency {context['concurrency']}, "
                f"medians of {context['rounds']} rounds of {context['seconds_s']:g} s"))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each mode")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds run but not measured before each run")
    p.add_argument("--concurrency", type=int, default=1, help="operations in flight")
    args = p.parse_args()
    harness.positive(p, args, "rounds", "concurrency")
    harness.positive(p, args, "seconds", at_least=0.1)
    harness.main(p, work, report, lambda a: {
        "rounds": a.rounds, "seconds_s": a.seconds, "warmup_s": a.warmup,
        "concurrency": a.concurrency}, args)


if __name__ == "__main__":
    main()
