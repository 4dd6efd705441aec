"""The processes and databases a bench runs on, and what it reads from them: starting and
stopping servers, a private Postgres or a fresh database on an external one, Warden's
/metrics, and CPU times from /proc. bench/harness.py builds a run out of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# initdb of an embedded Postgres takes several seconds on a small shared machine.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
CALL_TIMEOUT = 5.0


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


def say(message: str) -> None:
    """Progress, on stderr: stdout is the report."""
    print(message, file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------

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


@dataclass
class Server:
    """A process the bench started; `stop()` may come early, the bench's end calls it again."""

    name: str
    proc: subprocess.Popen
    target: str  # HOST:PORT of its gRPC or HTTP listener
    log: Path
    metrics: str = ""  # HOST:PORT of its /metrics, if any

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        """SIGTERM and wait, so that a sidecar drains, gives its leases back and flushes its
        journal; SIGKILL after STOP_TIMEOUT. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: no more patience, but no orphan either
            self.proc.kill()
            self.proc.wait()
            raise

    def scrape(self) -> str:
        if not self.metrics:
            raise BenchError(f"{self.name} has no metrics listener")
        return scrape(self.metrics)


async def wait_healthy(server: Server) -> None:
    """Until the gRPC health service says SERVING; a process that exits or stays unhealthy
    for START_TIMEOUT ends the bench with the tail of its log."""
    deadline = time.monotonic() + START_TIMEOUT
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} exited with status {server.proc.returncode}:"
                                 f"\n{log_tail(server.log)}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name} not healthy after {START_TIMEOUT:.0f} s:\n"
                                 f"{log_tail(server.log)}")
            await asyncio.sleep(0.2)


async def wait_listening(server: Server) -> None:
    """Until the process accepts TCP connections (for servers without gRPC health)."""
    host, port = server.target.rsplit(":", 1)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with status {server.proc.returncode}:\n"
                             f"{log_tail(server.log)}")
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name} not listening after {START_TIMEOUT:.0f} s"
                                 ) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


# --- databases -------------------------------------------------------------------------------

def stop_leftover_postgres(pgdata: Path) -> None:
    """pgserver's Postgres is detached from the bench (pg_ctl); if the bench could not stop it
    the usual way, postmaster.pid still names it. Fast shutdown, by that pid only."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@contextlib.contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """A private Postgres (the `pgserver` package Warden embeds) started by the bench, so that
    every sidecar is an equal client of it as in a deployment; stopped at the end."""
    import pgserver

    with contextlib.ExitStack() as stack:
        stack.callback(stop_leftover_postgres, pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        stack.callback(server.cleanup)
        yield server.get_uri()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def execute(url: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    return (await fetch(url, sql, *args))[0][0]


@contextlib.contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new database on the server at `url` for this run alone, dropped at the end."""
    name = f"warden_bench_{secrets.token_hex(5)}"
    try:
        asyncio.run(execute(url, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on {url}: {exc} (--database-url embedded "
                         "starts a private Postgres)") from None
    try:
        yield with_database(url, name)
    finally:
        asyncio.run(execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(database_url: str) -> None:
    """Warden's migrations, by its command line (`warden migrate`)."""
    done = subprocess.run([sys.executable, "-m", "warden", "migrate", "--database-url",
                           database_url], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise BenchError(f"warden migrate failed: {done.stderr.strip()[-2000:]}")


# --- metrics and /proc -----------------------------------------------------------------------

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$", re.MULTILINE)


def scrape(host_port: str) -> str:
    with urllib.request.urlopen(f"http://{host_port}/metrics", timeout=CALL_TIMEOUT) as reply:
        return reply.read().decode()


def metric_sums(text: str, name: str, label: str = "") -> Counter:
    """A metric's samples summed by one label's value ("" without one)."""
    sums: Counter = Counter()
    for sample, labels, value in _SAMPLE.findall(text):
        if sample == name:
            sums[dict(re.findall(r'(\w+)="([^"]*)"', labels)).get(label, "")] += float(value)
    return sums


def metric_total(texts: str | Sequence[str], name: str) -> float:
    """A metric summed over all its labels and over several sidecars' texts."""
    return sum(sum(metric_sums(t, name).values())
               for t in ([texts] if isinstance(texts, str) else texts))


def cache_hit_ratios(text: str) -> dict[str, float | None]:
    """Hits over lookups since start, per cache and for all of them ("all")."""
    hits, misses = (metric_sums(text, f"warden_cache_{k}_total", "cache")
                    for k in ("hits", "misses"))
    caches = sorted(set(hits) | set(misses))
    hits["all"], misses["all"] = sum(hits.values()), sum(misses.values())
    return {c: round(hits[c] / (hits[c] + misses[c]), 4) if hits[c] + misses[c] else None
            for c in [*caches, "all"]}


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of these processes (all threads) so far; 0 for one that is gone."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds every process of the machine spent so far (/proc/stat: all but idle and
    iowait): with the bench's own processes taken off, the noise behind a run's figures."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def database_server(url: str, tmp: Path) -> Iterator[str]:
    """The server the run creates its databases on: the one given, or `embedded`: a private
    Postgres the bench starts and stops."""
    if url != "embedded":
        yield url
        return
    say("starting embedded Postgres ...")
    with embedded_postgres(tmp / "pg") as embedded_url:
        yield embedded_url
