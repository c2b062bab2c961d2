"""The consumer pool under gunicorn: restarts, wake-ups, signals, orphans, configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import orjson

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.shelver import GUNICORN, REPO, Shelver
from workers.pool import stop_deadline
from workers.settings import Settings


def _slot(shelver: Shelver, slot: int) -> dict[str, object]:
    consumers = shelver.get("/health").body["consumers"]
    return next(c for c in consumers if c["slot"] == slot)


def test_a_killed_consumer_is_replaced(stack: Stack, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    victim = _slot(shelver, 0)["pid"]
    os.kill(victim, signal.SIGKILL)  # type: ignore[arg-type]

    def replaced() -> bool:
        response = shelver.get("/health")
        slot0 = next(c for c in response.body["consumers"] if c["slot"] == 0)
        return response.status == 200 and slot0["pid"] != victim and slot0["restarts"] == 1
    wait_until(replaced, 30, 0.2, "/health 200 with slot 0 restarted once")
    assert _slot(shelver, 1)["restarts"] == 0
    assert shelver.metrics()['shelver_consumer_restarts_total{reason="died"}'] == 1
    assert shelver.metrics()["shelver_consumers_alive"] == 2


def test_a_consumer_that_stops_beating_is_killed_and_replaced(stack: Stack,
                                                              shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack, CONSUMER_HEARTBEAT_TIMEOUT_SECONDS="10")
    shelver.wait_healthy()
    frozen = _slot(shelver, 1)["pid"]
    os.kill(frozen, signal.SIGSTOP)  # type: ignore[arg-type]

    wait_until(lambda: _slot(shelver, 1)["pid"] != frozen and shelver.get("/health").status == 200,
               40, 0.5, "the frozen consumer to be replaced")
    assert shelver.metrics()['shelver_consumer_restarts_total{reason="heartbeat"}'] == 1
    assert "has not beaten for" in shelver.log()


def test_repeated_crashes_back_off(stack: Stack, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack, CONSUMERS="1")
    shelver.wait_healthy()
    # Four kills: the first counts as a quick crash only if start-up took under 10 s
    # (QUICK_CRASH_SECONDS), so on a loaded machine the delays are 0, 0, 2, 4 s, not 0, 2, 4, 8.
    for _ in range(4):
        pid = _slot(shelver, 0)["pid"]
        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]

        def replaced(old: object = pid) -> bool:
            return _slot(shelver, 0)["pid"] not in (0, old)
        wait_until(replaced, 30, 0.1, "the consumer to be replaced")
    # The first quick crash restarts at once, the second waits 2 s, the third 4 s.
    assert "restarting in 0 s" in shelver.log()
    assert "restarting in 2 s" in shelver.log()
    assert "restarting in 4 s" in shelver.log()


def test_trigger_wakes_idle_consumers_to_poll_now(aws: Aws, stack: Stack,
                                                   shelver_factory: ShelverFactory):
    # Poll once a minute unless woken: only `/` can explain a prompt pick-up.
    shelver = shelver_factory(stack, WAIT_TIME_SECONDS="0", POLL_INTERVAL_SECONDS="120",
                              HEALTH_MAX_POLL_AGE_SECONDS="300")
    shelver.wait_healthy()
    wait_until(lambda: all(c["state"] == "idle" for c in shelver.get("/health").body["consumers"]),
               20, 0.2, "both consumers idle")
    aws.send(stack.input_url, [("wake", book("w-1", "Wake Up", "scifi"))])

    response = shelver.post("/")
    assert response.status == 202
    assert response.body["triggered"] == 2
    assert response.body["consumers"]["woken"] == [0, 1]
    wait_until(lambda: aws.objects(stack), 20, 0.2, "the book to be stored after the trigger")
    assert shelver.get("/").status == 202


def test_sigterm_stops_everything_cleanly(stack: Stack, shelver_factory: ShelverFactory):
    # The default 20 s long poll: a stop abandons it instead of waiting it out.
    shelver = shelver_factory(stack, WAIT_TIME_SECONDS="20", HEALTH_MAX_POLL_AGE_SECONDS="60",
                              CONSUMER_HEARTBEAT_TIMEOUT_SECONDS="60")
    shelver.wait_healthy()
    shelver.signal(signal.SIGTERM)

    assert shelver.wait_exit(15) == 0
    wait_until(lambda: shelver.processes() == [], 5, 0.1, "no process left")
    log = shelver.log()
    assert "Traceback" not in log
    assert log.count("stopped") >= 2 and "consumer pool stopped" in log


def test_a_stop_kills_what_hangs_within_the_stop_deadline(stack: Stack,
                                                          shelver_factory: ShelverFactory):
    # The worst stop: an HTTP worker and a consumer frozen, so neither exits by itself. gunicorn
    # KILLs the worker after its graceful_timeout, the pool KILLs the consumer at its deadline:
    # the whole stop ends within stop_deadline, which a pod's grace period is held above
    # (tests/deploy). Short consumer timeouts keep the test quick.
    shelver = shelver_factory(stack, CONSUMER_STOP_TIMEOUT_SECONDS="2")
    shelver.wait_healthy()
    roles = shelver.roles()
    for role in ("http worker", "consumer"):
        os.kill(next(pid for pid, r in roles.items() if r == role), signal.SIGSTOP)
    shelver.signal(signal.SIGTERM)

    # Generous slack over the deadline: this proves the stop ends, not how fast.
    assert shelver.wait_exit(stop_deadline(Settings.from_env(shelver.full_env())) + 30) == 0
    wait_until(lambda: shelver.processes() == [], 5, 0.1, "no process left")
    assert "consumer pool stopped" in shelver.log()


def test_sigint_stops_everything_cleanly(stack: Stack, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    shelver.signal(signal.SIGINT)

    assert shelver.wait_exit(60) == 0
    wait_until(lambda: shelver.processes() == [], 5, 0.1, "no process left")
    assert "Traceback" not in shelver.log()


def test_sigkill_of_the_master_leaves_no_orphan(stack: Stack, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    consumers = shelver.consumer_pids()
    shelver.signal(signal.SIGKILL)
    shelver.wait_exit(10)

    wait_until(lambda: not set(consumers) & set(shelver.processes()), 5, 0.05,
               "the consumers to notice and exit")
    wait_until(lambda: shelver.processes() == [], 10, 0.1, "every process to exit")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", shelver.port)) != 0, "the port is still held"


def test_sighup_replaces_consumers_gracefully(aws: Aws, stack: Stack,
                                              shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    before = set(shelver.consumer_pids())
    shelver.signal(signal.SIGHUP)

    wait_until(lambda: not before & set(shelver.consumer_pids())
               and shelver.get("/health").status == 200, 30, 0.3, "a new generation")
    wait_until(lambda: not before & set(shelver.processes()), 30, 0.3,
               "the old consumers to exit")
    assert all(c["restarts"] == 0 for c in shelver.get("/health").body["consumers"])
    aws.send(stack.input_url, [("hup", book("h-1", "After Reload", "romance"))])
    wait_until(lambda: aws.objects(stack), 20, 0.2, "a book stored after the reload")
    assert "Traceback" not in shelver.log()


def test_a_bad_setting_stops_start_up_naming_the_variable(aws_env: dict[str, str], run_dir):
    shelver = Shelver(env={**aws_env, "CONSUMERS": "many"}, run_dir=run_dir)
    result = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py"], cwd=REPO,
                            env=shelver.full_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "CONSUMERS='many' is not valid: expected an integer from 1 to 64" in result.stderr
    assert "Traceback" not in result.stderr


def test_health_reports_consumers_and_totals(aws: Aws, stack: Stack,
                                             shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    aws.send(stack.input_url, [("h", book(f"t-{n}", f"Totals {n}", "scifi")) for n in range(7)]
             + [("h", b"{broken")])
    wait_until(lambda: aws.drained(stack.input_url), 30, 0.3, "the input queue to drain")
    # /health is ok from a consumer's first long poll in flight, so the one that took no book
    # may not have finished a poll yet when the other has drained the queue.
    wait_until(lambda: all(c["seconds_since_last_poll"] is not None
                           for c in shelver.get("/health").body["consumers"]),
               30, 0.3, "every consumer to finish a poll")

    body = shelver.get("/health").body
    assert body["status"] == "ok"
    assert body["totals"] == {"received": 8, "stored": 7, "dead_lettered": 1, "retried": 0}
    assert sorted(c["slot"] for c in body["consumers"]) == [0, 1]
    for consumer in body["consumers"]:
        assert consumer["restarts"] == 0
        assert consumer["seconds_since_last_poll"] < 15
        assert consumer["state"] in {"polling", "processing"}
    assert orjson.loads(aws.get(stack.buckets["scifi"], "Totals 0.json")[0])["id"] == "t-0"
