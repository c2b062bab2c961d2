"""gunicorn's logger with LOG_FORMAT=json: the master's, the pool thread's and the HTTP workers'
lines (gunicorn.error), and the access log (gunicorn.access), as JSON.

gunicorn.conf.py selects it only for JSON; the text format stays gunicorn's own logger, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger

from workers.logs import JsonFormatter, log_json_to_stderr


class AccessJsonFormatter(JsonFormatter):
    """Access lines: the configured access log line as the message, plus its main parts."""

    def fields(self, record: logging.LogRecord) -> Mapping[str, object]:
        # gunicorn passes the request's "atoms" as the record's only argument.
        atoms = record.args if isinstance(record.args, Mapping) else {}
        status = str(atoms.get("s", ""))
        return {
            "remote_addr": atoms.get("h"),
            "method": atoms.get("m"),
            "path": atoms.get("U"),
            "status": int(status) if status.isdigit() else status,
            "bytes": atoms.get("B"),
            "duration_ms": atoms.get("M"),
        }


class JsonLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # Everything else the master and HTTP workers log (Flask's errors, Python's warnings)
        # goes through the root logger: JSON as well, at gunicorn's level.
        log_json_to_stderr(self.loglevel)

    def _set_handler(self, log: logging.Logger, output: str | None, fmt: logging.Formatter,
                     stream: Any = None) -> None:
        # gunicorn calls this for its error log and its access log (when ACCESS_LOG is set) with
        # its text formatters; the handler (stream or file) stays gunicorn's choice.
        json_format = AccessJsonFormatter() if log is self.access_log else JsonFormatter()
        super()._set_handler(log, output, json_format, stream)
