"""An invalid book whose body is near the input queue's MaximumMessageSize is still dead-lettered
at once, with its reason: SQS (and LocalStack) count the attributes toward the limit and refuse
the send with all of them, so Shelver sends again with a short detail, then without attributes,
instead of retrying the same refused send until the queue's redrive takes the message, with no
reason, hours later."""

from __future__ import annotations

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, wait_until
from workers.aws.sqs import DETAIL_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE

DEAD_LETTERED = 'shelver_messages_dead_lettered_total{reason="unknown_genre"}'
# Far below the redrive backstop (maxReceiveCount 30 receives, at 1-2 s of backoff each in
# tests), far above a prompt dead-lettering on a loaded machine.
PROMPTLY = 45


def body_of_size(size: int) -> bytes:
    """An invalid book (its genre has no bucket) of exactly `size` bytes; the genre is the
    padding, so the detail ("genre '...' has no bucket") is as long as details get."""
    record = {"id": "big-1", "title": "A Book Too Big To Explain", "genre": ""}
    padding = size - len(orjson.dumps(record))
    body = orjson.dumps({**record, "genre": "x" * padding})
    assert len(body) == size
    return body


@pytest.mark.parametrize(("room", "with_attributes"), [(300, True), (40, False)],
                         ids=["room-for-a-short-detail", "room-for-no-attributes"])
def test_an_invalid_book_near_the_size_limit_is_dead_lettered_at_once(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, room: int,
        with_attributes: bool):
    limit = int(aws.attributes(stack.input_url)["MaximumMessageSize"])
    assert int(aws.attributes(stack.dlq_url)["MaximumMessageSize"]) == limit
    body = body_of_size(limit - room)
    shelver = shelver_factory(stack, CONSUMERS="1")
    shelver.wait_healthy()
    [message_id] = aws.send(stack.input_url, [("big", body)])

    wait_until(lambda: shelver.metrics().get(DEAD_LETTERED) == 1, PROMPTLY, 0.5,
               "the book to be dead-lettered")
    [dead] = aws.receive_all(stack.dlq_url, wait=30, expect=1)
    assert dead["Body"].encode() == body
    assert dead["Attributes"]["MessageGroupId"] == "big"
    attributes = {name: value["StringValue"]
                  for name, value in dead.get("MessageAttributes", {}).items()}
    if with_attributes:
        detail = attributes.pop(DETAIL_ATTRIBUTE)
        assert detail == "genre '" + "x" * 93  # cut to 100 characters
        assert attributes == {REASON_ATTRIBUTE: "unknown_genre",
                              ORIGINAL_ID_ATTRIBUTE: message_id}
    else:
        assert attributes == {}
    wait_until(lambda: aws.drained(stack.input_url), 30, 0.5, "the input queue to drain")
    metrics = shelver.metrics()
    assert not {name: value for name, value in metrics.items()
                if name.startswith("shelver_messages_retried_total") and value}
    # Without attributes, the log line and the metric still say why.
    log = shelver.log()
    assert f"message {message_id} dead-lettered: unknown_genre" in log
    if not with_attributes:
        assert (f"refused message {message_id}" in log
                and "sending it again without attributes (reason unknown_genre)" in log)
