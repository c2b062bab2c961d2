"""A real consumer whose keeper or batch settle hits an exception nothing expected (a bug) ends
at once: logged with its traceback and counted; the pool replaces it and the replacement hands
back what it held; no crash is counted against the messages it was processing, and every book
is stored. Before, the keeper thread died alone (visibility extension and the orphan watch
gone, /health still 200) and a settle's exception was swallowed by its Future.

The bug is injected by tests/support/inject/sitecustomize.py, once, in the first consumer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import FaultProxy
from tests.support.shelver import REPO, Shelver
from workers.lease.crashes import REGISTRY_FILE

INJECT = REPO / "tests" / "support" / "inject"
# A held message comes back by itself only after this: what comes back sooner was handed back.
VISIBILITY = 300


@pytest.fixture
def stack(aws: Aws) -> Iterator[Stack]:
    with aws.cloned_stack(visibility_timeout=VISIBILITY) as clone:
        yield clone


def metric(shelver: Shelver, name: str) -> float:
    return shelver.metrics().get(name, 0.0)


@pytest.mark.parametrize("thread", ["keeper", "settle"])
def test_a_consumer_with_an_internal_error_is_replaced_and_its_messages_handed_back(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory,
        tmp_path: Path, thread: str):
    shelver = shelver_factory(
        stack, CONSUMERS="1", AWS_ENDPOINT_URL_S3=s3_proxy.url, PYTHONPATH=str(INJECT),
        SHELVER_TEST_FAULT=thread, SHELVER_TEST_FAULT_MARKER=str(tmp_path / "fault-injected"))
    shelver.wait_healthy()
    [first] = shelver.consumer_pids()
    # Slow writes: the keeper runs (every second) while the messages are in processing.
    s3_proxy.configure(delay_seconds=1.5, delay_methods={"PUT"})
    sent = [(f"g{n % 2}", book(f"b-{n}", f"Book {n}", "scifi")) for n in range(6)]
    aws.send(stack.input_url, sent)

    wait_until(lambda: metric(shelver, f'shelver_internal_errors_total{{thread="{thread}"}}')
               == 1, 60, 0.2, f"an internal error in the {thread} thread")
    wait_until(lambda: shelver.get("/health").status == 200
               and shelver.consumer_pids() not in ([first], [0]), 60, 0.2,
               "the consumer to be replaced")
    wait_until(lambda: aws.drained(stack.input_url), 90, 0.5, "the input queue to drain")

    assert metric(shelver, 'shelver_consumer_restarts_total{reason="died"}') == 1
    assert metric(shelver, "shelver_messages_recovered_total") > 0
    assert sorted(key for _, key in aws.objects(stack)) == sorted(
        f"Book {n}.json" for n in range(6))
    assert aws.counts(stack.dlq_url) == (0, 0)
    log = shelver.log()
    assert f"internal error in the {thread} thread" in log
    assert f"ValueError: {'HeldMessages.extend_due' if thread == 'keeper' else ''}" in log
    assert "handing back what 1 dead consumer(s) held" in log
    # Not the fault of what it was processing: no crash counted against any message.
    assert "was in processing when its consumer died" not in log
    assert not (shelver.state_dir / "recovery" / REGISTRY_FILE).exists()
