"""workers/books/payloads.py: pointer messages made by the real Amazon SQS Extended Client
(PyPI amazon-sqs-extended-client 1.0.1, against moto) are recognised and read; books are not
taken for pointers; a malformed pointer, a bucket off the allowlist, an oversized payload are
refused with their reason."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.extended_client import producer
from workers.books.payloads import (
    BUCKET_NOT_ALLOWED,
    POINTER_INVALID,
    SIZE_ATTRIBUTES,
    TOO_LARGE,
    InvalidPointer,
    PayloadPointer,
    PayloadRules,
    read_pointer,
)
from workers.destinations import parse_bucket_names

BUCKET = "acme-payloads"


class Queue:
    """A FIFO queue and a payload bucket in moto, the library producing into them, and the
    plain boto3 receive Shelver does."""

    def __init__(self) -> None:
        self.plain_sqs = boto3.client("sqs", region_name="us-east-1")
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.s3.create_bucket(Bucket=BUCKET)
        self.url = self.plain_sqs.create_queue(QueueName=f"q{uuid.uuid4().hex[:8]}.fifo",
                                               Attributes={"FifoQueue": "true"})["QueueUrl"]

    def send(self, body: str, group: str = "g", **options: Any) -> None:
        attributes = options.pop("MessageAttributes", {})
        producer(BUCKET, **options).send_message(
            QueueUrl=self.url, MessageBody=body, MessageGroupId=group,
            MessageDeduplicationId=uuid.uuid4().hex, MessageAttributes=attributes)

    def receive(self, attributes: bool = True) -> list[dict[str, Any]]:
        """Every message, each deleted after it is received (a FIFO group hands out one at a
        time), asking for the size attributes as Shelver's receive must."""
        asked = {"MessageAttributeNames": list(SIZE_ATTRIBUTES)} if attributes else {}
        messages = []
        while batch := self.plain_sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10,
                MessageSystemAttributeNames=["MessageGroupId"], **asked).get("Messages", []):
            for message in batch:
                self.plain_sqs.delete_message(QueueUrl=self.url,
                                              ReceiptHandle=message["ReceiptHandle"])
            messages += batch
        return messages

    def payload(self, pointer: PayloadPointer) -> bytes:
        body: bytes = self.s3.get_object(Bucket=pointer.bucket, Key=pointer.key)["Body"].read()
        return body


@pytest.fixture
def queue() -> Iterator[Queue]:
    with mock_aws():
        yield Queue()


def book(size: int, book_id: str = "b-1") -> str:
    """A book of exactly `size` bytes of UTF-8, most of it its summary."""
    head = f'{{"id":"{book_id}","title":"Big book {book_id}","genre":"scifi","summary":"'
    return head + "x" * (size - len(head) - 2) + '"}'


def pointer_of(message: dict[str, Any]) -> PayloadPointer | None:
    return read_pointer(message["Body"], message.get("MessageAttributes"))


# --- what the real producer sends ----------------------------------------------------------------


@pytest.mark.parametrize("size", [300_000, 2_000_000])
def test_a_payload_offloaded_by_the_library_is_found_by_its_pointer(queue: Queue,
                                                                    size: int) -> None:
    body = book(size)
    queue.send(body)
    [message] = queue.receive()
    pointer = pointer_of(message)
    assert pointer is not None
    assert (pointer.bucket, pointer.size) == (BUCKET, size)
    assert uuid.UUID(pointer.key).version == 4
    assert queue.payload(pointer) == body.encode()
    # What the message itself is: the library's JSON, with Python's spacing.
    assert message["Body"] == ('["software.amazon.payloadoffloading.PayloadS3Pointer", '
                               f'{{"s3BucketName": "{BUCKET}", "s3Key": "{pointer.key}"}}]')
    assert message["MessageAttributes"] == {
        "ExtendedPayloadSize": {"DataType": "Number", "StringValue": str(size)}}


def test_a_book_under_the_librarys_threshold_is_sent_as_it_is(queue: Queue) -> None:
    body = book(262_144 - 100)
    queue.send(body)
    [message] = queue.receive()
    assert message["Body"] == body and "MessageAttributes" not in message
    assert pointer_of(message) is None


def test_the_legacy_names_and_always_through_s3(queue: Queue) -> None:
    body = book(200)
    queue.send(body, always_through_s3=True, use_legacy_attribute=True)
    [message] = queue.receive()
    assert message["Body"].startswith('["com.amazon.sqs.javamessaging.MessageS3Pointer", ')
    assert set(message["MessageAttributes"]) == {"SQSLargePayloadSize"}
    pointer = pointer_of(message)
    assert pointer is not None and pointer.size == 200
    assert queue.payload(pointer) == body.encode()


def test_the_producers_own_s3key_attribute_is_the_payloads_key(queue: Queue) -> None:
    queue.send(book(300), always_through_s3=True, MessageAttributes={
        "S3Key": {"DataType": "String", "StringValue": "books/2024/big.json"}})
    [message] = queue.receive()
    assert pointer_of(message) == PayloadPointer(BUCKET, "books/2024/big.json", 300)


def test_a_receive_that_does_not_ask_for_the_size_still_finds_the_pointer(queue: Queue) -> None:
    queue.send(book(300_000))
    [message] = queue.receive(attributes=False)
    assert "MessageAttributes" not in message
    pointer = pointer_of(message)
    assert pointer is not None and pointer.size is None
    assert queue.payload(pointer) == book(300_000).encode()


def test_pointers_keep_their_groups_order(queue: Queue) -> None:
    bodies = {group: [book(300_000 + i, f"{group}-{i}") for i in range(3)]
              for group in ("g1", "g2")}
    for i in range(3):
        for group, sent in bodies.items():
            queue.send(sent[i], group=group)
    received: dict[str, list[bytes]] = {"g1": [], "g2": []}
    for message in queue.receive():
        pointer = pointer_of(message)
        assert pointer is not None
        received[message["Attributes"]["MessageGroupId"]].append(queue.payload(pointer))
    assert received == {group: [body.encode() for body in sent]
                        for group, sent in bodies.items()}


# --- recognising a pointer -----------------------------------------------------------------------

JAVA_POINTER = ('["software.amazon.payloadoffloading.PayloadS3Pointer",'
                '{"s3BucketName":"acme-payloads","s3Key":"8a499dfa-1104-41fc-9f21-3ca2c6bb2677"}]')


def test_the_java_librarys_compact_json_bytes_and_leading_whitespace_are_read() -> None:
    expected = PayloadPointer(BUCKET, "8a499dfa-1104-41fc-9f21-3ca2c6bb2677", 42)
    size = {"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "42"}}
    assert read_pointer(JAVA_POINTER, size) == expected
    assert read_pointer(b" \n\t" + JAVA_POINTER.encode(), size) == expected
    assert read_pointer(JAVA_POINTER, {"SQSLargePayloadSize": {
        "DataType": "Number.int", "StringValue": "42"}}) == expected


@pytest.mark.parametrize("body", [
    '{"id":"1","title":"Dune","genre":"scifi"}',
    b'{"id":"1","title":"Dune","genre":"scifi"}',
    "[1, 2]", '["software.amazon.payloadoffloading.Other", {}]', "[]", "[", "not json",
    '[["software.amazon.payloadoffloading.PayloadS3Pointer"]]', "",
])
def test_a_body_that_is_not_a_pointer_is_left_to_the_book_decoder(body: str | bytes) -> None:
    assert read_pointer(body, {}) is None
    assert read_pointer(body) is None


_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"


@pytest.mark.parametrize(("body", "attributes", "detail"), [
    ('{"id":"1"}', {"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "9"}},
     "declares an offloaded payload (ExtendedPayloadSize) but its body is not a pointer"),
    ("[1]", {"SQSLargePayloadSize": {"DataType": "Number", "StringValue": "9"}},
     "(SQSLargePayloadSize) but its body is not a pointer"),
    (JAVA_POINTER, {"ExtendedPayloadSize": {"DataType": "String", "StringValue": "42"}},
     "message attribute ExtendedPayloadSize must be a Number of bytes, is String '42'"),
    (JAVA_POINTER, {"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "-1"}},
     "must be a Number of bytes"),
    (JAVA_POINTER, {"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "4.2"}},
     "must be a Number of bytes"),
    (f'["{_CLASS}"]', None, f"a {_CLASS} must be followed by one object"),
    (f'["{_CLASS}", {{}}, 3]', None, "must be followed by one object"),
    (f'["{_CLASS}", "acme-payloads/key"]', None, "must be followed by one object"),
    (f'["{_CLASS}", {{"s3BucketName": "acme-payloads"}}]', None,
     "must have exactly s3BucketName and s3Key, has s3BucketName"),
    (f'["{_CLASS}", {{}}]', None, "has none"),
    (f'["{_CLASS}", {{"s3BucketName": "acme-payloads", "s3Key": "k", "s3VersionId": "v"}}]',
     None, "has s3BucketName, s3Key, s3VersionId"),
    (f'["{_CLASS}", {{"s3BucketName": "acme-payloads", "s3Key": 7}}]', None,
     "s3BucketName and s3Key must be strings"),
    (f'["{_CLASS}", {{"s3BucketName": "Acme_Payloads", "s3Key": "k"}}]', None,
     "s3BucketName: 'Acme_Payloads' is not a valid S3 bucket name"),
    (f'["{_CLASS}", {{"s3BucketName": "acme-payloads", "s3Key": ""}}]', None,
     "s3Key must be 1 to 1024 bytes"),
    (f'["{_CLASS}", {{"s3BucketName": "acme-payloads", "s3Key": "{"é" * 513}"}}]', None,
     "s3Key must be 1 to 1024 bytes"),
])
def test_a_pointer_that_cannot_be_read_is_invalid_with_its_detail(
        body: str, attributes: dict[str, Any] | None, detail: str) -> None:
    with pytest.raises(InvalidPointer, match=re.escape(detail)) as refused:
        read_pointer(body, attributes)
    assert refused.value.reason == POINTER_INVALID


# --- the operator's rules ------------------------------------------------------------------------

RULES = PayloadRules(buckets=frozenset({"acme-payloads", "acme-payloads-2"}),
                     max_bytes=10 * 1024 * 1024)


def test_a_pointer_to_an_allowed_bucket_within_the_size_is_admitted() -> None:
    RULES.admit(PayloadPointer("acme-payloads-2", "k", 10 * 1024 * 1024))
    RULES.admit(PayloadPointer("acme-payloads", "k"))


def test_a_bucket_off_the_allowlist_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(InvalidPointer, match=re.escape(
            "bucket 'acme-secrets' is not one of the payload buckets "
            "(acme-payloads, acme-payloads-2)")) as refused:
        RULES.admit(PayloadPointer("acme-secrets", "k", 10))
    assert refused.value.reason == BUCKET_NOT_ALLOWED


def test_a_payload_larger_than_allowed_is_refused_declared_or_found() -> None:
    with pytest.raises(InvalidPointer, match="the payload is 10,485,761 bytes, more than "
                       "10,485,760") as refused:
        RULES.admit(PayloadPointer("acme-payloads", "k", 10 * 1024 * 1024 + 1))
    assert refused.value.reason == TOO_LARGE
    with pytest.raises(InvalidPointer) as refused:
        RULES.admit_size(10 * 1024 * 1024 + 1)
    assert refused.value.reason == TOO_LARGE


def test_payload_buckets_parse() -> None:
    assert parse_bucket_names(" acme-payloads , acme-payloads-2") == RULES.buckets


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty: expected bucket names separated by commas"),
    ("acme-payloads,", "entry 2 is empty"),
    ("acme-payloads,Acme", "entry 2: 'Acme' is not a valid S3 bucket name"),
    ("a,acme-payloads", "entry 1: 'a' is not a valid S3 bucket name"),
    ("acme-payloads,acme-payloads", "entry 2: bucket 'acme-payloads' is given more than once"),
])
def test_payload_bucket_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_bucket_names(spec)


def test_pointer_detail_is_what_a_dead_letter_would_say() -> None:
    refused = InvalidPointer(POINTER_INVALID, "s3Key must be 1 to 1024 bytes")
    assert str(refused) == "payload_pointer_invalid: s3Key must be 1 to 1024 bytes"


def test_the_library_leaves_boto3s_session_class_as_it_found_it(queue: Queue) -> None:
    before = (boto3.Session, boto3.session.Session)
    queue.send(book(300_000))
    assert (boto3.Session, boto3.session.Session) == before
    assert type(boto3.session.Session()).__module__ == "boto3.session"
