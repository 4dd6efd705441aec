"""deploy/envoy/envoy.yaml is a configuration Envoy accepts, and its Warden filters are the ones
the mesh tests run (tests/envoy.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.envoy import authz_filter, envoy_binary, proc_filter

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"


def http_filters(text: str) -> dict[str, dict]:
    manager = yaml.safe_load(text)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]
    return {f["name"]: f for f in manager["http_filters"]}


def test_envoy_accepts_the_configuration():
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(CONFIG)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ext_proc_is_the_active_filter_as_tested():
    filters = http_filters(CONFIG.read_text())
    assert "envoy.filters.http.ext_authz" not in filters  # one of the two, never both
    assert filters["envoy.filters.http.ext_proc"] == proc_filter()


def test_the_commented_ext_authz_alternative_is_as_tested():
    # Uncomment the ext_authz block (its lines start "# " one level into the filter list).
    text = CONFIG.read_text()
    block = re.search(r"^( *)# - name: envoy\.filters\.http\.ext_authz\n(?:\1# .*\n)+", text,
                      re.MULTILINE)
    assert block
    indent = block.group(1)
    uncommented = re.sub(rf"^{indent}# ", indent, block.group(0), flags=re.MULTILINE)
    authz = http_filters(text.replace(block.group(0), uncommented))["envoy.filters.http.ext_authz"]
    assert authz == authz_filter()
