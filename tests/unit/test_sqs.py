from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from workers.aws.clients import make_session, make_sqs
from workers.aws.sqs import (
    DETAIL_ATTRIBUTE,
    ORIGINAL_ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    Message,
    QueueInfo,
    SqsTransport,
    chunks,
    discover_queue,
)

REGION = "us-east-1"
INPUT = "books.fifo"
DLQ = "books-dlq.fifo"
VISIBILITY = 45


@dataclass
class Recorder:
    """Wraps a boto3 client and records the operations called on it."""

    client: Any
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return method(**kwargs)

        return call


@dataclass
class Queues:
    sqs: Any
    input_url: str
    dlq_url: str
    plain_url: str  # a FIFO queue without RedrivePolicy


@pytest.fixture
def queues(empty_moto_server: str, aws_at: Callable[[str], None], sqs_client: str) -> Queues:
    """The queues, and the SQS_CLIENT under test as a consumer makes it, on moto over HTTP."""
    aws_at(empty_moto_server)
    sqs = make_sqs(make_session(), sqs_client, read_timeout=10, connections=4)
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    dlq_url = sqs.create_queue(QueueName=DLQ, Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    redrive = orjson.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).decode()
    input_url = sqs.create_queue(
        QueueName=INPUT,
        Attributes={**fifo, "VisibilityTimeout": str(VISIBILITY), "RedrivePolicy": redrive},
    )["QueueUrl"]
    plain_url = sqs.create_queue(QueueName="plain.fifo", Attributes=fifo)["QueueUrl"]
    return Queues(sqs, input_url, dlq_url, plain_url)


def transport_for(queues: Queues) -> SqsTransport:
    return SqsTransport(queues.sqs, queues.sqs, discover_queue(queues.sqs, INPUT))


def send(queues: Queues, body: str, group: str, dedup: str, url: str | None = None) -> str:
    response = queues.sqs.send_message(
        QueueUrl=url or queues.input_url, MessageBody=body, MessageGroupId=group,
        MessageDeduplicationId=dedup,
    )
    return str(response["MessageId"])


def receive_all(transport: SqsTransport, expected: int) -> list[Message]:
    received: list[Message] = []
    for _ in range(expected + 5):
        if len(received) >= expected:
            break
        received.extend(transport.receive(0, 30))
    return received


# -- discovery -----------------------------------------------------------------------------------

def test_discover_queue_by_name_finds_url_visibility_and_dead_letter_queue(queues: Queues) -> None:
    info = discover_queue(queues.sqs, INPUT)

    size = int(queues.sqs.get_queue_attributes(QueueUrl=queues.input_url, AttributeNames=[
        "MaximumMessageSize"])["Attributes"]["MaximumMessageSize"])
    assert info == QueueInfo(url=queues.input_url, visibility_timeout=VISIBILITY,
                             dead_letter_url=queues.dlq_url, max_receive_count=5, fifo=True,
                             max_message_size=size)


def test_discover_queue_tells_a_standard_queue(queues: Queues) -> None:
    queues.sqs.create_queue(QueueName="standard", Attributes={"MaximumMessageSize": "2048"})

    info = discover_queue(queues.sqs, "standard")

    assert (info.fifo, info.max_message_size) == (False, 2048)


def test_discover_queue_by_url_does_not_look_the_name_up(queues: Queues) -> None:
    recorder = Recorder(queues.sqs)

    info = discover_queue(recorder, queues.input_url)

    assert info.url == queues.input_url
    assert info.dead_letter_url == queues.dlq_url
    # The only get_queue_url is for the DLQ named in the RedrivePolicy.
    lookups = [kwargs["QueueName"] for name, kwargs in recorder.calls if name == "get_queue_url"]
    assert lookups == [DLQ]


def test_a_queue_without_redrive_policy_has_no_dead_letter_queue(queues: Queues) -> None:
    info = discover_queue(queues.sqs, "plain.fifo")

    assert info.url == queues.plain_url
    assert info.dead_letter_url is None
    assert info.max_receive_count is None
    assert info.visibility_timeout == 30  # the SQS default


def test_discover_queue_propagates_a_missing_queue(queues: Queues) -> None:
    with pytest.raises(queues.sqs.exceptions.QueueDoesNotExist):
        discover_queue(queues.sqs, "missing.fifo")


# -- receive -------------------------------------------------------------------------------------

def test_receive_returns_messages_with_group_and_receive_count(queues: Queues) -> None:
    transport = transport_for(queues)
    message_id = send(queues, '{"id": "b-1"}', "group-1", "d-1")

    [message] = transport.receive(0, 30)

    assert message.message_id == message_id
    assert message.body == '{"id": "b-1"}'
    assert message.group_id == "group-1"
    assert message.receive_count == 1
    assert message.receipt_handle
    assert isinstance(message.sequence, int)  # FIFO's SequenceNumber, asked for by name
    assert message.sent_at is not None and abs(message.sent_at - time.time()) < 60  # Unix s

    assert transport.change_visibility([(message, 0)]) == []
    [again] = transport.receive(0, 30)
    assert again.message_id == message_id
    assert again.receive_count == 2
    assert again.sequence == message.sequence


def test_receive_of_an_empty_queue_is_empty(queues: Queues) -> None:
    assert transport_for(queues).receive(0, 30) == []


def test_receive_asks_for_a_full_batch_with_the_given_wait(queues: Queues) -> None:
    recorder = Recorder(queues.sqs)
    transport = SqsTransport(recorder, queues.sqs, discover_queue(queues.sqs, INPUT))

    transport.receive(0, 30)

    [(name, kwargs)] = recorder.calls
    assert name == "receive_message"
    assert kwargs["QueueUrl"] == queues.input_url
    assert kwargs["MaxNumberOfMessages"] == 10
    assert kwargs["WaitTimeSeconds"] == 0
    assert kwargs["VisibilityTimeout"] == 30  # the lease, not the queue's own timeout


# -- delete and visibility -------------------------------------------------------------------------

def test_delete_of_more_than_ten_messages_is_batched(queues: Queues) -> None:
    for i in range(23):
        send(queues, f"body-{i}", f"g-{i}", f"d-{i}")
    transport = transport_for(queues)
    received = receive_all(transport, 23)
    assert len(received) == 23
    recorder = Recorder(queues.sqs)
    transport.client = recorder

    failed = transport.delete(received)

    assert failed == []
    sizes = [len(kwargs["Entries"]) for name, kwargs in recorder.calls
             if name == "delete_message_batch"]
    assert sizes == [10, 10, 3]
    assert transport.depth() == (0, 0)


def test_delete_returns_the_messages_sqs_did_not_delete(queues: Queues) -> None:
    send(queues, "body", "g", "d")
    transport = transport_for(queues)
    [good] = transport.receive(0, 30)
    bad = Message("not-a-message", "not-a-receipt-handle", "x", "g", 1)

    failed = transport.delete([good, bad])

    assert failed == [bad]
    assert transport.depth() == (0, 0)


def test_change_visibility_of_many_messages_is_batched(queues: Queues) -> None:
    for i in range(12):
        send(queues, f"body-{i}", f"g-{i}", f"d-{i}")
    transport = transport_for(queues)
    received = receive_all(transport, 12)
    recorder = Recorder(queues.sqs)
    transport.client = recorder

    failed = transport.change_visibility([(m, 0) for m in received])

    assert failed == []
    batches = [kwargs["Entries"] for name, kwargs in recorder.calls
               if name == "change_message_visibility_batch"]
    assert [len(b) for b in batches] == [10, 2]
    assert {e["VisibilityTimeout"] for b in batches for e in b} == {0}
    assert transport.depth() == (12, 0)


def test_chunks() -> None:
    assert [list(c) for c in chunks(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([])) == []


# -- dead-lettering ------------------------------------------------------------------------------

def receive_dead_letters(queues: Queues) -> list[dict[str, Any]]:
    response = queues.sqs.receive_message(
        QueueUrl=queues.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
    )
    return list(response.get("Messages", []))


def test_dead_letter_copies_the_body_untouched_with_the_reasons(queues: Queues) -> None:
    body = '  {"title": "Caf\u00e9 \U0001f680",  "genre": 42}\n'
    message_id = send(queues, body, "group-7", "d-7")
    transport = transport_for(queues)
    [message] = transport.receive(0, 30)

    transport.dead_letter(message, "wrong_type", "field 'genre' must be a string, got number")

    [dead] = receive_dead_letters(queues)
    assert dead["Body"] == body
    assert dead["Attributes"]["MessageGroupId"] == "group-7"
    assert dead["Attributes"]["MessageDeduplicationId"] == message_id
    attributes = {name: (value["DataType"], value["StringValue"])
                  for name, value in dead["MessageAttributes"].items()}
    assert attributes == {
        REASON_ATTRIBUTE: ("String", "wrong_type"),
        DETAIL_ATTRIBUTE: ("String", "field 'genre' must be a string, got number"),
        ORIGINAL_ID_ATTRIBUTE: ("String", message_id),
    }
    assert (REASON_ATTRIBUTE, DETAIL_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE) == (
        "shelver-reason", "shelver-detail", "shelver-original-message-id"
    )
    # Moving is copy-then-delete: the input queue still holds the original until it is deleted.
    assert transport.depth() == (0, 1)


def test_dead_letter_shortens_a_long_detail(queues: Queues) -> None:
    send(queues, "x", "g", "d")
    transport = transport_for(queues)
    [message] = transport.receive(0, 30)

    transport.dead_letter(message, "not_json", "y" * 5000)

    [dead] = receive_dead_letters(queues)
    assert dead["MessageAttributes"][DETAIL_ATTRIBUTE]["StringValue"] == "y" * 1000


def test_dead_letter_without_a_dead_letter_queue_refuses(queues: Queues) -> None:
    info = discover_queue(queues.sqs, "plain.fifo")
    transport = SqsTransport(queues.sqs, queues.sqs, info)

    with pytest.raises(RuntimeError, match="no dead-letter queue"):
        transport.dead_letter(Message("m", "rh", "x", "g", 1), "not_json", "detail")


# -- depth ---------------------------------------------------------------------------------------

def test_depth_counts_visible_and_in_flight_messages(queues: Queues) -> None:
    transport = transport_for(queues)
    assert transport.depth() == (0, 0)
    for i in range(3):
        send(queues, f"b{i}", f"g{i}", f"d{i}")

    assert transport.depth() == (3, 0)

    queues.sqs.receive_message(QueueUrl=queues.input_url, MaxNumberOfMessages=1)
    assert transport.depth() == (2, 1)


def test_dead_letter_depth_counts_the_dead_letter_queue(queues: Queues) -> None:
    transport = transport_for(queues)
    send(queues, "x", "g", "d", url=queues.dlq_url)
    send(queues, "y", "g", "e", url=queues.dlq_url)

    assert transport.dead_letter_depth() == (2, 0)
    assert transport.depth() == (0, 0)


def test_dead_letter_depth_is_none_without_a_dead_letter_queue(queues: Queues) -> None:
    transport = SqsTransport(queues.sqs, queues.sqs, discover_queue(queues.sqs, "plain.fifo"))

    assert transport.dead_letter_depth() is None
