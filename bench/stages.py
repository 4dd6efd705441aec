"""Where a sidecar's CPU per Authorize goes, stage by stage, from a py-spy profile under load.

    python bench/stages.py [--seconds 15] [--warmup 3] [--concurrency 32] [--rate 250]
                           [--database-url URL | embedded] [--json PATH]
    python bench/stages.py --pid PID --seconds 15 [--metrics HOST:PORT]

Starts one `warden serve` with the tenant of bench/tenant.py, drives Authorize at
--concurrency, and after --warmup records the sidecar for --seconds with
`py-spy record --format raw --threads --nonblocking -r RATE` (py-spy must be installed, and
allowed to attach: root, or ptrace permitted). With --pid it records a sidecar that is already
running instead, under whatever load it has; --metrics names its /metrics, for the calls per
second (warden_decisions_total) and so the CPU per call.

Each sample is a stack of one thread. A sample whose innermost frame is in IDLE is dropped (a
thread waiting). A sample of a thread other than the main one (the event loop's) counts as
"other threads". A sample of the main thread goes to the stage of its innermost frame that
matches STAGES, or else to "gRPC and asyncio": the event loop, grpc's aio layer and
everything else on that thread. With the calls per second and the sidecar's CPU per call
measured meanwhile (from /proc), a stage's share of the samples becomes µs of CPU per call.
py-spy's sampling slows the sidecar down a little, and --nonblocking reads stacks without
stopping it, so a few stacks are torn (their outer frames missing): they are classified by
what they hold, like the others.
"""

from __future__ import annotations

import asyncio
import fnmatch
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import harness
import tenant
from harness import Bench, num, table
from load import drive, problems_of
from servers import BenchError, cpu_seconds, metric_total, say, scrape

# (stage, patterns): a frame is "path:qualified name" as py-spy prints it, e.g.
# "warden/api/validate.py:Violations.check"; patterns are fnmatch globs. The innermost frame
# of a sample that matches a pattern decides its stage; the first stage listed wins when
# several patterns match one frame. Names follow server/ code (and, for a run against an
# earlier version, the names it had): edit them when the code moves.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("validate", (
        "warden/api/validate.py:*", "*:_check_credentials", "*:_check_authorize",
        "*:_subject", "warden/api/decoding.py:*")),
    ("identity", (
        "*:WardenService._caller", "*:WardenService._key", "*:WardenService._identity",
        "warden/callers.py:*", "warden/keys.py:*", "*:Cache.api_key", "*:Cache.app",
        "*:Cache.user_teams", "*:Identity.scopes")),
    ("compiled-set lookup and plan", (
        "*:Cache.compiled", "warden/engine/compiled.py:*", "*:Cache.policies",
        "*:Cache.prices", "*:Cache.provider_switches",
        "warden/engine/decide.py:plan", "warden/engine/decide.py:plan.*",
        "warden/engine/decide.py:_resolve_alias", "warden/engine/decide.py:_route_targets",
        "warden/engine/decide.py:_token_cap", "warden/engine/decide.py:_access_checks",
        "warden/engine/decide.py:_quota_checks*", "warden/engine/decide.py:_demand",
        "warden/engine/decide.py:_dry_runs", "*:audit_setting", "*:authorize_input",
        "*:find_price", "*:WardenService._worst_cost")),
    ("fit and leases", (
        "warden/quota.py:*", "warden/engine/decide.py:fit", "warden/engine/decide.py:fit.*",
        "warden/engine/decide.py:decide", "warden/engine/decide.py:_quota_message",
        "warden/engine/model.py:Demand.*")),
    ("journal record", (
        "*:Ledger.record", "*:Ledger.claim", "*:Ledger.release", "warden/journal.py:*",
        "warden/reservations.py:*", "warden/records.py:*")),
    ("answer and explanation", (
        "*:decision_to_proto", "*:_policy_result", "*:_limit_status", "*:_duration",
        "warden/api/convert.py:timestamp", "*:WardenService._explanation",
        "warden/api/answer.py:*", "*:Authorizer._explanation", "warden/engine/audit.py:*")),
    ("metrics", ("prometheus_client/*",)),
    ("handler's own lines", ("*:WardenService.Authorize", "*:rpc.<locals>.wrapped",
                             "*:Authorizer.authorize", "*:Authorizer._count")),
)
REST_OF_LOOP = "gRPC and asyncio"
OTHER_THREADS = "other threads"
# A sample whose innermost frame is one of these is a thread waiting, not working.
IDLE = ("selectors.py:*.select", "threading.py:*.wait", "threading.py:Lock.acquire",
        "queue.py:*.get", "concurrent/futures/thread.py:_worker")
MAIN_THREAD = "MainThread"


def frame_key(frame: str) -> str:
    """'Violations.check (warden/api/validate.py:27)' -> 'warden/api/validate.py:
    Violations.check'."""
    name, _, where = frame.rpartition(" (")
    return f"{where.rsplit(':', 1)[0]}:{name}" if name else frame


def stage_of(thread: str, frames: list[str]) -> str | None:
    """The stage of one sample (frames outermost first), or None when it is idle."""
    keys = [frame_key(f) for f in frames]
    if keys and any(fnmatch.fnmatchcase(keys[-1], p) for p in IDLE):
        return None
    if not thread.startswith(MAIN_THREAD):
        return OTHER_THREADS
    for key in reversed(keys):
        for stage, patterns in STAGES:
            if any(fnmatch.fnmatchcase(key, p) for p in patterns):
                return stage
    return REST_OF_LOOP


def classify(raw: str) -> tuple[Counter, Counter]:
    """Samples per stage, and the other threads' samples per thread name, from py-spy's raw
    output: 'thread (TID): NAME;frame;frame;... COUNT' per line."""
    stages, threads = Counter(), Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        name = thread.split("): ", 1)[-1]
        stage = stage_of(name, frames)
        if stage is None:
            continue
        stages[stage] += int(count)
        if stage == OTHER_THREADS:
            threads[name] += int(count)
    return stages, threads


def py_spy_command(pid: int, seconds: float, rate: int, out: Path) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [spy, "record", "--format", "raw", "--threads", "--nonblocking", "-r", str(rate),
            "-d", str(max(1, round(seconds))), "-o", str(out), "-p", str(pid)]


def spied(done: tuple[int, str], out: Path) -> str:
    """The profile py-spy wrote, given its exit status and output."""
    code, log = done
    if code or not out.exists():
        raise BenchError(f"py-spy failed ({code}): {log.strip()[-1500:]}")
    return out.read_text()


def work_running(bench: Bench) -> dict:
    """--pid: a sidecar someone else runs, under its own load."""
    args = bench.args
    out = bench.tmp / "profile.txt"
    decisions = (lambda: metric_total(scrape(args.metrics), "warden_decisions_total")) \
        if args.metrics else (lambda: 0.0)
    before, cpu, started = decisions(), cpu_seconds([args.pid]), time.perf_counter()
    say(f"recording pid {args.pid} for {args.seconds:g} s ...")
    done = subprocess.run(py_spy_command(args.pid, args.seconds, args.rate, out),
                          capture_output=True, text=True)
    span = time.perf_counter() - started
    calls, cpu = decisions() - before, cpu_seconds([args.pid]) - cpu
    stages, threads = classify(spied((done.returncode, done.stdout + done.stderr), out))
    return {"stages": dict(stages), "threads": dict(threads),
            "ops_per_s": round(calls / span, 1) if args.metrics else None,
            "server_cpu_ms": round(cpu * 1000 / calls, 3) if calls else None,
            "server_cpu_pct": round(cpu / span * 100)}


def work_started(bench: Bench) -> dict:
    args = bench.args
    database_url = bench.database()
    say("starting warden ...")
    warden = bench.warden(database_url)
    key = asyncio.run(tenant.create(warden.target, bench.auth))
    out = bench.tmp / "profile.txt"

    async def profiled() -> tuple[dict, tuple[int, str]]:
        async def spy() -> tuple[int, str]:
            await asyncio.sleep(args.warmup)
            proc = await asyncio.create_subprocess_exec(
                *py_spy_command(warden.pid, args.seconds, args.rate, out),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            log, _ = await proc.communicate()
            return proc.returncode or 0, log.decode(errors="replace")

        say(f"{args.warmup:g} s of warm-up, then {args.seconds:g} s recorded ...")
        return await asyncio.gather(
            drive([warden.target], tenant.authorize_call(key), args.concurrency, args.warmup,
                  args.seconds, [warden.pid]), spy())

    load, done = asyncio.run(profiled())
    stages, threads = classify(spied(done, out))
    for p in problems_of("Authorize", load):
        bench.problem(p)
    return {"stages": dict(stages), "threads": dict(threads), "load": load,
            "ops_per_s": load["ops_per_s"], "server_cpu_ms": load["server_cpu_ms"],
            "server_cpu_pct": load["server_cpu_pct"]}


def report(context: dict, results: dict) -> None:
    stages = results["stages"]
    total = sum(stages.values())
    per_call = results["server_cpu_ms"]
    order = [s for s, _ in STAGES] + [REST_OF_LOOP, OTHER_THREADS]
    rows = [[name, stages.get(name, 0), f"{stages.get(name, 0) / max(total, 1):.1%}",
             num(per_call * 1000 * stages.get(name, 0) / total, 1)
             if per_call is not None and total else "n/a"] for name in order]
    rows.append(["**all**", total, "100%", num(per_call * 1000, 1) if per_call else "n/a"])
    print(table(["stage", "samples:", "share:", "µs/call:"], rows,
                f"**Sidecar CPU per Authorize by stage**: {num(results['ops_per_s'], 1)} "
                f"Authorize/s while recorded, sidecar at {results['server_cpu_pct']}% of a "
                f"core, {num(per_call, 3)} ms of CPU per call; idle samples dropped"))
    if results["threads"]:
        print("\nOther threads: " + ", ".join(f"{name} {n}" for name, n
                                             in Counter(results["threads"]).most_common()))


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--seconds", type=float, default=15.0, help="seconds recorded")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds of load before recording (own sidecar only)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--pid", type=int, help="record this running sidecar instead of starting one")
    p.add_argument("--metrics", default="", metavar="HOST:PORT",
                   help="with --pid: the sidecar's /metrics, for calls per second")
    args = p.parse_args()
    harness.positive(p, args, "concurrency", "rate", "seconds")
    if args.metrics and not args.pid:
        p.error("--metrics goes with --pid")
    if args.pid:
        del args.database_url  # nothing to create
    harness.main(p, work_running if args.pid else work_started, report, lambda a: {
        "seconds_s": a.seconds, "rate": a.rate,
        **({"pid": a.pid} if a.pid else {"concurrency": a.concurrency,
                                          "warmup_s": a.warmup})}, args)


if __name__ == "__main__":
    main()
