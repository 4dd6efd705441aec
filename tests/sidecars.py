"""Real sidecar processes for integration tests: `python -m warden serve` on its own Unix
socket, data directory (so its own journal) and log file, started until SERVING and never
outliving the test (the `fleet` fixture in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ADMIN_TOKEN, KEY_PEPPER, Client

# Process start-up (imports, pool, schema check) with several sidecars on a loaded 2-core box.
START_SECONDS = 60.0
STOP_SECONDS = 20.0


def sample(body: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent: counters start unexported)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(name + (f"{{{wanted}}}" if wanted else "")) + r" (\S+)$"
    match = re.search(pattern, body, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@dataclass
class Sidecar:
    name: str
    proc: asyncio.subprocess.Process
    target: str
    log_path: Path
    client: Client | None = None
    metrics_port: int = 0
    channel: grpc.aio.Channel | None = field(default=None, repr=False)

    @property
    def warden(self):
        assert self.client is not None
        return self.client.warden

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metrics(self) -> str:
        """The sidecar's /metrics text (it needs WARDEN_METRICS_LISTEN=127.0.0.1:0)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode()

    async def scrape(self) -> str:
        return await asyncio.to_thread(self.metrics)

    def metric(self, name: str, **labels: str) -> float:
        return sample(self.metrics(), name, **labels)


class Fleet:
    """Starts sidecars and makes sure none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self._all: list[Sidecar] = []

    async def start(self, name: str, db_url: str, data_dir: Path | None = None,
                    **env_overrides: str) -> Sidecar:
        data_dir = data_dir or self._tmp / name
        data_dir.mkdir(exist_ok=True)
        target = f"unix:{self._tmp}/{name}.sock"
        env = {**os.environ, "WARDEN_DATABASE_URL": db_url, "WARDEN_MIGRATE": "false",
               "WARDEN_LISTEN": target, "WARDEN_METRICS_LISTEN": "off",
               "WARDEN_DATA_DIR": str(data_dir), "WARDEN_ADMIN_TOKEN": ADMIN_TOKEN,
               "WARDEN_KEY_PEPPER": KEY_PEPPER, "WARDEN_SHUTDOWN_GRACE_SECONDS": "5",
               # Decisions need no connection (leases and the journal flush do, in batches);
               # a small pool keeps four sidecars well inside a shared server's
               # max_connections, which would otherwise fail cold lookups.
               "WARDEN_DB_POOL_MAX": "4", "WARDEN_JOURNAL_FLUSH_SECONDS": "0.25",
               # As in conftest: a slow lease on a loaded machine is not an outage.
               "WARDEN_LEASE_TIMEOUT_SECONDS": "30",
               **env_overrides}
        log_path = self._tmp / f"{name}.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "warden", "serve", env=env, stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT)
        finally:
            os.close(log_fd)
        sidecar = Sidecar(name, proc, target, log_path)
        self._all.append(sidecar)
        await self._until_serving(sidecar)
        return sidecar

    async def start_many(self, count: int, db_url: str, **env: str) -> list[Sidecar]:
        return list(await asyncio.gather(*(self.start(f"w{i}", db_url, **env)
                                           for i in range(count))))

    async def _until_serving(self, sidecar: Sidecar) -> None:
        sidecar.channel = grpc.aio.insecure_channel(sidecar.target)
        health = health_pb2_grpc.HealthStub(sidecar.channel)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if sidecar.proc.returncode is not None:
                pytest.fail(f"sidecar {sidecar.name} exited ({sidecar.proc.returncode}):\n"
                            f"{sidecar.log_tail()}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"sidecar {sidecar.name} not SERVING after {START_SECONDS:.0f} s:\n"
                            f"{sidecar.log_tail()}")
            await asyncio.sleep(0.1)
        for line in sidecar.log_path.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("message") == "warden serving":
                sidecar.metrics_port = json.loads(line).get("metrics_port") or 0
        sidecar.client = Client(sidecar.channel)

    async def stop(self, sidecar: Sidecar) -> int:
        """SIGTERM and wait; the exit code (the test asserts it)."""
        if sidecar.proc.returncode is None:
            sidecar.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(sidecar.proc.wait(), STOP_SECONDS)
            except TimeoutError:
                sidecar.proc.kill()
                await sidecar.proc.wait()
                pytest.fail(f"sidecar {sidecar.name} did not stop within {STOP_SECONDS:.0f} s "
                            f"of SIGTERM:\n{sidecar.log_tail()}")
        await self._close_channel(sidecar)
        return sidecar.proc.returncode

    async def stop_all_cleanly(self, sidecars: list[Sidecar]) -> None:
        codes = await asyncio.gather(*(self.stop(s) for s in sidecars))
        for sidecar, code in zip(sidecars, codes, strict=True):
            assert code == 0, f"{sidecar.name} exited {code}:\n{sidecar.log_tail()}"

    async def _close_channel(self, sidecar: Sidecar) -> None:
        if sidecar.channel is not None:
            await sidecar.channel.close()
            sidecar.channel = None

    async def close(self) -> None:
        for sidecar in self._all:
            if sidecar.proc.returncode is None:
                sidecar.proc.kill()
                await sidecar.proc.wait()
            await self._close_channel(sidecar)


class PrivatePostgres:
    """A Postgres of this test's own, on 127.0.0.1, that the test may stop and start."""

    def __init__(self) -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="warden-outage-pg-"))
        self.pgdata = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user = None
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: run them as pgserver's own user.
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "pgserver"
            entry = ensure_user_exists(self.user)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            # Not subprocess's user=: that forks instead of vforking, and gRPC's fork handlers
            # then run in the child of this threaded process (and sometimes crash it).
            command = ["runuser", "-u", self.user, "--", *command]
        with open(self.root / "ctl.log", "a") as out:
            # Output to a file: pg_ctl's postgres inherits it, and a pipe would never close.
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT,
                           timeout=timeout)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
                  "--encoding=utf8")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "30",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.pgdata}",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "30", "stop")

    def cleanup(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
