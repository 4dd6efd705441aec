"""JSON lines on stderr: one object per record, with any `extra=` fields kept."""

import json
import logging
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

# Libraries that narrate routine work at INFO: pgserver logs every initdb and pg_ctl command
# line with its whole output. Below DEBUG they are held to WARNING, so their failures (which
# carry that output) still show and their routine does not bury Warden's own records.
_NARRATORS = ("pgserver",)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _NARRATORS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    # A Python warning is written as a JSON record too (logger py.warnings, level WARNING)
    # rather than as two lines of text that break a reader of JSON lines.
    logging.captureWarnings(True)
