"""Generate the Python stubs from protos/ into server/warden/v1 and, for the data plane (warden
and types), into the Python client (clients/python/src/warden_client/v1, imports rewritten to
that package), or check they are current.

    python scripts/genprotos.py          # regenerate
    python scripts/genprotos.py --check  # exit 1 if the committed stubs differ

Uses the pinned grpcio-tools (see pyproject.toml), so output is reproducible.
"""

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "server"
PACKAGE = Path("warden") / "v1"
CLIENT_OUT = ROOT / "clients" / "python" / "src"
CLIENT_PACKAGE = Path("warden_client") / "v1"
CLIENT_PROTOS = ("warden", "types")  # the data plane; Admin stays with the server


def generate(out: Path) -> list[Path]:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *sources,
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed with exit code {rc}")
    return sorted(p.relative_to(out) for p in (out / PACKAGE).glob("*_pb2*.py*"))


def for_client(tmp: Path, generated: list[Path]) -> list[Path]:
    """The client's copies of the data plane's stubs under tmp/client, importing each other
    from warden_client.v1."""
    out = []
    for p in generated:
        if p.name.split("_pb2")[0] not in CLIENT_PROTOS:
            continue
        text = (tmp / p).read_text().replace("from warden.v1 import",
                                             "from warden_client.v1 import")
        target = tmp / "client" / CLIENT_PACKAGE / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        out.append(CLIENT_PACKAGE / p.name)
    return out


def sync(made: Path, generated: list[Path], out: Path, package: Path, check: bool) -> str:
    """Copy the generated stubs over the committed ones (or, with check, compare them)."""
    committed = sorted(p.relative_to(out) for p in (out / package).glob("*_pb2*.py*"))
    if check:
        stale = [str(p) for p in generated if not (out / p).exists()
                 or not filecmp.cmp(made / p, out / p, shallow=False)]
        extra = [str(p) for p in committed if p not in generated]
        if stale or extra:
            sys.exit(f"generated stubs are out of date: {stale + extra}; "
                     "run `python scripts/genprotos.py` and commit the result")
        return f"stubs up to date ({len(generated)} files in {package})"
    for p in committed:
        (out / p).unlink()
    for p in generated:
        shutil.copyfile(made / p, out / p)
    return f"wrote {len(generated)} files to {out / package}"


def main() -> None:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        client = for_client(Path(tmp), generated)
        print(sync(Path(tmp), generated, OUT, PACKAGE, check))
        print(sync(Path(tmp) / "client", client, CLIENT_OUT, CLIENT_PACKAGE, check))


if __name__ == "__main__":
    main()
