"""What every bench shares: the servers it starts, the database it runs on, the command line,
the machine context, the output, and clean-up on exit, Ctrl-C or SIGTERM.

A bench builds its run inside `main()`: it is handed a `Bench`, from which it starts warden
sidecars (`warden serve` on a fresh database, with metrics), the no-op baseline
(bench/noop_server.py) or the fake LLM (bench/fake_llm.py), and creates databases. Everything
started is stopped, and every database dropped, when the run ends however it ends. The load
driver, rounds and percentiles are in bench/load.py; the tenant most benches use in
bench/tenant.py.

What a bench may rely on in Warden: the gRPC API (warden.v1), the `warden serve` and
`warden migrate` command lines, /metrics, and the database tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from servers import (
    DEFAULT_DATABASE_URL,
    HERE,
    HOST,
    BenchError,
    Server,
    database_server,
    fetchval,
    free_ports,
    fresh_database,
    loadavg,
    wait_healthy,
    wait_listening,
)

# --- the run ---------------------------------------------------------------------------------

@dataclass
class Bench:
    """One run's resources. Whatever it starts or creates is undone, in reverse order, when
    the run ends."""

    args: argparse.Namespace
    stack: contextlib.ExitStack
    tmp: Path
    base_url: str  # the server fresh databases are created on
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    problems: list[str] = field(default_factory=list)
    _names: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        # Sidecars of one database must share the key pepper; other WARDEN_* variables in the
        # bench's environment reach them too (settings the bench passes no flag for).
        self.env = {**os.environ, "WARDEN_ADMIN_TOKEN": self.admin_token,
                    "WARDEN_KEY_PEPPER": secrets.token_urlsafe(24)}

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        """Metadata of an Admin call."""
        return (("authorization", f"Bearer {self.admin_token}"),)

    def problem(self, message: str) -> None:
        """Something the bench checks went wrong: reported, and the bench exits 1."""
        self.problems.append(message)

    def database(self) -> str:
        """A fresh database, dropped at the end (after every server started later stopped)."""
        return self.stack.enter_context(fresh_database(self.base_url))

    def _unique(self, name: str) -> str:
        self._names[name] += 1
        return name if self._names[name] == 1 else f"{name}-{self._names[name]}"

    def start(self, name: str, cmd: list[str], target: str, metrics: str = "",
              env: dict[str, str] | None = None) -> Server:
        """A process that the end of the run stops; not yet waited for."""
        name = self._unique(name)
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as log_file:
            # A session of its own: Ctrl-C reaches only the bench, which then stops it in order.
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        server = Server(name, proc, target, log, metrics)
        self.stack.callback(server.stop)
        return server

    def _warden(self, database_url: str, extra: Sequence[str], name: str) -> Server:
        listen, metrics = (f"{HOST}:{p}" for p in free_ports(2))
        name = self._unique(name)
        cmd = [sys.executable, "-m", "warden", "serve", "--listen", listen,
               "--metrics-listen", metrics, "--data-dir", str(self.tmp / name),
               "--database-url", database_url, "--migrate", "true",
               "--shutdown-grace-seconds", "2", *extra]
        return self.start(name, cmd, listen, metrics, self.env)

    def warden(self, database_url: str, *extra: str, name: str = "warden") -> Server:
        """A `warden serve` on `database_url` (migrated at start), SERVING."""
        server = self._warden(database_url, extra, name)
        asyncio.run(wait_healthy(server))
        return server

    def wardens(self, count: int, database_url: str, *extra: str) -> list[Server]:
        """`count` sidecars on one database: the first applies the migrations and records the
        key pepper, then the others start together."""
        first = self.warden(database_url, *extra, name="sidecar")
        rest = [self._warden(database_url, extra, "sidecar") for _ in range(count - 1)]

        async def healthy() -> None:
            await asyncio.gather(*(wait_healthy(s) for s in rest))

        asyncio.run(healthy())
        return [first, *rest]

    def noop(self, replay: dict[str, bytes] | None = None) -> Server:
        """bench/noop_server.py, SERVING; with `replay`, answering each method named there with
        those bytes (captured from Warden)."""
        (port,) = free_ports(1)
        target = f"{HOST}:{port}"
        cmd = [sys.executable, str(HERE / "noop_server.py"), "--listen", target]
        if replay:
            directory = self.tmp / f"replay-{secrets.token_hex(3)}"
            directory.mkdir()
            for method, answer in replay.items():
                (directory / f"{method}.bin").write_bytes(answer)
            cmd += ["--replay", str(directory)]
        server = self.start("noop", cmd, target)
        asyncio.run(wait_healthy(server))
        return server

    def fake_llm(self, delay_ms: float, *extra: str) -> Server:
        """bench/fake_llm.py answering after `delay_ms`, listening."""
        (port,) = free_ports(1)
        target = f"{HOST}:{port}"
        server = self.start("fake-llm", [sys.executable, str(HERE / "fake_llm.py"), "--listen",
                                         target, "--delay-ms", str(delay_ms), *extra], target)
        asyncio.run(wait_listening(server))
        return server


def check_stored(bench: Bench, database_url: str, expected: dict[str, tuple[str, int]],
                 wait: float = 15.0) -> dict[str, int]:
    """Poll the database until each query (name -> (SQL of one count, the count wanted))
    returns its count, or `wait` seconds (the journals flush every second); each count still
    off is a problem. Returns the counts found."""
    async def counts() -> dict[str, int]:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            deadline = time.monotonic() + wait
            while True:
                got = {name: await conn.fetchval(sql) for name, (sql, _) in expected.items()}
                if all(got[n] == want for n, (_, want) in expected.items()) or \
                        time.monotonic() > deadline:
                    return got
                await asyncio.sleep(0.25)
        finally:
            await conn.close()

    got = asyncio.run(counts())
    for name, (_, want) in expected.items():
        if got[name] != want:
            bench.problem(f"the database holds {got[name]} {name}; Warden acknowledged {want}")
    return got


# --- command line, context, output -----------------------------------------------------------

def parser(doc: str | None, database: bool = True) -> argparse.ArgumentParser:
    """The bench's argument parser, with --json and (unless told otherwise) --database-url."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if database:
        p.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                       help="Postgres server on which the bench creates (and drops) a fresh "
                            "database per run; 'embedded' starts a private one "
                            f"(default {DEFAULT_DATABASE_URL})")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write context, figures and problems here")
    return p


def positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str,
             at_least: float = 1) -> None:
    """parser.error unless each named argument is >= at_least."""
    for name in names:
        if getattr(args, name) < at_least:
            p.error(f"--{name.replace('_', '-')} must be at least {at_least:g}")


def git_commit() -> str:
    """The commit the bench runs from, '+' when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", ".."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def context(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Where and how the bench ran, printed first and kept in --json."""
    database = getattr(args, "database_url", None)
    ctx: dict[str, Any] = {
        "utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "commit": git_commit(),
        "cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
        "grpcio": grpc.__version__, "platform": platform.platform(terse=True),
        "loadavg": loadavg()}
    if database is not None:
        ctx["database"] = "embedded" if database == "embedded" else "external"
    warden_env = ",".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                          if k.startswith("WARDEN_"))
    if warden_env:
        ctx["warden_env"] = warden_env
    return {**ctx, **extra}


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(base: float | None, value: float | None) -> str:
    """value / base as '0.42x'."""
    return "n/a" if not base or value is None else f"{value / base:.2f}x"


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """'low-high' of a series of rounds."""
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    low, high = min(present), max(present)
    return num(low, digits) if low == high else f"{num(low, digits)}-{num(high, digits)}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A markdown table; a header ending in ':' marks a right-aligned (numeric) column."""
    names = [h.rstrip(":") for h in headers]
    align = ["---:" if h.endswith(":") else "---" for h in headers]
    lines = [f"\n{title}\n" if title else "", "| " + " | ".join(names) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


def postgres_version(url: str) -> str:
    try:
        return asyncio.run(fetchval(url, "SHOW server_version")).split()[0]
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot reach Postgres at {url}: {exc} (--database-url embedded "
                         "starts a private one)") from None


def _on_sigterm(signum: int, frame: Any) -> None:
    # As SIGINT: inside asyncio.run that cancels the main task cleanly, whereas an exception
    # raised here could land in a gRPC callback and be swallowed, leaving the bench hung.
    signal.raise_signal(signal.SIGINT)


def unwind_on_signals() -> None:
    """Ctrl-C and SIGTERM unwind, so that servers are stopped and databases dropped; also
    when started with SIGINT ignored (a background job of a script)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)


def main(p: argparse.ArgumentParser, work: Callable[[Bench], dict],
         report: Callable[[dict, dict], None], extra: Callable[[argparse.Namespace], dict]
         | None = None, args: argparse.Namespace | None = None) -> None:
    """Run a bench: parse, work(bench) inside a run that cleans up after itself, then print
    the context and report(context, results), write --json, and exit 1 on any problem."""
    args = args or p.parse_args()
    unwind_on_signals()
    ctx = context(args, **(extra(args) if extra else {}))
    try:
        with (tempfile.TemporaryDirectory(prefix="warden-bench-",
                                          ignore_cleanup_errors=True) as tmp,
              contextlib.ExitStack() as stack):
            url = getattr(args, "database_url", None)
            base_url = stack.enter_context(database_server(url, Path(tmp))) if url else ""
            if base_url:
                ctx["postgres"] = postgres_version(base_url)
            bench = Bench(args, stack, Path(tmp), base_url)
            results = work(bench)
    except BenchError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; servers stopped")
    ctx["loadavg_end"] = loadavg()
    print("  ".join(f"{k}={v}" for k, v in ctx.items()))
    report(ctx, results)
    if args.json:
        args.json.write_text(json.dumps({"context": ctx, **results,
                                         "problems": bench.problems}, indent=2,
                                        default=str) + "\n")
    if bench.problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in bench.problems))
        sys.exit(1)
