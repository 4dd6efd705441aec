"""The embedded default: a private PostgreSQL from the `pgserver` package, in the data
directory. Warden uses it through the same URL-based code path as an external server."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import ModuleType

log = logging.getLogger("warden.embedded")


def pgdata(data_dir: Path) -> Path:
    return data_dir / "pg"


def server_log(data_dir: Path) -> Path:
    """Where the embedded server writes its own log (pgserver starts it with `pg_ctl -l`)."""
    return pgdata(data_dir) / "log"


def _import_pgserver() -> ModuleType:
    """pgserver, imported without its runtime-directory warning on the terminal.

    pgserver's import asks platformdirs for the user's runtime directory, where it keeps the
    lock that serializes every pgserver start and stop of this account. Without
    XDG_RUNTIME_DIR (containers, services, `su`, ssh without a login session) platformdirs
    warns and falls back to /run/user/<uid> or a private /tmp/runtime-<uid>, which works.
    Setting XDG_RUNTIME_DIR ourselves would be the bigger surprise: it would move that lock
    away from other pgserver users of the account (a test suite, `warden migrate` run by
    another environment) and leak into every child process. So the fallback stays and only
    the warning is moved to DEBUG; any other warning of the import is passed on as it was.
    Called on the thread that owns the event loop, before any worker thread: catching
    warnings swaps process-wide state.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pgserver  # imported here: only the embedded mode needs it
    for warning in caught:
        # By name: older platformdirs have no such class (and do not warn).
        if warning.category.__name__ == "RuntimeDirWarning":
            log.debug("pgserver runtime directory", extra={"detail": str(warning.message)})
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno, source=warning.source)
    return pgserver


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self._pgdata = pgdata(data_dir)
        self._pgserver = _import_pgserver()
        self._server = None

    def start(self) -> str:
        """Start (or join) the server and return its URL. Blocking: call in a thread."""
        self._pgdata.mkdir(parents=True, exist_ok=True)
        self._server = self._pgserver.get_server(self._pgdata, cleanup_mode="stop")
        log.info("embedded postgres started", extra={"pgdata": str(self._pgdata)})
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
