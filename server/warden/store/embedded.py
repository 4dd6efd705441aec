"""The embedded default: a private PostgreSQL from the `pgserver` package, in the data
directory. Warden uses it through the same URL-based code path as an external server."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("warden.embedded")


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self._pgdata = data_dir / "pg"
        self._server = None

    def start(self) -> str:
        """Start (or join) the server and return its URL. Blocking: call in a thread."""
        import pgserver  # imported here: only the embedded mode needs it

        self._pgdata.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self._pgdata, cleanup_mode="stop")
        log.info("embedded postgres started", extra={"pgdata": str(self._pgdata)})
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
