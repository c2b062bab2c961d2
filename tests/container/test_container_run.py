"""Shelver's image run as an orchestrator runs it: read-only root, uid 10001, a tmpfs for /tmp,
against the test session's LocalStack; stopped by the engine mid-drain, and killed."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.chaos.engine import Row, check_storage
from tests.chaos.workload import build_workload
from tests.container.conftest import ContainerFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import FaultProxy
from tests.support.shelver import TEST_DEFAULTS
from workers.pool import stop_deadline
from workers.settings import Settings

# podman stop's grace period: past the stop deadline of the settings the tests run with.
GRACE_SECONDS = math.ceil(stop_deadline(Settings.from_env(TEST_DEFAULTS))) + 10
EXIT_KILLED = 137  # 128 + SIGKILL


@pytest.fixture
def versioned_stack(aws: Aws) -> Iterator[Stack]:
    # A killed container's messages come back after the visibility timeout: keep it short.
    with aws.cloned_stack(visibility_timeout=5, versioned=True) as stack:
        yield stack


def stored_titles(aws: Aws, stack: Stack) -> set[str]:
    return {key.removesuffix(".json") for bucket in stack.buckets.values()
            for key in aws.keys(bucket)}


def test_books_are_stored_by_a_read_only_container_running_as_uid_10001(
        container_factory: ContainerFactory, aws: Aws, stack: Stack):
    container = container_factory(**stack.shelver_env())
    container.wait_healthy(120)
    books = [book(f"c-{n}", f"Container Book {n}", ("scifi", "romance")[n % 2])
             for n in range(20)]

    aws.send(stack.input_url, [(f"g{n % 4}", b) for n, b in enumerate(books)])

    wait_until(lambda: aws.drained(stack.input_url), 120, 0.5, "the input queue to drain")
    for b in books:
        body, _ = aws.get(stack.buckets[b["genre"]], f"{b['title']}.json")
        assert body == orjson.dumps(b)
    health = container.get("/health")
    assert health.status == 200, health.body
    assert health.body["totals"]["stored"] == 20
    assert container.get("/health/live").status == 200
    metrics = container.metrics()
    assert metrics['shelver_books_stored_total{genre="scifi"}'] == 10
    assert metrics['shelver_books_stored_total{genre="romance"}'] == 10
    assert container.healthcheck() == 0
    uid_line = next(line for line in Path(f"/proc/{container.host_pid()}/status").read_text()
                    .splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["10001"] * 4
    refused = container.exec("touch", "/app/written")
    assert refused.returncode != 0
    assert b"Read-only file system" in refused.stderr


def test_an_engine_stop_mid_drain_exits_0_and_leaves_nothing_in_flight(
        container_factory: ContainerFactory, aws: Aws, stack: Stack, s3_proxy: FaultProxy):
    s3_proxy.configure(jitter_seconds=2.0)  # every S3 call 0-2 s slower: writes in progress
    env = {**stack.shelver_env(), "AWS_ENDPOINT_URL_S3": s3_proxy.url}
    container = container_factory(**env)
    container.wait_healthy(120)
    titles = {f"Stop-{uuid.uuid4().hex[:6]}-{n}" for n in range(60)}
    aws.send(stack.input_url, [(f"g{n % 8}", book(title, title, "scifi"))
                               for n, title in enumerate(sorted(titles))])
    wait_until(lambda: stored_titles(aws, stack), 120, 0.5, "the first book stored")

    code = container.stop(GRACE_SECONDS)

    log = container.log()
    assert code == 0, log[-3000:]
    assert "consumer pool stopped" in log
    assert "Traceback" not in log
    visible, in_flight = aws.counts(stack.input_url)
    assert in_flight == 0
    stored = stored_titles(aws, stack)
    assert len(stored) < len(titles), "the stop came too late to find anything in progress"
    # Every book is stored or back on the queue; a second container finishes the work.
    assert len(stored) + visible >= len(titles)
    s3_proxy.heal()
    container_factory(**env).wait_healthy(120)
    wait_until(lambda: aws.drained(stack.input_url), 180, 0.5, "the input queue to drain")
    assert stored_titles(aws, stack) == titles


def test_a_container_killed_mid_drain_loses_nothing_and_keeps_order(
        container_factory: ContainerFactory, aws: Aws, versioned_stack: Stack,
        s3_proxy: FaultProxy):
    stack = versioned_stack
    s3_proxy.configure(jitter_seconds=0.5)
    env = {**stack.shelver_env(), "AWS_ENDPOINT_URL_S3": s3_proxy.url}
    workload = build_workload(messages=120, groups=12, poison_share=0.0,
                              run=uuid.uuid4().hex[:6])
    first = container_factory(**env)
    first.wait_healthy(120)
    ids = aws.send(stack.input_url, workload.pairs())
    wait_until(lambda: len(stored_titles(aws, stack)) >= 5, 120, 0.5, "some books stored")

    first.kill()

    assert wait_until(first.exit_code, 30, 0.5, "the container to end") == EXIT_KILLED
    assert not aws.drained(stack.input_url), "the kill came too late to find work left"
    s3_proxy.heal()
    container_factory(**env).wait_healthy(120)
    wait_until(lambda: aws.drained(stack.input_url), 240, 0.5, "the input queue to drain")
    row = Row("container-kill")
    check_storage(aws, stack, workload, ids, row)
    assert row.problems == []
    assert row.stored == len(workload.valid)
