"""What a person sees of Warden: `warden serve` in a real process, read the way a terminal
shows it (stdout and stderr in one stream), and the `--help` of every command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pkgutil
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import warden
from tests.conftest import ADMIN_TOKEN, KEY_PEPPER
from warden.cli import build_parser

# A first start runs initdb, on a loaded machine.
START_SECONDS = 90.0
STOP_SECONDS = 30.0
# What the embedded PostgreSQL and pgserver said on the terminal before: their command lines,
# their output, and platformdirs' warning about the runtime directory.
CHATTER = ("pgserver", "initdb", "pg_ctl", "Running commandline", "RuntimeDirWarning",
           "XDG_RUNTIME_DIR", "PG_VERSION", "postmaster")
LAST_LINE = "Stop with Ctrl-C."


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without WARDEN_* settings, and without XDG_RUNTIME_DIR: that is
    the case (containers, services) in which platformdirs warns when pgserver is imported."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WARDEN_") and k != "XDG_RUNTIME_DIR"}
    return {**env, **extra}


@contextlib.asynccontextmanager
async def _serving(*args: str, env: dict[str, str]
                   ) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """`warden serve ARGS`, once it has printed its summary: the process and every line
    printed so far (the list grows when the test stops it with _stop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warden", "serve", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        async with asyncio.timeout(START_SECONDS):
            while LAST_LINE not in lines:
                line = await proc.stdout.readline()
                if not line:
                    raise AssertionError("warden exited before serving:\n" + "\n".join(lines))
                lines.append(line.decode().rstrip("\n"))
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stop(proc: asyncio.subprocess.Process, lines: list[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(proc.communicate(), STOP_SECONDS)
    lines += rest.decode().splitlines()
    return proc.returncode


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


def _summary(lines: list[str]) -> tuple[list[str], dict[str, str]]:
    """The lines from "Warden is serving." on, and its `  name: value` rows."""
    summary = lines[lines.index("Warden is serving."):]
    rows = dict(re.findall(r"^  ([a-zA-Z ]+): +(.+)$", "\n".join(summary), re.MULTILINE))
    return summary, rows


def _assert_only_warden_records(lines: list[str]) -> None:
    """Before the summary a person sees Warden's own JSON log records, and nothing else."""
    for line in lines[:lines.index("Warden is serving.")]:
        if line:
            record = json.loads(line)
            assert record["logger"].startswith("warden."), line


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory outside pytest's own temporary root: run as root, pgserver opens the
    path to its own user, and every pytest session that starts on the machine closes that root
    again (mode 0700), which fails an initdb under way. conftest's server does the same."""
    path = Path(tempfile.mkdtemp(prefix="warden-startup-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


async def test_serve_demo_prints_the_target_the_token_path_and_the_key(data_dir):
    async with _serving("--demo", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                        "--metrics-listen", "127.0.0.1:0", env=_env()) as (proc, lines):
        summary, rows = _summary(lines)
        target = rows["gRPC"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", target) and target != "127.0.0.1:0", rows
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(rows["metrics"], timeout=5).read().decode())
        assert "warden_build_info" in metrics

        token_file = data_dir / "admin-token"
        assert rows["admin token"].startswith(f"{token_file} "), rows
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.read_text().strip() not in "\n".join(lines)
        assert rows["database"].startswith(f"embedded PostgreSQL in {data_dir / 'pg'} ")

        [key] = [line.strip() for line in summary if line.startswith("  wk_")]
        # The commands printed for the person work as pasted: the demo key against the
        # target, and an admin command that finds the token through the data directory.
        [authorize] = [line for line in summary if " authorize " in line]
        assert f"--target {target}" in authorize and f"--key {key}" in authorize
        code, out = await _run(*shlex.split(authorize))
        assert code == 0 and '"DECISION_ALLOW"' in out, out
        [listing] = [line for line in summary if " policies list " in line]
        code, out = await _run(*shlex.split(listing))
        assert code == 0 and "demo-app-rpm" in out, out

        _assert_only_warden_records(lines)
        assert await _stop(proc, lines) == 0
    text = "\n".join(lines)
    for word in CHATTER:
        assert word not in text, f"{word!r} on the terminal:\n{text}"
    assert '"stopped"' in text


async def test_serve_with_a_database_url_and_a_token_prints_neither(db_url, tmp_path):
    env = _env(WARDEN_DATABASE_URL=db_url, WARDEN_ADMIN_TOKEN=ADMIN_TOKEN,
               WARDEN_KEY_PEPPER=KEY_PEPPER)
    async with _serving("--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                        "--metrics-listen", "off", env=env) as (proc, lines):
        summary, rows = _summary(lines)
        assert rows["admin token"] == "the one given by WARDEN_ADMIN_TOKEN"
        assert rows["metrics"] == "off"
        assert rows["database"].startswith("PostgreSQL ")
        assert not any("wk_" in line for line in summary)
        _assert_only_warden_records(lines)
        assert await _stop(proc, lines) == 0
    text = "\n".join(lines)
    assert ADMIN_TOKEN not in text and db_url not in text
    assert not (tmp_path / "admin-token").exists()


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _internal_names() -> re.Pattern[str]:
    """Module and file names of the warden package, and repository paths: nothing a person
    running Warden should need to read. warden.v1 stays allowed: it is the API's package, in
    service names such as warden.v1.Admin."""
    modules = {m.name for m in pkgutil.walk_packages(warden.__path__, "warden.")} - {"warden.v1"}
    short = {m.rsplit(".", 1)[-1] for m in modules}
    patterns = [re.escape(m) + r"\b" for m in modules]
    patterns += [rf"\b{re.escape(s)}\.(py\b|[A-Za-z_])" for s in short]
    patterns += [rf"\b{re.escape(s)}\b" for s in short if "_" in s]
    patterns += [r"\b\w+\.py\b", r"\b(docs|server|tests|examples|protos|migrations)/"]
    return re.compile("|".join(patterns))


def test_every_help_speaks_to_users():
    commands = list(_commands(build_parser()))
    assert len(commands) > 10
    internal = _internal_names()
    for path, parser in commands:
        for action in parser._actions:
            described = (action._choices_actions
                         if isinstance(action, argparse._SubParsersAction) else [action])
            for each in described:
                assert each.help, f"warden {' '.join(path)}: {each.option_strings or each.dest}"
        out = subprocess.run([sys.executable, "-m", "warden", *path, "--help"], env=_env(),
                             capture_output=True, text=True, check=True, timeout=30).stdout
        assert out.startswith("usage: warden"), out
        found = internal.search(out)
        assert found is None, f"warden {' '.join(path)} --help names {found.group()!r}:\n{out}"
