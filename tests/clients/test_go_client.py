"""The Go client's tests (clients/go, `go test`) against a live sidecar on a real port and a
real Postgres started here. They need a Go toolchain and Debian's gRPC packages
(clients/go/README.md): without them this test is skipped on a developer's machine and fails
in CI (CI=true), so a missing toolchain can never pass silently there."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import closed_port, rate_limit, tenant
from warden.v1 import types_pb2

GO_ROOT = Path(__file__).resolve().parents[2] / "clients" / "go"
GOPATH_SYSTEM = "/usr/share/gocode"


def _toolchain() -> str:
    go = shutil.which("go")
    if go and Path(GOPATH_SYSTEM, "src", "google.golang.org", "grpc").is_dir():
        return go
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs Go and Debian's golang-google-grpc-dev (see clients/go/README.md)")
    pytest.skip("no Go toolchain with Debian's gRPC packages: CI runs these tests")


async def test_the_go_client_against_a_live_sidecar(warden, client, tmp_path) -> None:
    go = _toolchain()
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, "limited-rpm",
                     models=("limited",))
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{GO_ROOT}:{GOPATH_SYSTEM}",
           "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-count=1",
           "WARDEN_ADDRESS": warden.target, "WARDEN_API_KEY": key,
           "WARDEN_DOWN_ADDRESS": f"127.0.0.1:{closed_port()}"}
    proc = await asyncio.create_subprocess_exec(
        go, "test", "-v", "warden/client", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert text.count("--- PASS") == 6, text
