from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from service import create_app
from workers import metrics as shelver_metrics
from workers.settings import Settings
from workers.status import (
    ConsumerState,
    ConsumerStatus,
    PoolSlot,
    write_consumer_status,
    write_pool,
)

REPO = Path(__file__).resolve().parents[2]
REAL_KILL = os.kill  # the `kills` fixture replaces os.kill while a test runs
SETTINGS_VARIABLES = (
    "INPUT_QUEUE", "GENRE_BUCKETS", "CONSUMERS", "CONSUMER_THREADS", "WAIT_TIME_SECONDS",
    "POLL_INTERVAL_SECONDS", "VISIBILITY_CEILING_SECONDS", "RETRY_BACKOFF_BASE_SECONDS",
    "RETRY_BACKOFF_MAX_SECONDS", "CONSUMER_HEARTBEAT_TIMEOUT_SECONDS",
    "CONSUMER_STOP_TIMEOUT_SECONDS", "HEALTH_MAX_POLL_AGE_SECONDS", "QUEUE_SAMPLE_SECONDS",
    "SHELVER_STATE_DIR", "LOG_LEVEL", "LOG_FORMAT",
)


def dead_pid() -> int:
    # Above the kernel's pid_max no process can exist.
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


@dataclass
class Env:
    state_dir: Path
    metrics_dir: Path
    settings: Settings

    def pool(self, *pids: int, restarts: int = 0) -> None:
        write_pool(self.state_dir, [
            PoolSlot(slot=i, pid=pid, restarts=restarts, started_at=time.time() - 100)
            for i, pid in enumerate(pids)
        ])

    def consumer(self, slot: int, pid: int, state: str = "polling", *,
                 heartbeat_age: float = 1.0, poll_age: float | None = 2.0,
                 restarts: int = 0, last_error: str | None = None,
                 failing: str | None = None, failing_age: float = 1.0,
                 first_receive_age: float | None = None) -> None:
        now = time.time()
        write_consumer_status(self.state_dir, ConsumerStatus(
            slot=slot, pid=pid, state=ConsumerState(state), restarts=restarts,
            started_at=now - 100,
            heartbeat_at=now - heartbeat_age,
            last_poll_at=None if poll_age is None else now - poll_age,
            first_receive_at=None if first_receive_age is None else now - first_receive_age,
            last_error=last_error,
            failing=failing, failing_at=None if failing is None else now - failing_age,
        ))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # create_app also validates the environment's settings.
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # MultiProcessCollector reads the variable when /metrics or /health builds it, per request.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    settings = Settings(state_dir=str(state_dir), consumers=2, heartbeat_timeout_seconds=60.0,
                        health_max_poll_age_seconds=60.0)
    return Env(state_dir, metrics_dir, settings)


@pytest.fixture
def app(env: Env) -> Flask:
    app = create_app({"SHELVER_SETTINGS": env.settings, "TESTING": True})
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def by_slot(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {c["slot"]: c for c in body["consumers"]}


# -- /health -------------------------------------------------------------------------------------

def test_health_is_ok_when_every_consumer_is_alive_and_polled_recently(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me, me, restarts=3)
    env.consumer(0, me, "polling", poll_age=5)

    response = client.get("/health")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == "ok"
    consumers = by_slot(body)
    assert set(consumers) == {0, 1}
    assert consumers[0]["pid"] == me
    assert consumers[0]["state"] == "polling"
    assert consumers[0]["alive"] is True
    assert consumers[0]["healthy"] is True
    assert consumers[0]["restarts"] == 3
    assert 5 <= consumers[0]["seconds_since_last_poll"] < 60
    assert body["totals"] == {"received": 0, "stored": 0, "dead_lettered": 0, "retried": 0}


def test_health_is_503_when_a_consumer_process_is_dead(env: Env, client: FlaskClient) -> None:
    me, gone = os.getpid(), dead_pid()
    env.pool(me, gone)
    env.consumer(0, me)
    env.consumer(1, gone)  # its status file is fresh, but the process is gone

    response = client.get("/health")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    consumers = by_slot(body)
    assert consumers[0]["healthy"] is True
    assert consumers[1]["pid"] == gone
    assert consumers[1]["alive"] is False
    assert consumers[1]["healthy"] is False
    assert consumers[1]["state"] == "unresponsive"


def test_health_is_503_when_a_consumer_stopped_beating(env: Env, client: FlaskClient) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "processing", heartbeat_age=120, poll_age=2)

    response = client.get("/health")

    assert response.status_code == 503
    [consumer, _] = response.get_json()["consumers"]
    assert consumer["alive"] is False
    assert consumer["state"] == "unresponsive"


def test_health_is_503_when_a_consumer_has_not_polled_for_too_long(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "backoff", poll_age=300, last_error="receive: EndpointConnectionError")

    response = client.get("/health")

    assert response.status_code == 503
    [consumer, _] = response.get_json()["consumers"]
    assert consumer["alive"] is True
    assert consumer["healthy"] is False
    assert consumer["state"] == "backoff"
    assert consumer["seconds_since_last_poll"] >= 300
    assert consumer["last_error"] == "receive: EndpointConnectionError"


@pytest.mark.parametrize(("failing_age", "status", "failing"), [
    # S3 is down: receives work, every message fails, the consumer pauses between batches.
    # Without `failing`, /health stayed 200 through a whole S3 outage (chaos suite, s3-outage).
    (2, 503, "SlowDown"),
    # Nothing came to prove S3 is back (an idle queue): the failure ages out like a poll does.
    (61, 200, None),
])
def test_health_is_503_while_whole_batches_fail_though_receives_succeed(
    env: Env, client: FlaskClient, failing_age: float, status: int, failing: str | None
) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "backoff", poll_age=3, failing="SlowDown", failing_age=failing_age)

    response = client.get("/health")

    assert response.status_code == status
    [consumer, _] = response.get_json()["consumers"]
    assert consumer["failing"] == failing
    assert consumer["healthy"] is (failing is None)
    assert client.get("/health/live").status_code == 200  # no reason to restart the pod


def test_health_is_503_when_a_consumer_never_polled(env: Env, client: FlaskClient) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "starting", poll_age=None)

    response = client.get("/health")

    assert response.status_code == 503
    [consumer, _] = response.get_json()["consumers"]
    assert consumer["seconds_since_last_poll"] is None
    assert consumer["healthy"] is False


def test_health_is_ok_while_the_first_long_polls_are_in_flight(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "polling", poll_age=None, first_receive_age=19)

    response = client.get("/health")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert by_slot(body)[0]["seconds_since_last_poll"] is None  # none completed yet


def test_health_is_degraded_when_the_first_receive_never_completes(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "polling", poll_age=None, first_receive_age=61)  # max age 60

    response = client.get("/health")

    assert (response.status_code, response.get_json()["status"]) == (503, "degraded")


def test_health_says_starting_while_consumers_start_and_nothing_failed(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "starting", poll_age=None)  # looking its queue up; slot 1: no file yet

    response = client.get("/health")

    assert (response.status_code, response.get_json()["status"]) == (503, "starting")


@pytest.mark.parametrize("failed", [
    {"state": "backoff", "last_error": "queue lookup: AWS.SimpleQueueService.NonExistentQueue"},
    {"state": "starting", "heartbeat_age": 90.0},  # stopped beating while starting
])
def test_health_is_degraded_not_starting_when_a_starting_consumer_failed(
    env: Env, client: FlaskClient, failed: dict[str, Any]
) -> None:
    me, parent = os.getpid(), os.getppid()  # two live processes: a status file each
    env.pool(me, parent)
    env.consumer(0, me, poll_age=None, **failed)
    env.consumer(1, parent, "polling", poll_age=None, first_receive_age=1)

    response = client.get("/health")

    assert (response.status_code, response.get_json()["status"]) == (503, "degraded")


def test_health_is_degraded_while_a_dead_consumer_is_replaced(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me, 0)  # slot 1: its consumer died, the pool restarts it
    env.consumer(0, me)

    response = client.get("/health")

    assert (response.status_code, response.get_json()["status"]) == (503, "degraded")


def test_health_reports_slots_without_status_or_process(env: Env, client: FlaskClient) -> None:
    env.pool(os.getpid(), 0)  # slot 0 spawned but not reporting yet, slot 1 being restarted

    response = client.get("/health")

    assert response.status_code == 503
    consumers = by_slot(response.get_json())
    assert consumers[0]["state"] == "starting"
    assert consumers[1]["state"] == "restarting"
    assert not consumers[0]["alive"] and not consumers[1]["alive"]


def test_health_is_503_when_the_pool_has_fewer_consumers_than_configured(
    env: Env, client: FlaskClient
) -> None:
    me = os.getpid()
    env.pool(me)  # configured: 2
    env.consumer(0, me)

    response = client.get("/health")

    assert response.status_code == 503
    body = response.get_json()
    # The pool has not published the new slot yet (a reload adding consumers), nothing failed.
    assert body["status"] == "starting"
    assert [c["healthy"] for c in body["consumers"]] == [True]


def test_health_is_503_before_the_pool_wrote_anything(client: FlaskClient) -> None:
    response = client.get("/health")

    assert response.status_code == 503
    assert response.get_json()["consumers"] == []


def test_health_totals_add_up_every_process_metric_files(env: Env, client: FlaskClient) -> None:
    env.pool(os.getpid(), os.getpid())
    script = (
        "from workers import metrics\n"
        "metrics.MESSAGES_RECEIVED.inc(7)\n"
        "metrics.BOOKS_STORED.labels(genre='scifi').inc(3)\n"
        "metrics.BOOKS_STORED.labels(genre='romance').inc(2)\n"
        "metrics.MESSAGES_DEAD_LETTERED.labels(reason='not_json').inc()\n"
        "metrics.MESSAGES_RETRIED.labels(reason='SlowDown').inc(4)\n"
    )
    for _ in range(2):  # two consumer processes, each with its own files
        subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, check=True, timeout=120,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(env.metrics_dir)},
        )

    body = client.get("/health").get_json()

    assert body["totals"] == {"received": 14, "stored": 10, "dead_lettered": 2, "retried": 8}


# -- /health/live --------------------------------------------------------------------------------

def test_live_stays_ok_when_consumers_beat_but_cannot_poll(env: Env, client: FlaskClient) -> None:
    # AWS is down: the consumers back off and keep beating, but no receive succeeds.
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "backoff", poll_age=None)

    assert client.get("/health").status_code == 503
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "alive": 2, "expected": 2}


def test_live_is_503_when_a_consumer_process_is_dead(env: Env, client: FlaskClient) -> None:
    me, gone = os.getpid(), dead_pid()
    env.pool(me, gone)
    env.consumer(0, me)
    env.consumer(1, gone)

    response = client.get("/health/live")

    assert response.status_code == 503
    assert response.get_json() == {"status": "down", "alive": 1, "expected": 2}


def test_live_is_503_when_the_pool_has_fewer_consumers_than_configured(
    env: Env, client: FlaskClient
) -> None:
    env.pool(os.getpid())
    env.consumer(0, os.getpid())

    response = client.get("/health/live")

    assert response.status_code == 503
    assert response.get_json() == {"status": "down", "alive": 1, "expected": 2}


# -- / (wake idle consumers) ---------------------------------------------------------------------

@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record every real signal sent by service.health; existence checks (signal 0) go through."""
    sent: list[tuple[int, int]] = []

    def fake_kill(pid: int, signum: int) -> None:
        if signum == 0:
            REAL_KILL(pid, 0)
        else:
            sent.append((pid, signum))

    # service.health calls os.kill through the os module: patch it there.
    monkeypatch.setattr(os, "kill", fake_kill)
    return sent


@pytest.fixture
def live_pids() -> Iterator[list[int]]:
    """Four live processes of our own, each with its own pid (and status file)."""
    processes = [subprocess.Popen(["sleep", "600"]) for _ in range(4)]
    try:
        yield [p.pid for p in processes]
    finally:
        for p in processes:
            REAL_KILL(p.pid, signal.SIGKILL)
            p.wait(30)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_trigger_signals_only_idle_consumers(
    env: Env, app: Flask, kills: list[tuple[int, int]], live_pids: list[int], method: str
) -> None:
    app.config["SHELVER_SETTINGS"] = Settings(state_dir=str(env.state_dir), consumers=6)
    idle, backoff, polling, processing = live_pids
    gone = dead_pid()
    env.pool(idle, backoff, polling, processing, gone, 0)
    env.consumer(0, idle, "idle")
    env.consumer(1, backoff, "backoff")
    env.consumer(2, polling, "polling")
    env.consumer(3, processing, "processing")
    env.consumer(4, gone, "idle")  # dead: never signalled

    response = app.test_client().open("/", method=method)

    assert response.status_code == 202
    # Not the one in a backoff: `/` must not end its pause (a load balancer's check would).
    body = response.get_json()
    assert body["triggered"] == 1
    assert kills == [(idle, signal.SIGUSR1)]
    # And it says what became of each slot, and why.
    assert body["consumers"] == {"woken": [0], "receiving": [2, 3], "backing_off": [1],
                                 "starting": [], "not_running": [4, 5]}
    assert body["detail"] == (
        "1 woken from the pause between polls; 2 already receiving (a long poll takes new "
        "messages as they arrive); 1 in a backoff after a failure, left to it; "
        "2 not running (see /health)")


def test_trigger_explains_why_it_woke_nobody_when_every_consumer_long_polls(
    env: Env, client: FlaskClient, kills: list[tuple[int, int]]
) -> None:
    me, parent = os.getpid(), os.getppid()
    env.pool(me, parent)
    env.consumer(0, me, "polling")
    env.consumer(1, parent, "polling")

    body = client.post("/").get_json()

    assert body == {
        "triggered": 0,
        "consumers": {"woken": [], "receiving": [0, 1], "backing_off": [], "starting": [],
                      "not_running": []},
        "detail": "nothing to wake; 2 already receiving (a long poll takes new messages as "
                  "they arrive)"}
    assert kills == []


def test_trigger_does_not_signal_an_idle_consumer_that_stopped_beating(
    env: Env, client: FlaskClient, kills: list[tuple[int, int]]
) -> None:
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me, "idle", heartbeat_age=600)

    response = client.post("/")

    assert response.get_json()["triggered"] == 0
    assert response.get_json()["consumers"]["not_running"] == [0, 1]
    assert kills == []


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A child process that writes a file when it receives SIGUSR1."""
    marker = tmp_path / "woken"
    script = (
        "import pathlib, signal, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "signal.signal(signal.SIGUSR1, lambda s, f: marker.write_text('woken'))\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        yield process, marker
    finally:
        process.kill()
        process.wait(30)


def test_trigger_really_wakes_an_idle_consumer_process(
    env: Env, client: FlaskClient, sleeper: tuple[subprocess.Popen[bytes], Path]
) -> None:
    process, marker = sleeper
    env.pool(process.pid, dead_pid())
    env.consumer(0, process.pid, "idle")

    response = client.post("/")

    assert response.status_code == 202
    assert response.get_json()["triggered"] == 1
    deadline = time.monotonic() + 30
    # write_text creates the file before it writes: wait for the content, not the name.
    while time.monotonic() < deadline and not (marker.exists() and marker.read_text()):
        time.sleep(0.02)
    assert marker.read_text() == "woken"
    assert process.poll() is None  # handled, not killed


# -- errors and /metrics -------------------------------------------------------------------------

def test_an_unknown_route_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/nope")

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "Not Found", "status": 404}


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/health"), ("PUT", "/"),
                                               ("POST", "/metrics")])
def test_a_wrong_method_is_a_json_405_with_allow(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method)

    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "Method Not Allowed", "status": 405}
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "GET" in allowed
    assert method not in allowed


def test_metrics_are_prometheus_text(env: Env, client: FlaskClient) -> None:
    subprocess.run(
        [sys.executable, "-c",
         "from workers import metrics; metrics.BOOKS_STORED.labels(genre='scifi').inc(5)"],
        cwd=REPO, check=True, timeout=120,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(env.metrics_dir)},
    )

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "version=" in response.headers["Content-Type"]
    text = response.get_data(as_text=True)
    assert "# TYPE shelver_books_stored_total counter" in text or \
        "# TYPE shelver_books_stored counter" in text
    assert 'shelver_books_stored_total{genre="scifi"} 5.0' in text


def scraped(client: FlaskClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family in /metrics: {sorted label pairs: value}."""
    text = client.get("/metrics").get_data(as_text=True)
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) if family.name == name
            for sample in family.samples}


def test_a_process_metrics_file_not_sized_yet_is_skipped(env: Env, client: FlaskClient) -> None:
    # prometheus_client creates a process's file, then sizes it: a read in between found it
    # empty and failed the whole collection, so /health and /metrics answered 500 while a
    # consumer started (chaos slow-s3), and for good after one was killed at that moment
    # (prometheus/client_python#1199).
    me = os.getpid()
    env.pool(me, me)
    env.consumer(0, me)
    env.consumer(1, me)
    subprocess.run(
        [sys.executable, "-c", "from workers import metrics; metrics.MESSAGES_RECEIVED.inc(3)"],
        cwd=REPO, check=True, timeout=120,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(env.metrics_dir)},
    )
    for name in ("counter", "histogram", "gauge_livemax"):
        (env.metrics_dir / f"{name}_{dead_pid()}.db").touch()

    health = client.get("/health")
    metrics = client.get("/metrics")

    assert health.status_code == 200
    assert health.get_json()["totals"]["received"] == 3
    assert metrics.status_code == 200
    assert "shelver_messages_received_total 3.0" in metrics.get_data(as_text=True)


def test_metrics_of_an_empty_directory_tell_only_the_build(client: FlaskClient) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    families = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))
                if f.samples}
    assert families == {"shelver_build_info"}


def test_build_info_names_the_versions_of_shelver_python_and_boto3(client: FlaskClient) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    assert scraped(client, "shelver_build_info") == {
        (("boto3", boto3.__version__), ("python", platform.python_version()),
         ("version", project["version"])): 1.0,
    }


def test_metric_labels_are_bounded_sets(env: Env, client: FlaskClient) -> None:
    """Genres, reasons, results, states, slots, threads, versions: never a book id, title or
    message id, which would make a series per message."""
    env.pool(os.getpid(), 0)
    env.consumer(0, os.getpid(), failing="SlowDown")
    labels = {name for value in vars(shelver_metrics).values()
              if isinstance(value, MetricWrapperBase) for name in value._labelnames}
    text = client.get("/metrics").get_data(as_text=True)
    labels |= {name for family in text_string_to_metric_families(text)
               for sample in family.samples for name in sample.labels}

    assert labels == {"genre", "reason", "result", "state", "slot", "thread", "version", "python",
                      "boto3"}


@pytest.mark.parametrize(("failing_age", "expected"), [
    (2, {(("reason", "SlowDown"), ("slot", "0")): 1.0}),
    (61, {}),  # aged out, exactly as /health's `failing`
])
def test_consumer_failing_is_what_health_reports(
    env: Env, client: FlaskClient, failing_age: float, expected: dict[object, float]
) -> None:
    me = os.getpid()
    env.pool(me, 0)
    env.consumer(0, me, "backoff", failing="SlowDown", failing_age=failing_age)

    assert scraped(client, "shelver_consumer_failing") == expected
    [health] = [c for c in client.get("/health").get_json()["consumers"] if c["slot"] == 0]
    assert health["failing"] == ("SlowDown" if expected else None)


def test_consumer_failing_is_gone_once_the_failure_clears_or_the_consumer_is_replaced(
    env: Env, client: FlaskClient
) -> None:
    me, gone = os.getpid(), dead_pid()
    env.pool(me, gone)
    env.consumer(0, me, failing="InternalError")
    env.consumer(1, gone, failing="SlowDown")
    assert set(scraped(client, "shelver_consumer_failing")) == {
        (("reason", "InternalError"), ("slot", "0")), (("reason", "SlowDown"), ("slot", "1"))}

    env.consumer(0, me, failing=None)  # a batch made progress
    env.pool(me, 0)  # slot 1's consumer died; the pool is respawning it

    assert scraped(client, "shelver_consumer_failing") == {}


# -- the factory ---------------------------------------------------------------------------------

def test_the_factory_reads_settings_from_the_environment(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUMERS", "3")
    monkeypatch.setenv("SHELVER_STATE_DIR", str(env.state_dir))

    app = create_app()

    settings = app.config["SHELVER_SETTINGS"]
    assert (settings.consumers, settings.state_dir) == (3, str(env.state_dir))
    body = orjson.loads(app.test_client().get("/health/live").get_data())
    assert body["expected"] == 3


def test_explicit_settings_do_not_read_the_environment(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUMERS", "0")  # invalid, and irrelevant when settings are given

    app = create_app({"SHELVER_SETTINGS": env.settings})

    assert app.config["SHELVER_SETTINGS"] is env.settings
