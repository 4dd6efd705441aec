"""The TypeScript client's tests (clients/node, Node's own test runner) against a live sidecar
on a real port and a real Postgres started here. They need Node.js and the client's packages
(`npm ci` in clients/node): without them this test is skipped on a developer's machine and
fails in CI (CI=true), so a missing toolchain can never pass silently there."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import closed_port, rate_limit, tenant
from warden.v1 import types_pb2

NODE_ROOT = Path(__file__).resolve().parents[2] / "clients" / "node"


def _toolchain() -> str:
    npm = shutil.which("npm")
    if npm and shutil.which("node") and (NODE_ROOT / "node_modules" / "@grpc").is_dir():
        return npm
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs Node.js and `npm ci` in clients/node (see clients/node/README.md)")
    pytest.skip("no Node.js with the client's packages (npm ci in clients/node): CI runs these")


async def test_the_typescript_client_against_a_live_sidecar(warden, client) -> None:
    npm = _toolchain()
    key = await tenant(client)
    await rate_limit(client, types_pb2.SCOPE_KIND_APP, "chat", 1, "limited-rpm",
                     models=("limited",))
    env = {**os.environ, "WARDEN_ADDRESS": warden.target, "WARDEN_API_KEY": key,
           "WARDEN_DOWN_ADDRESS": f"127.0.0.1:{closed_port()}"}
    proc = await asyncio.create_subprocess_exec(
        npm, "test", cwd=NODE_ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "# pass 7" in text and "# fail 0" in text, text
