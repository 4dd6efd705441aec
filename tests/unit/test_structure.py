"""Rules of the codebase that a reviewer would otherwise have to remember."""

import ast
import tomllib
from pathlib import Path

from warden.engine.model import Reason
from warden.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engine_does_no_io() -> None:
    forbidden = ("grpc", "asyncpg", "google.protobuf", "prometheus_client", "warden.store",
                 "warden.api", "warden.v1", "socket", "asyncio")
    for path in (SERVER / "warden" / "engine").glob("*.py"):
        bad = [n for n in _imports(path) if n.startswith(forbidden)]
        assert not bad, f"{path.name} imports {bad}"


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(SERVER).parts)
             for p in SERVER.rglob("__init__.py")} | {"warden.migrations"}
    assert listed == found


def test_engine_reasons_exist_in_the_api() -> None:
    for reason in Reason:
        assert types_pb2.Reason.Value("REASON_" + reason.value)


def test_every_setting_is_documented_in_the_readme() -> None:
    from warden.settings import OPTIONS

    readme = (ROOT / "README.md").read_text()
    for option in OPTIONS:
        assert f"| `{option.env}` | `{option.flag}` |" in readme, option.env


def _hand_written() -> list[Path]:
    return [p for p in (SERVER / "warden").rglob("*.py") if "v1" not in p.parts]


def test_no_hand_written_server_file_is_over_400_lines() -> None:
    long = {p.name: n for p in _hand_written() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_only_the_stores_and_the_composition_root_know_the_database_driver() -> None:
    store = SERVER / "warden" / "store"
    roots = (SERVER / "warden" / "app.py", SERVER / "warden" / "cli.py")
    for path in _hand_written():
        if path in roots or store in path.parents:
            continue
        bad = [n for n in _imports(path) if n == "asyncpg" or n.startswith("warden.store.")
               and n not in ("warden.store.base", "warden.store.audit_query",
                             "warden.store.reporting")]
        assert not bad, f"{path.relative_to(SERVER)} imports {bad}"


def test_the_authorize_handler_only_validates_converts_and_delegates() -> None:
    source = (SERVER / "warden" / "api" / "warden_service.py").read_text()
    handler = next(node for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.AsyncFunctionDef) and node.name == "Authorize")
    assert handler.end_lineno - handler.lineno + 1 < 30
