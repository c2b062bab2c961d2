"""LOG_FORMAT=json with a real gunicorn: every line of every process is one JSON object."""

from __future__ import annotations

import re
import signal
import subprocess
from typing import Any

import orjson

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.shelver import GUNICORN, REPO, Shelver
from workers.books.keys import object_key

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line parsed; fails on the first that is not a JSON object with the mandatory
    fields."""
    records = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        assert RFC3339_MS_UTC.match(record["time"]), line
        assert record["level"] in LEVELS, line
        assert isinstance(record["logger"], str) and record["logger"], line
        assert isinstance(record["pid"], int), line
        assert isinstance(record["message"], str), line
        records.append(record)
    return records


def test_every_process_logs_json_with_the_fields_of_each_message(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory):
    # DEBUG: a stored book is logged at DEBUG (one line per book would be a lot at INFO).
    shelver = shelver_factory(stack, LOG_FORMAT="json", LOG_LEVEL="DEBUG", ACCESS_LOG="-")
    shelver.wait_healthy()
    books = [book(f"log-{n}", f"Logged Book {n} ✨", ("scifi", "romance")[n % 2])
             for n in range(4)]
    items: list[tuple[str, bytes | dict[str, Any]]] = [(f"lg{n % 2}", b) for n, b in
                                                       enumerate(books)]
    items.append(("lg-poison", b"this is not json"))
    ids = aws.send(stack.input_url, items)
    wait_until(lambda: aws.counts(stack.dlq_url)[0] == 1, 30, 0.3, "the poison in the DLQ")
    wait_until(lambda: aws.drained(stack.input_url), 30, 0.3, "the input queue to drain")
    shelver.signal(signal.SIGTERM)
    assert shelver.wait_exit(60) == 0

    records = json_lines(shelver.log())
    assert shelver.process is not None
    master = shelver.process.pid
    http_workers = {int(r["message"].rsplit(" ", 1)[1]) for r in records
                    if r["message"].startswith("Booting worker with pid: ")}
    consumers = {r["pid"] for r in records if "slot" in r and r["pid"] != master}
    assert len(http_workers) == 2 and len(consumers) == 2
    assert {r["pid"] for r in records} == {master} | http_workers | consumers
    by_pid = {pid: [r for r in records if r["pid"] == pid] for pid in {r["pid"] for r in records}}
    assert any(r["message"] == "consumer pool stopped" for r in by_pid[master])
    for pid in http_workers:
        assert f"Worker exiting (pid: {pid})" in {r["message"] for r in by_pid[pid]}
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert {r["pid"] for r in access} <= http_workers
    assert {(r["method"], r["path"], r["status"]) for r in access} >= {("GET", "/health", 200)}
    for pid in consumers:  # every line of a consumer carries its slot
        assert {r["slot"] for r in by_pid[pid]} in ({0}, {1}), by_pid[pid]

    for n, sent in enumerate(books):
        [stored] = [r for r in records if r.get("book_id") == sent["id"]]
        assert stored["pid"] in consumers
        assert {k: stored[k] for k in ("message_id", "group_id", "bucket", "key", "outcome",
                                       "reason")} == {
            "message_id": ids[n], "group_id": f"lg{n % 2}",
            "bucket": stack.buckets[sent["genre"]], "key": object_key(sent["title"]),
            "outcome": "stored", "reason": "created"}
    [dead] = [r for r in records if r.get("outcome") == "dead_lettered"]
    assert {k: dead[k] for k in ("message_id", "group_id", "reason", "level")} == {
        "message_id": ids[-1], "group_id": "lg-poison", "reason": "not_json", "level": "ERROR"}
    assert "not valid JSON" in dead["detail"]


def start_up_failure(env: dict[str, str], run_dir: Any) -> subprocess.CompletedProcess[str]:
    shelver = Shelver(env={"AWS_REGION": "us-east-1", **env}, run_dir=run_dir)
    return subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py"], cwd=REPO,
                          env=shelver.full_env(), capture_output=True, text=True, timeout=60)


def test_a_bad_log_format_stops_start_up_naming_the_variable(run_dir):
    result = start_up_failure({"LOG_FORMAT": "xml"}, run_dir)

    assert result.returncode == 3
    assert "LOG_FORMAT='xml' is not valid: expected text or json" in result.stderr
    assert "Traceback" not in result.stderr


def test_with_json_a_configuration_error_is_a_json_line_too(run_dir):
    result = start_up_failure({"LOG_FORMAT": "json", "CONSUMERS": "many"}, run_dir)

    assert result.returncode == 3
    records = json_lines(result.stdout + result.stderr)
    [error] = [r for r in records if r["level"] == "ERROR"]
    assert error["message"].startswith("shelver: configuration error: CONSUMERS='many'")
