"""Large books against LocalStack: a 1 MiB book goes through the deployed queues' settings byte
for byte; the Amazon SQS Extended Client (the real library) offloads 300 KB, 2 MB and 10 MB
payloads to S3 and its pointers, read by workers/books/payloads.py, lead to them, in their group's
order; its own consumer deletes a payload before the message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import Aws, Stack
from tests.support.extended_client import producer
from workers.books.payloads import SIZE_ATTRIBUTES, read_pointer

MIB = 1_048_576


def book(size: int, book_id: str = "b-1") -> str:
    """A book of exactly `size` bytes of UTF-8, most of it its summary."""
    head = f'{{"id":"{book_id}","title":"Big book {book_id}","genre":"scifi","summary":"'
    return head + "x" * (size - len(head) - 2) + '"}'


@pytest.fixture
def payload_bucket(aws: Aws) -> Iterator[str]:
    bucket = aws.create_bucket(f"payloads-{uuid.uuid4().hex[:10]}")
    yield bucket
    aws.delete_bucket(bucket)


def library(aws_env: dict[str, str], bucket: str) -> Any:
    return producer(bucket, endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                    aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"])


def send(sqs: Any, url: str, body: str, group: str = "g") -> None:
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group,
                     MessageDeduplicationId=uuid.uuid4().hex)


def test_a_1_mib_book_is_taken_and_handed_back_byte_for_byte(aws: Aws, stack: Stack) -> None:
    body = book(MIB)
    assert len(body.encode()) == MIB
    send(aws.sqs, stack.input_url, body)
    with pytest.raises(ClientError) as refused:
        send(aws.sqs, stack.input_url, body + " ")
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    [received] = aws.receive_all(stack.input_url, expect=1)
    assert received["Body"].encode() == body.encode()
    send(aws.sqs, stack.dlq_url, body)  # the DLQ takes as much
    [dead] = aws.receive_all(stack.dlq_url, expect=1)
    assert dead["Body"] == body


def test_the_libraries_pointers_lead_to_their_payloads_in_group_order(
        aws: Aws, aws_env: dict[str, str], stack: Stack, payload_bucket: str) -> None:
    sqs = library(aws_env, payload_bucket)
    sent = {"g1": [book(300_000, "g1-a"), book(2_000_000, "g1-b"), book(10_000_000, "g1-c")],
            "g2": [book(2_000_000, "g2-a"), book(300_000, "g2-b")]}
    for group, bodies in sent.items():
        for body in bodies:
            send(sqs, stack.input_url, body, group)

    got: dict[str, list[str]] = {"g1": [], "g2": []}
    for message in aws.receive_all(stack.input_url, expect=5):
        assert set(message["MessageAttributes"]) <= set(SIZE_ATTRIBUTES)
        pointer = read_pointer(message["Body"], message["MessageAttributes"])
        assert pointer is not None and pointer.bucket == payload_bucket
        payload = aws.s3.get_object(Bucket=pointer.bucket, Key=pointer.key)["Body"].read()
        assert pointer.size == len(payload)
        got[message["Attributes"]["MessageGroupId"]].append(payload.decode())
    assert got == sent


def test_the_librarys_own_consumer_deletes_the_payload_before_the_message(
        aws_env: dict[str, str], stack: Stack, payload_bucket: str, aws: Aws) -> None:
    sqs = library(aws_env, payload_bucket)
    send(sqs, stack.input_url, book(300_000))
    sqs.delete_payload_from_s3 = True
    calls: list[str] = []
    sqs.meta.events.register("before-send.sqs", lambda request, **_: calls.append(
        request.headers["X-Amz-Target"].decode().split(".")[1]))
    sqs.s3_client.meta.events.register("before-send.s3", lambda request, **_: calls.append(
        f"S3 {request.method}"))

    [message] = sqs.receive_message(QueueUrl=stack.input_url, MaxNumberOfMessages=1,
                                    WaitTimeSeconds=5)["Messages"]
    assert message["Body"] == book(300_000)
    sqs.delete_message(QueueUrl=stack.input_url, ReceiptHandle=message["ReceiptHandle"])
    # If the DeleteMessage failed after the payload's DELETE, the message would come back
    # pointing at nothing: Shelver deletes the message first.
    assert calls == ["ReceiveMessage", "S3 GET", "S3 DELETE", "DeleteMessage"]
    assert aws.keys(payload_bucket) == []
