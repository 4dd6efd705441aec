"""Load generator for Warden's Authorize over localhost gRPC, against a no-op baseline.

    python bench/authorize.py [--concurrency 32] [--duration 10] [--database-url URL]

Starts bench/noop_server.py and a real `warden serve` (embedded Postgres, or a fresh database on
--database-url), creates a tenant with a realistic policy set through the Admin API (org model
access with an alias, team routing with a token cap, app and user request rate limits), then
drives each server in turn with the same requests at a fixed concurrency and prints throughput,
p50 and p99, the warden/noop ratios and Warden's cache hit ratio. Every process it starts is
stopped before it exits. The helpers that start and stop servers are also used by
bench/propagation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Beside this file, which is on sys.path when run as `python bench/authorize.py`.
from noop_server import (
    ACCESS_POLICY_ID,
    APP_ID,
    APP_LIMIT_ID,
    FALLBACK_PROVIDER,
    MAX_OUTPUT_TOKENS,
    MAX_TOKENS_CAP,
    MODEL,
    MODEL_ALIAS,
    ORG_ID,
    PROVIDER,
    RATE_LIMIT,
    ROUTING_POLICY_ID,
    TEAM_ID,
    USER_ID,
    USER_LIMIT_ID,
    fixed_response,
)

from warden.v1 import admin_pb2, admin_pb2_grpc, types_pb2, warden_pb2, warden_pb2_grpc

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
# initdb of the embedded Postgres takes several seconds on a small shared machine.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
CALL_TIMEOUT = 5.0
# Said in the output, so that nobody reads the figures as covering them.
NOT_IN_POLICY_SET = ("no token limit or budget here: bench/quotas.py measures those")
# Bounds a --requests run even if the server stalls.
MAX_MEASURE_SECONDS = 300.0
# A short multi-turn chat, so request size and token estimation are realistic (~1 KB).
MESSAGES = (
    ("system", "You are a support assistant for an online bookshop. Answer briefly and politely, "
               "cite the order number when there is one, and never reveal internal notes."),
    ("user", "Hi, I ordered two paperbacks last Tuesday (order 48213-B) and the tracking page "
             "has said 'label created' ever since. Can you tell me where the parcel is?"),
    ("assistant", "I'm sorry for the wait. Order 48213-B was handed to the carrier on Thursday; "
                  "the label status sometimes lags by a day or two. Shall I open a trace?"),
    ("user", "Yes please, and if it is lost can you resend it by express instead of a refund? "
             "It is a birthday present for Saturday, so the refund would not really help me."),
)


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


# --- processes -----------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out; held together so that they differ."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM and wait, so the server drains and stops its Postgres; SIGKILL on timeout."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except KeyboardInterrupt:  # a second Ctrl-C: no more patience, but no orphan either
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def running(cmd: list[str], log_path: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen]:
    with open(log_path, "wb") as log_file:
        # A session of its own: Ctrl-C reaches only the bench, which then stops it in order.
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop_leftover_postgres(pgdata: Path) -> None:
    """A Warden that had to be killed leaves its embedded Postgres running (pg_ctl detaches
    it); postmaster.pid names it. Fast shutdown, by that pid only."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new database on the external server for this run alone, dropped at the end."""
    name = f"warden_bench_{secrets.token_hex(5)}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on {url}: {exc}") from None
    try:
        yield with_database(url, name)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def wait_healthy(name: str, target: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}:\n"
                                 f"{log_tail(log_path)}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not healthy after {START_TIMEOUT:.0f} s:\n"
                                 f"{log_tail(log_path)}")
            await asyncio.sleep(0.2)


def warden_command(listen: str, data_dir: Path, database_url: str, metrics: str = "off",
                   *extra: str) -> list[str]:
    # --database-url is always passed: an empty one overrides any WARDEN_DATABASE_URL.
    cmd = [sys.executable, "-m", "warden", "serve", "--listen", listen, "--metrics-listen",
           metrics, "--data-dir", str(data_dir), "--database-url", database_url,
           "--shutdown-grace-seconds", "2", *extra]
    if database_url:
        cmd += ["--migrate", "true"]
    return cmd


def start_server(stack: contextlib.ExitStack, name: str, cmd: list[str], target: str,
                 log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server that the stack stops, and wait until it is SERVING."""
    proc = stack.enter_context(running(cmd, log_path, env))
    asyncio.run(wait_healthy(name, target, proc, log_path))
    return proc


def admin_metadata(admin_token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {admin_token}"),)


def scrape_metrics(host_port: str) -> str:
    with urllib.request.urlopen(f"http://{host_port}/metrics", timeout=CALL_TIMEOUT) as reply:
        return reply.read().decode()


def cache_hit_ratios(metrics: str) -> dict[str, float | None]:
    """Hits over lookups since start, per cache and for all of them ("all")."""
    counts: dict[str, list[float]] = {}
    for i, kind in enumerate(("hits", "misses")):
        pattern = rf'^warden_cache_{kind}_total{{cache="([^"]+)"}} (\S+)$'
        for cache, value in re.findall(pattern, metrics, re.MULTILINE):
            counts.setdefault(cache, [0.0, 0.0])[i] = float(value)
    counts["all"] = [sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())]
    return {cache: round(hits / (hits + misses), 4) if hits + misses else None
            for cache, (hits, misses) in sorted(counts.items())}


async def create_tenant(target: str, admin_token: str) -> str:
    """Org, team, app and user (both in the team), the key of that user for that app, and a
    policy at four scopes, so that every Authorize resolves an alias, checks model access,
    routes (with a fallback), applies a token cap and takes from two rate counters. The limits
    never deny: every call counts in Postgres and is allowed. Returns the key."""
    auth = admin_metadata(admin_token)

    def scope(kind: int, scope_id: str) -> types_pb2.Scope:
        return types_pb2.Scope(kind=kind, id=scope_id)

    def rate_limit(policy_id: str, kind: int, scope_id: str) -> types_pb2.Policy:
        return types_pb2.Policy(
            id=policy_id, name="never denies during a bench", scope=scope(kind, scope_id),
            rate_limit=types_pb2.RateLimitConfig(metric=types_pb2.METRIC_REQUESTS,
                                                 window=types_pb2.WINDOW_MINUTE,
                                                 limit=RATE_LIMIT))

    policies = [
        types_pb2.Policy(
            id=ACCESS_POLICY_ID, name="approved models", scope=scope(types_pb2.SCOPE_KIND_ORG,
                                                                     ORG_ID),
            model_access=types_pb2.ModelAccessConfig(
                allow_models=[MODEL, "gpt-4o", "claude-3-5-*"], deny_providers=["unvetted"],
                aliases={MODEL_ALIAS: MODEL, "smart": "gpt-4o"})),
        types_pb2.Policy(
            id=ROUTING_POLICY_ID, name="team routing", scope=scope(types_pb2.SCOPE_KIND_TEAM,
                                                                   TEAM_ID),
            routing=types_pb2.RoutingConfig(
                rules=[types_pb2.RouteRule(alias=MODEL, targets=[
                    types_pb2.RouteTarget(provider=PROVIDER, model=MODEL),
                    types_pb2.RouteTarget(provider=FALLBACK_PROVIDER, model=MODEL)])],
                max_tokens_cap=MAX_TOKENS_CAP)),
        rate_limit(APP_LIMIT_ID, types_pb2.SCOPE_KIND_APP, APP_ID),
        rate_limit(USER_LIMIT_ID, types_pb2.SCOPE_KIND_USER, USER_ID),
    ]
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.CreateOrg(admin_pb2.CreateOrgRequest(
            org=admin_pb2.Org(id=ORG_ID, display_name="Bench org")), metadata=auth)
        await admin.CreateTeam(admin_pb2.CreateTeamRequest(
            team=admin_pb2.Team(id=TEAM_ID, org_id=ORG_ID, display_name="Bench team")),
            metadata=auth)
        await admin.CreateApp(admin_pb2.CreateAppRequest(
            app=admin_pb2.App(id=APP_ID, org_id=ORG_ID, team_id=TEAM_ID,
                              display_name="Bench app")), metadata=auth)
        await admin.CreateUser(admin_pb2.CreateUserRequest(
            user=admin_pb2.User(id=USER_ID, org_id=ORG_ID, team_ids=[TEAM_ID],
                                display_name="Bench user")), metadata=auth)
        for policy in policies:
            await admin.CreatePolicy(admin_pb2.CreatePolicyRequest(policy=policy),
                                     metadata=auth)
        key = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
            app_id=APP_ID, user_id=USER_ID, display_name="bench"), metadata=auth)
    return key.plaintext


def answer_shape(reply: warden_pb2.AuthorizeResponse) -> tuple:
    """What must match between Warden's answer and the no-op's (not the times and counts)."""
    route = reply.route
    return (warden_pb2.Decision.Name(reply.decision),
            [(r.policy_id, r.policy_type, r.allowed, r.message) for r in reply.results],
            [(limit.policy_id, limit.limit) for limit in reply.limits],
            (route.provider, route.model, route.max_output_tokens,
             [(t.provider, t.model) for t in route.fallbacks]),
            (reply.identity.org_id, reply.identity.app_id, reply.identity.user_id))


async def check_like_noop(target: str, request: warden_pb2.AuthorizeRequest) -> None:
    """The ratio compares like with like only if Warden answers what the no-op answers."""
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await warden_pb2_grpc.WardenStub(channel).Authorize(request,
                                                                     timeout=CALL_TIMEOUT)
    if answer_shape(reply) != answer_shape(fixed_response()):
        raise BenchError(f"Warden's answer differs from the no-op's; update noop_server.py:\n"
                         f"warden: {answer_shape(reply)}\nnoop:   "
                         f"{answer_shape(fixed_response())}")


# --- load ----------------------------------------------------------------------------------

def request_factory(api_key: str) -> Callable[[int], warden_pb2.AuthorizeRequest]:
    # No provider and no user_id: the team's routing picks the provider, and the key belongs
    # to a user (naming another user would be refused).
    template = warden_pb2.AuthorizeRequest(
        api_key=api_key, model=MODEL_ALIAS, max_output_tokens=MAX_OUTPUT_TOKENS,
        messages=[warden_pb2.ChatMessage(role=r, content=c) for r, c in MESSAGES])
    # Request ids must be unique within the org, across both servers and every run.
    run_id = secrets.token_hex(6)

    def make(n: int) -> warden_pb2.AuthorizeRequest:
        request = warden_pb2.AuthorizeRequest()
        request.CopyFrom(template)
        request.request_id = f"bench-{run_id}-{n}"
        return request

    return make


@dataclass
class Load:
    """Shared by the workers of one server: when to stop and what was measured."""

    measure_start: float
    stop_at: float
    budget: int | None
    started: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    first_error: str = ""
    completed: int = 0
    last_end: float = 0.0
    response_bytes: int = 0

    def take(self) -> bool | None:
        """None: stop. Otherwise whether the next call counts (False during warm-up)."""
        now = time.perf_counter()
        if now >= self.stop_at:
            return None
        if now < self.measure_start:
            return False
        if self.budget is not None and self.started >= self.budget:
            return None
        self.started += 1
        return True


async def worker(stub: warden_pb2_grpc.WardenStub, make_request, load: Load, offset: int,
                 step: int) -> None:
    n = offset
    while (measured := load.take()) is not None:
        request = make_request(n)
        n += step
        start = time.perf_counter()
        try:
            reply = await stub.Authorize(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if measured:
                load.errors[exc.code().name] += 1
                load.first_error = load.first_error or f"{exc.code().name}: {exc.details()}"
                load.last_end = time.perf_counter()
            continue
        end = time.perf_counter()
        load.response_bytes = load.response_bytes or reply.ByteSize()
        # Throughput counts completions inside the window, whenever the call started; a slow
        # call straddling the end would otherwise stretch the window.
        load.completed += load.measure_start <= end <= load.stop_at
        if measured:
            load.latencies.append(end - start)
            load.last_end = end


def percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest rank; None without a single successful call."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)


async def measure(target: str, make_request, args: argparse.Namespace) -> dict:
    # Without a local subchannel pool, channels to one target share a single connection.
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.channels)]
    try:
        stubs = [warden_pb2_grpc.WardenStub(c) for c in channels]
        now, cpu = time.perf_counter(), time.process_time()
        measure_start = now + args.warmup
        seconds = MAX_MEASURE_SECONDS if args.requests else args.duration
        load = Load(measure_start, measure_start + seconds, args.requests or None)
        await asyncio.gather(*(worker(stubs[i % len(stubs)], make_request, load, i,
                                      args.concurrency) for i in range(args.concurrency)))
        # Near 100% of one core means the generator, not the server, set the pace.
        client_cpu = (time.process_time() - cpu) / (time.perf_counter() - now)
    finally:
        for channel in channels:
            await channel.close()
    ok = sorted(load.latencies)
    if args.requests:
        done, elapsed = len(ok), max(load.last_end - measure_start, 1e-9)
    else:
        done, elapsed = load.completed, args.duration
    return {"requests": len(ok) + sum(load.errors.values()), "errors": sum(load.errors.values()),
            "error_codes": dict(load.errors), "first_error": load.first_error,
            "seconds": round(elapsed, 3), "throughput_rps": round(done / elapsed, 1),
            "p50_ms": percentile_ms(ok, 0.50), "p99_ms": percentile_ms(ok, 0.99),
            "max_ms": percentile_ms(ok, 1.0),
            "response_bytes": load.response_bytes, "client_cpu_pct": round(client_cpu * 100)}


# --- run and report ------------------------------------------------------------------------

def secrets_env() -> tuple[str, dict[str, str]]:
    """A new admin token, and the environment that gives it and a new key pepper to every
    sidecar a bench starts (sidecars of one database must share the pepper)."""
    admin_token = secrets.token_urlsafe(24)
    return admin_token, {**os.environ, "WARDEN_ADMIN_TOKEN": admin_token,
                         "WARDEN_KEY_PEPPER": secrets.token_urlsafe(24)}


def run(args: argparse.Namespace, context: dict) -> dict:
    noop_port, warden_port, metrics_port = free_ports(3)
    noop_target, warden_target = f"{HOST}:{noop_port}", f"{HOST}:{warden_port}"
    metrics_target = f"{HOST}:{metrics_port}"
    admin_token, env = secrets_env()
    with (tempfile.TemporaryDirectory(prefix="warden-bench-", ignore_cleanup_errors=True) as tmp,
          contextlib.ExitStack() as stack):
        tmp_path = Path(tmp)
        data_dir = tmp_path / "warden"
        database_url = ""
        if args.database_url:
            database_url = stack.enter_context(fresh_database(args.database_url))
            context["database"] = urlsplit(database_url).path.lstrip("/")
        else:
            stack.callback(stop_leftover_postgres, data_dir / "pg")
        print(f"starting warden ({context['database_mode']} Postgres) ...", file=sys.stderr)
        start_server(stack, "warden", warden_command(warden_target, data_dir, database_url,
                                                     metrics_target),
                     warden_target, tmp_path / "warden.log", env)
        try:
            api_key = asyncio.run(create_tenant(warden_target, admin_token))
        except grpc.aio.AioRpcError as exc:
            raise BenchError(f"cannot create the tenant: {exc.code().name}: {exc.details()}"
                             ) from None
        make_request = request_factory(api_key)
        check = make_request(0)
        check.request_id += "-check"
        asyncio.run(check_like_noop(warden_target, check))

        start_server(stack, "noop server",
                     [sys.executable, str(HERE / "noop_server.py"), "--listen", noop_target],
                     noop_target, tmp_path / "noop.log")

        results = {}
        for name, target in (("noop", noop_target), ("warden", warden_target)):
            print(f"measuring {name} ...", file=sys.stderr)
            results[name] = asyncio.run(measure(target, make_request, args))
        results["warden"]["cache_hit_ratio"] = cache_hit_ratios(scrape_metrics(metrics_target))
        return results


def ratios(noop: dict, warden: dict) -> dict:
    def ratio(key: str) -> float | None:
        if not noop[key] or warden[key] is None:
            return None
        return round(warden[key] / noop[key], 3)

    return {"throughput": ratio("throughput_rps"), "p50": ratio("p50_ms"), "p99": ratio("p99_ms")}


def report(context: dict, results: dict) -> None:
    def ms(value: float | None) -> str:
        return f"{'n/a' if value is None else f'{value:.2f}':>9}"

    def times(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    print("  ".join(f"{k}={v}" for k, v in context.items()))
    print(f"policy set: org model_access (allow list, alias {MODEL_ALIAS!r} -> {MODEL}), team "
          f"routing ({MODEL} -> {PROVIDER}, fallback {FALLBACK_PROVIDER}; max_tokens_cap "
          f"{MAX_TOKENS_CAP}), app and user request rate limits ({RATE_LIMIT:,}/minute); "
          f"{NOT_IN_POLICY_SET}")
    print(f"{'server':<8}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'resp B':>8}{'client CPU':>12}")
    for name in ("noop", "warden"):
        r = results[name]
        print(f"{name:<8}{r['requests']:>10}{r['errors']:>8}{r['throughput_rps']:>10.1f}"
              f"{ms(r['p50_ms'])}{ms(r['p99_ms'])}{r['response_bytes']:>8}"
              f"{r['client_cpu_pct']:>11}%")
        if r["errors"]:
            print(f"  {name} errors {r['error_codes']}, first: {r['first_error']}")
    q = results["ratios"]
    print(f"warden/noop: throughput {times(q['throughput'])}, p50 {times(q['p50'])}, "
          f"p99 {times(q['p99'])}")
    hits = results["warden"]["cache_hit_ratio"]
    print("warden cache hit ratio since start: " + ", ".join(
        f"{cache} {'n/a' if r is None else f'{r:.2%}'}" for cache, r in hits.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--channels", type=int, default=1,
                        help="gRPC channels (TCP connections) the calls are spread over")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--requests", type=int, default=0,
                        help=f"measure this many calls instead of --duration "
                             f"(at most {MAX_MEASURE_SECONDS:.0f} s)")
    parser.add_argument("--database-url", default="",
                        help="external Postgres server (a fresh database is created and dropped);"
                             " default: Warden's embedded Postgres")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.concurrency, args.channels) < 1 or args.warmup < 0 or args.requests < 0:
        parser.error("--concurrency and --channels must be >= 1; --warmup, --requests >= 0")
    if not args.requests and not 0 < args.duration <= MAX_MEASURE_SECONDS:
        parser.error(f"--duration must be in (0, {MAX_MEASURE_SECONDS:.0f}]")
    return args


def _on_sigterm(signum, frame) -> None:
    # As SIGINT: inside asyncio.run that cancels the main task cleanly, whereas an exception
    # raised here could land in a gRPC callback and be swallowed, leaving the bench hung.
    signal.raise_signal(signal.SIGINT)


def machine() -> dict:
    """What every bench prints about where it ran."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "grpcio": grpc.__version__, "platform": platform.platform(terse=True)}


def unwind_on_signals() -> None:
    """Ctrl-C and SIGTERM unwind, so the servers and the database are still cleaned up; also
    when started with SIGINT ignored (a background job of a script)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)


def main() -> None:
    args = parse_args()
    unwind_on_signals()
    context = {
        **machine(),
        "database_mode": "external" if args.database_url else "embedded",
        "concurrency": args.concurrency, "channels": args.channels, "warmup_s": args.warmup,
        **({"requests": args.requests} if args.requests else {"duration_s": args.duration}),
    }
    try:
        results = run(args, context)
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; servers stopped")
    results["ratios"] = ratios(results["noop"], results["warden"])
    report(context, results)
    if args.json:
        args.json.write_text(json.dumps({"context": context, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
