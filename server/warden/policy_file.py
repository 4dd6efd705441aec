"""A policies-as-code file (YAML; the fields of Admin.ApplyRequest) read for `warden apply`."""

from __future__ import annotations

from pathlib import Path

import yaml
from google.protobuf import json_format

from warden.v1 import admin_pb2


class PolicyFileError(ValueError):
    """The file cannot be read or is not a declaration; the message names it and why."""


def load_apply_file(path: str) -> admin_pb2.ApplyRequest:
    """The file as an ApplyRequest, or PolicyFileError naming the file and what is wrong with it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyFileError(f"{path}: expected a mapping with keys orgs, teams, apps, users and "
                         f"policies, got {type(data).__name__}")
    if "dry_run" in data or "dryRun" in data:
        raise PolicyFileError(f"{path}: dry_run is a command-line choice (--dry-run), not part of "
                         "the file")
    request = admin_pb2.ApplyRequest()
    try:
        json_format.ParseDict(data, request)
    except json_format.ParseError as exc:
        problem = str(exc).rstrip(".")
        if "got 'int'" in problem or "got 'bool'" in problem or "got 'float'" in problem:
            problem += (" (YAML reads unquoted values such as 007, yes, no, on and off as "
                        "numbers or booleans: quote them)")
        raise PolicyFileError(f"{path} is not a valid Warden declaration: {problem}") from None
    return request
