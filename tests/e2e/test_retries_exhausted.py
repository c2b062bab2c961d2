"""A message that keeps failing is dead-lettered by Shelver, with a reason, before SQS's own
redrive (maxReceiveCount) could move it, and the valid books behind it in its group, which SQS
received with it every time, are stored in order instead of following it there unattempted."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import FaultProxy
from workers.aws.sqs import DETAIL_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE

MAX_RECEIVE_COUNT = 4
GROUP = "shelf"


@pytest.fixture
def stack(aws: Aws) -> Iterator[Stack]:
    with aws.cloned_stack(versioned=True, max_receive_count=MAX_RECEIVE_COUNT) as clone:
        yield clone


def test_a_head_that_always_fails_is_dead_lettered_and_its_followers_are_stored(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    # Every write of the head's key is refused (403: the role may not write it), the rest of
    # its group is valid and waits behind it.
    s3_proxy.configure(deny=lambda method, path: method == "PUT" and "Refused" in path)
    shelver = shelver_factory(stack, CONSUMERS="1", AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    followers = [book("f-1", "Follower", "scifi", version=1), book("f-2", "Other", "scifi"),
                 book("f-1", "Follower", "scifi", version=2)]
    ids = aws.send(stack.input_url, [(GROUP, book("h-1", "Refused", "scifi"))]
                   + [(GROUP, body) for body in followers])

    wait_until(lambda: aws.drained(stack.input_url), 120, 0.3, "the input queue to drain")
    dead_letters = aws.receive_all(stack.dlq_url, expect=1)
    assert [m.get("MessageAttributes", {}).get(REASON_ATTRIBUTE, {}).get("StringValue")
            for m in dead_letters] == ["retries_exhausted"], \
        "the DLQ must hold the head alone, dead-lettered by Shelver with its reason"
    attributes = dead_letters[0]["MessageAttributes"]
    assert attributes[ORIGINAL_ID_ATTRIBUTE]["StringValue"] == ids[0]
    detail = attributes[DETAIL_ATTRIBUTE]["StringValue"]
    assert "AccessDenied" in detail and f"receive {MAX_RECEIVE_COUNT - 1} " in detail
    assert s3_proxy.counters()["denied"] == MAX_RECEIVE_COUNT - 1
    # The followers are stored, each version once and in send order.
    etags = {key: [etag for _, etag in reversed(history)]
             for key, history in aws.object_versions(stack.buckets["scifi"]).items()}
    assert etags == {
        "Follower.json": [hashlib.md5(orjson.dumps(body)).hexdigest()
                          for body in (followers[0], followers[2])],
        "Other.json": [hashlib.md5(orjson.dumps(followers[1])).hexdigest()]}
    metrics = shelver.metrics()
    assert metrics['shelver_messages_dead_lettered_total{reason="retries_exhausted"}'] == 1
    assert metrics['shelver_books_stored_total{genre="scifi"}'] == 3
    # The default crash limit (3) leaves a crashing message no receive to spare on this queue.
    assert "CRASH_DEAD_LETTER_AFTER=3 must be below 3" in shelver.log()
