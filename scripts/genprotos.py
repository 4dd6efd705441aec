"""Generate the Python stubs from protos/ into server/warden/v1, or check they are current.

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


def main() -> None:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        committed = sorted(p.relative_to(OUT) for p in (OUT / PACKAGE).glob("*_pb2*.py*"))
        if check:
            stale = [str(p) for p in generated if not (OUT / p).exists()
                     or not filecmp.cmp(Path(tmp) / p, OUT / p, shallow=False)]
            extra = [str(p) for p in committed if p not in generated]
            if stale or extra:
                sys.exit(f"generated stubs are out of date: {stale + extra}; "
                         "run `python scripts/genprotos.py` and commit the result")
            print(f"stubs up to date ({len(generated)} files)")
            return
        for p in committed:
            (OUT / p).unlink()
        for p in generated:
            shutil.copyfile(Path(tmp) / p, OUT / p)
        print(f"wrote {len(generated)} files to {OUT / PACKAGE}")


if __name__ == "__main__":
    main()
