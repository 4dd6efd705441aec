"""The client tests import the Python client from its source tree (clients/python/src): the
README's test command installs the server only. CI also installs the client on its own into a
fresh virtual environment (.ci/run)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))
