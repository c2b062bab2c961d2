"""Log lines as JSON (`LOG_FORMAT=json`): one object per line, for Loki or CloudWatch Logs Insights.

One formatter serves every process: the gunicorn master and HTTP workers (through
`workers.pool.gunicorn_logs`) and the consumers (`workers.consumer`). Log calls pass structured
fields with `extra=` (see `FIELDS`); the text format, the default, ignores them, so it reads
exactly as it always did. A field not listed in `FIELDS` is not rendered: add it there and to
the README.
"""

from __future__ import annotations

import logging
import sys
import threading
import types
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

import orjson

LOG_FORMATS = ("text", "json")

# Fields a log call may pass with `extra=`, rendered in this order after the message when present.
FIELDS = (
    "slot",  # consumer slot; set on every consumer line, and on the pool's lines about one
    "message_id",
    "group_id",
    "book_id",
    "bucket",
    "key",
    "outcome",  # what became of the message: stored, dead_lettered, retry
    "reason",  # why: an invalid-book reason, an AWS error code, how a book was written
    "detail",  # what exactly was wrong with an invalid book (the DLQ's shelver-detail)
    "error",  # the text of the exception behind a failure logged without its traceback
    # With tracing on, in a consumer: the ids of the span current where the line was written
    # (`workers.tracing.install_log_fields`), so a line about a message leads to its trace.
    "trace_id",
    "span_id",
)


def parse_log_format(raw: str) -> str:
    value = raw.lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"unknown format {raw}")
    return value


def rfc3339(timestamp: float) -> str:
    """UTC, milliseconds: 2026-11-22T09:30:00.123Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """time, level, logger, pid, the `static` fields, message, then the `FIELDS` a call passed
    and, with exc_info, `exception`: the traceback as one string."""

    def __init__(self, **static: object) -> None:
        super().__init__()
        self._static = static

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            **self._static,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        line.update(self.fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _dumps(line)

    def fields(self, record: logging.LogRecord) -> Mapping[str, object]:
        """More fields for one kind of record (gunicorn's access lines)."""
        return {}


def _dumps(line: Mapping[str, object]) -> str:
    try:
        # default=str: a field of any other type (a path, an exception) is rendered as its text.
        return orjson.dumps(line, default=str).decode()
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates (from bytes decoded with surrogateescape, say) and
        # integers beyond 64 bits. A log line must never be lost: render every value as text,
        # surrogates as \\udcxx escapes, which any JSON parser reads.
        return orjson.dumps({name: _safe_text(value) for name, value in line.items()}).decode()


def _safe_text(value: object) -> object:
    if value is None or isinstance(value, bool | float):
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def log_json_to_stderr(level: int | str, **static: object) -> None:
    """Make the root logger write JSON lines to stderr, and route what Python would otherwise
    print itself (warnings, uncaught exceptions) through it, so every line stays JSON.

    Idempotent: gunicorn calls it again on every reload.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(**static))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  traceback: types.TracebackType | None) -> None:
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # silent, as with Python's own hook
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("uncaught").critical("uncaught exception in thread %s", name,
                                           exc_info=exc_info)  # type: ignore[arg-type]


class Logger(Protocol):
    """gunicorn's logger (`server.log`); `extra` takes the structured fields of this module."""

    def info(self, msg: str, *args: object, extra: Mapping[str, object] | None = None
             ) -> None: ...
    def warning(self, msg: str, *args: object, extra: Mapping[str, object] | None = None
                ) -> None: ...
    def error(self, msg: str, *args: object, extra: Mapping[str, object] | None = None
              ) -> None: ...
