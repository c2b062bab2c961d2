"""LOG_FORMAT=json: the formatter, gunicorn's JSON logger, and the root logger set-up."""

from __future__ import annotations

import datetime
import io
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from gunicorn.config import Config

from workers.logs import FIELDS, JsonFormatter, log_json_to_stderr, parse_log_format, rfc3339
from workers.pool.gunicorn_logs import JsonLogger

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def render(formatter: logging.Formatter, msg: str, *args: object, level: int = logging.INFO,
           exc_info: Any = None, stack_info: bool = False,
           extra: Mapping[str, object] | None = None) -> str:
    """One record, built by a real Logger (so `extra` goes through logging's own checks)."""
    logger = logging.Logger("workers.test")
    capture = Capture()
    logger.addHandler(capture)
    logger.log(level, msg, *args, exc_info=exc_info, stack_info=stack_info, extra=extra)
    [record] = capture.records
    return formatter.format(record)


def parse(line: str) -> dict[str, Any]:
    assert "\n" not in line, "one record must be one line"
    value = orjson.loads(line)
    assert isinstance(value, dict)
    return value


# -- the formatter -------------------------------------------------------------------------------

def test_every_field_in_order() -> None:
    fields = {name: f"{name}-value" for name in FIELDS if name != "slot"}
    line = render(JsonFormatter(slot=3), "book %r stored in %s", "b-1", "scifi", extra=fields)

    record = parse(line)
    assert list(record) == ["time", "level", "logger", "pid", "slot", "message", *fields]
    assert RFC3339_MS_UTC.match(record["time"])
    assert record["level"] == "INFO"
    assert record["logger"] == "workers.test"
    assert record["pid"] == os.getpid()
    assert record["slot"] == 3
    assert record["message"] == "book 'b-1' stored in scifi"
    for name, value in fields.items():
        assert record[name] == value


def test_fields_a_call_did_not_pass_or_passed_as_none_are_left_out() -> None:
    record = parse(render(JsonFormatter(), "plain", level=logging.WARNING,
                          extra={"book_id": None, "reason": "SlowDown"}))

    assert set(record) == {"time", "level", "logger", "pid", "message", "reason"}
    assert record["level"] == "WARNING"


def test_extras_outside_the_documented_fields_are_not_rendered() -> None:
    record = parse(render(JsonFormatter(), "x", extra={"password": "hunter2"}))

    assert "password" not in record


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500Z"
    assert rfc3339(1_795_000_000.0429) == "2026-11-18T11:06:40.042Z"
    moment = datetime.datetime.fromisoformat(rfc3339(1_795_000_000.0429).replace("Z", "+00:00"))
    assert moment.utcoffset() == datetime.timedelta(0)


def test_an_exception_is_one_field_with_its_whole_traceback() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        line = render(JsonFormatter(), "consumer %d crashed", 2, level=logging.ERROR,
                      exc_info=True)

    record = parse(line)
    assert record["message"] == "consumer 2 crashed"
    assert record["exception"].startswith("Traceback (most recent call last):\n")
    assert record["exception"].endswith("ValueError: boom\nsecond line")
    assert "test_an_exception_is_one_field" in record["exception"]


def test_a_stack_is_one_field() -> None:
    record = parse(render(JsonFormatter(), "where", stack_info=True))

    assert record["stack"].startswith("Stack (most recent call last):\n")


def test_non_ascii_is_kept_as_utf8() -> None:
    title = "Dune ✨ Ünïcödé 日本語 🧑‍🚀"
    line = render(JsonFormatter(), "stored %s", title, extra={"key": f"{title}.json"})

    record = parse(line)
    assert record["message"] == f"stored {title}"
    assert record["key"] == f"{title}.json"
    assert title in line  # readable as is, not \u-escaped
    line.encode("utf-8")  # and writable to any UTF-8 stream


class Unserialisable:
    def __str__(self) -> str:
        return "<the object's text>"


def test_a_field_that_is_not_json_serialisable_is_rendered_as_its_text() -> None:
    record = parse(render(JsonFormatter(), "x", extra={
        "key": Path("a/b.json"), "error": Unserialisable(), "reason": ValueError("bad value")}))

    assert record["key"] == "a/b.json"
    assert record["error"] == "<the object's text>"
    assert record["reason"] == "bad value"


def test_values_orjson_refuses_still_give_a_json_line() -> None:
    # A lone surrogate (bytes decoded with surrogateescape) and an integer beyond 64 bits.
    line = render(JsonFormatter(slot=1), "file %s", "caf\udce9", extra={"book_id": 2**70})

    record = parse(line)
    assert record["message"] == "file caf\\udce9"
    assert record["book_id"] == str(2**70)
    assert record["slot"] == "1"  # the fallback renders every value as text
    line.encode("utf-8")


def test_log_formats() -> None:
    assert parse_log_format("json") == "json"
    assert parse_log_format("TEXT") == "text"
    with pytest.raises(ValueError, match="xml"):
        parse_log_format("xml")


# -- process set-up ------------------------------------------------------------------------------

@pytest.fixture
def restored_logging() -> Iterator[None]:
    """log_json_to_stderr changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)


def stderr_records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [parse(line) for line in capsys.readouterr().err.splitlines()]


@pytest.mark.usefixtures("restored_logging")
def test_the_root_logger_writes_json_and_set_up_twice_still_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    log_json_to_stderr(logging.INFO, slot=4)
    log_json_to_stderr(logging.INFO, slot=4)  # gunicorn sets up again on every reload

    logging.getLogger("flask.app").info("hello from %s", "a library")
    logging.getLogger("flask.app").debug("below the level")

    [record] = stderr_records(capsys)
    assert record["message"] == "hello from a library"
    assert record["logger"] == "flask.app"
    assert record["slot"] == 4


@pytest.mark.usefixtures("restored_logging")
def test_warnings_and_uncaught_exceptions_become_json_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    log_json_to_stderr(logging.INFO)

    warnings.warn("an old API", DeprecationWarning, stacklevel=1)

    def fail() -> None:
        raise RuntimeError("thread failure")
    thread = threading.Thread(target=fail, name="keeper")
    thread.start()
    thread.join()
    try:
        raise KeyError("main failure")
    except KeyError:
        sys.excepthook(*sys.exc_info())

    warning, in_thread, in_main = stderr_records(capsys)
    assert warning["logger"] == "py.warnings" and "an old API" in warning["message"]
    assert in_thread["level"] == "CRITICAL"
    assert in_thread["message"] == "uncaught exception in thread keeper"
    assert in_thread["exception"].endswith("RuntimeError: thread failure")
    assert in_main["exception"].endswith("KeyError: 'main failure'")


# -- gunicorn's logger ---------------------------------------------------------------------------

class FakeResponse:
    status = "404 NOT FOUND"
    sent = 34
    headers = (("Content-Type", "application/json"),)


@pytest.fixture
def gunicorn_logger(tmp_path: Path, restored_logging: None) -> Iterator[JsonLogger]:
    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("loglevel", "debug")
    logger = JsonLogger(cfg)
    yield logger
    for log in (logger.error_log, logger.access_log):  # gunicorn's loggers are process-wide
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)


def test_gunicorn_error_and_access_lines_are_json(gunicorn_logger: JsonLogger,
                                                  tmp_path: Path) -> None:
    logger = gunicorn_logger
    logger.info("Booting worker with pid: %s", 42)
    logger.error("consumer %d died", 1, extra={"slot": 1, "reason": "died"})
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/nope?x=1", "PATH_INFO": "/nope",
               "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    logger.access(FakeResponse(), io.StringIO(), environ,
                  datetime.timedelta(milliseconds=12.5))
    for handler in logger.error_log.handlers + logger.access_log.handlers:
        handler.flush()

    booting, died = (parse(line) for line in (tmp_path / "error.log").read_text().splitlines())
    assert booting["logger"] == "gunicorn.error"
    assert booting["message"] == "Booting worker with pid: 42"
    assert (died["slot"], died["reason"], died["level"]) == (1, "died", "ERROR")
    [access] = (parse(line) for line in (tmp_path / "access.log").read_text().splitlines())
    assert access["logger"] == "gunicorn.access"
    assert '"GET /nope?x=1 HTTP/1.1" 404 34' in access["message"]
    assert {k: access[k] for k in ("remote_addr", "method", "path", "status", "bytes",
                                   "duration_ms")} == {
        "remote_addr": "127.0.0.1", "method": "GET", "path": "/nope", "status": 404,
        "bytes": 34, "duration_ms": 12}
    root_formatters = [h.formatter for h in logging.getLogger().handlers]
    assert any(isinstance(f, JsonFormatter) for f in root_formatters)
