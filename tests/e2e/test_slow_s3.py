"""Slow S3 behind a delaying proxy: visibility heartbeats and graceful shutdown mid-write."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import FaultProxy


@pytest.fixture
def short_visibility_stack(aws: Aws) -> Iterator[Stack]:
    # 4 s: the keeper checks every second and extends with 2 s left, a margin a loaded machine
    # keeps; still shorter than one delayed put.
    with aws.cloned_stack(visibility_timeout=4) as stack:
        yield stack


def test_processing_longer_than_the_visibility_timeout_is_not_redelivered(
        aws: Aws, short_visibility_stack: Stack, s3_proxy: FaultProxy,
        shelver_factory: ShelverFactory):
    stack = short_visibility_stack
    s3_proxy.configure(delay_seconds=5.0, delay_methods={"PUT"})
    shelver = shelver_factory(stack, AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    # Two messages per group: the second waits ~5 s behind the first, itself held 5 s.
    items = [(f"slow-{n % 4}", book(f"s-{n}", f"Slow {n}", "romance")) for n in range(8)]
    aws.send(stack.input_url, items)

    wait_until(lambda: aws.drained(stack.input_url), 90, 0.5, "the input queue to drain")
    assert {key for _, key in aws.objects(stack)} == {f"Slow {n}.json" for n in range(8)}
    metrics = shelver.metrics()
    assert metrics["shelver_messages_received_total"] == 8  # none received twice
    assert s3_proxy.counters()["delayed"] == 8  # one write per book: no duplicate file
    assert metrics["shelver_visibility_extensions_total"] > 0
    assert aws.counts(stack.dlq_url) == (0, 0)


def test_sigterm_mid_write_leaves_every_message_stored_or_back_in_the_queue(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    s3_proxy.configure(delay_seconds=3.0, delay_methods={"PUT"})
    shelver = shelver_factory(stack, AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    sent = {f"t-{n}" for n in range(30)}
    aws.send(stack.input_url, [(f"term-{n % 10}", book(f"t-{n}", f"Term {n}", "scifi"))
                               for n in range(30)])
    wait_until(lambda: s3_proxy.counters()["delayed"] >= 1, 30, 0.1, "a write in progress")
    shelver.signal(signal.SIGTERM)

    assert shelver.wait_exit(90) == 0
    # multiprocessing's resource tracker leaves when the master's end of its pipe closes: a few
    # milliseconds after the master itself.
    wait_until(lambda: shelver.processes() == [], 10, 0.1, "no process left")
    visible, in_flight = aws.counts(stack.input_url)
    assert in_flight == 0, "messages left invisible: they were neither deleted nor released"
    stored = {orjson.loads(body)["id"] for body in aws.objects(stack).values()}
    queued = {orjson.loads(m["Body"])["id"]
              for m in aws.receive_all(stack.input_url, wait=60, expect=visible)}
    assert stored, "nothing was finished before the stop"
    assert queued, "everything was finished: the test did not stop mid-run"
    assert not stored & queued, "a stored message was not deleted"
    assert stored | queued == sent
    assert visible == len(queued)
    log = shelver.log()
    assert "Traceback" not in log
    assert "consumer pool stopped" in log


def test_an_s3_outage_pauses_receiving_then_everything_recovers(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    s3_proxy.configure(error_rate=1.0)  # every S3 call answered 500/503
    shelver = shelver_factory(stack, AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    aws.send(stack.input_url, [(f"out-{n % 3}", book(f"o-{n}", f"Outage {n}", "scifi"))
                               for n in range(6)])

    wait_until(lambda: "pausing receives" in shelver.log(), 60, 0.5, "the circuit breaker")
    assert shelver.get("/health/live").status == 200  # AWS trouble is no reason to restart us
    retried = {name: value for name, value in shelver.metrics().items()
               if name.startswith("shelver_messages_retried_total")}
    assert sum(retried.values()) >= 1, retried
    s3_proxy.configure(error_rate=0.0)

    wait_until(lambda: aws.drained(stack.input_url), 90, 0.5, "the input queue to drain")
    assert {key for _, key in aws.objects(stack)} == {f"Outage {n}.json" for n in range(6)}
    assert aws.counts(stack.dlq_url) == (0, 0)
