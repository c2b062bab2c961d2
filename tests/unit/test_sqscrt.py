"""The CRT SQS client's own promises: the request boto3 would send (its JSON body, a valid SigV4
signature), boto3's exceptions and retries for every failure, and a connection dropped when a
call is abandoned."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from botocore.parsers import ResponseParserError

from scripts.emulator import free_port
from tests.support.http_stub import Answer, HttpStub
from tests.support.proxy import FaultProxy
from tests.support.sigv4 import botocore_signature, signed_by
from workers.aws.clients import make_session, make_sqs

QUEUE = "/000000000000/books.fifo"
JSON = (("Content-Type", "application/x-amz-json-1.0"),)


def sqs(sqs_client: str, attempts: int = 3, read_timeout: float = 10) -> Any:
    return make_sqs(make_session(), sqs_client, read_timeout, connections=1, attempts=attempts)


@pytest.fixture
def stub(aws_at: Callable[[str], None]) -> Iterator[HttpStub]:
    with HttpStub(default=Answer(200, JSON, b'{"Messages": []}')) as stub:
        aws_at(stub.url)
        yield stub


def test_the_request_is_boto3s_with_a_valid_signature(stub: HttpStub) -> None:
    params: dict[str, Any] = {"QueueUrl": stub.url + QUEUE, "MaxNumberOfMessages": 10,
                              "WaitTimeSeconds": 1,
                              "MessageSystemAttributeNames": ["MessageGroupId"]}
    sqs("boto3").receive_message(**params)
    assert sqs("crt").receive_message(**params) == {"Messages": []}

    sent_by_boto3, sent_by_crt = stub.requests
    assert (sent_by_crt.method, sent_by_crt.path) == ("POST", "/")
    assert orjson.loads(sent_by_crt.body) == orjson.loads(sent_by_boto3.body) == params
    for header in ("x-amz-target", "content-type", "x-amzn-query-mode"):
        assert sent_by_crt.headers[header] == sent_by_boto3.headers[header]
    signed = signed_by(sent_by_crt)
    assert signed["Credential"].endswith("/us-east-1/sqs/aws4_request")
    assert signed["Signature"] == botocore_signature(sent_by_crt, "testing", "us-east-1", "sqs")


def test_an_error_answer_raises_what_boto3_raises(stub: HttpStub) -> None:
    missing = Answer(400, (*JSON, ("x-amzn-query-error",
                                   "AWS.SimpleQueueService.NonExistentQueue;Sender")),
                     b'{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "gone"}')
    raised = []
    for client in ("boto3", "crt"):
        stub.script(missing)
        with pytest.raises(ClientError) as info:
            sqs(client).delete_message_batch(
                QueueUrl=stub.url + QUEUE, Entries=[{"Id": "0", "ReceiptHandle": "r"}])
        raised.append((type(info.value).__name__, info.value.response["Error"],
                       info.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert raised[0] == raised[1]
    assert raised[1][1]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert len(stub.requests) == 2  # not retried


@pytest.mark.parametrize("body", [b"", b"<html>502 Bad Gateway</html>", b'{"Messages": [',
                                  b"[]"], ids=["empty", "html", "cut-off", "not-an-object"])
def test_a_malformed_success_answer_is_botocores_parser_error(stub: HttpStub, body: bytes
                                                              ) -> None:
    stub.script(Answer(200, JSON, body))

    # Not an empty answer: a DeleteMessageBatch read as {} would claim every delete done.
    with pytest.raises(ResponseParserError):
        sqs("crt").delete_message_batch(QueueUrl=stub.url + QUEUE,
                                        Entries=[{"Id": "0", "ReceiptHandle": "r"}])
    assert len(stub.requests) == 1


def test_boto3_reads_an_empty_success_answer_as_no_failure(stub: HttpStub) -> None:
    # Why the CRT client does not follow boto3 here (README, S3_CLIENT and SQS_CLIENT).
    stub.script(Answer(200, JSON, b""))

    answer = sqs("boto3").delete_message_batch(QueueUrl=stub.url + QUEUE,
                                               Entries=[{"Id": "0", "ReceiptHandle": "r"}])

    assert "Failed" not in answer and "Successful" not in answer


@pytest.mark.parametrize(("fault", "expected", "code"), [
    ({"throttle_rate": 1.0}, ClientError, "RequestThrottled"),
    ({"error_rate": 1.0, "error_statuses": (503,)}, ClientError, "ServiceUnavailable"),
    ({"reset_rate": 1.0}, ConnectionClosedError, None),
], ids=["throttled", "503", "reset"])
def test_faults_are_retried_and_raised_as_boto3_does(
        aws_at: Callable[[str], None], sqs_client: str, fault: dict[str, Any],
        expected: type[Exception], code: str | None) -> None:
    with FaultProxy(f"http://127.0.0.1:{free_port()}", **fault) as proxy:
        aws_at(proxy.url)
        with pytest.raises(expected) as info:
            sqs(sqs_client).change_message_visibility_batch(
                QueueUrl=proxy.url + QUEUE,
                Entries=[{"Id": "0", "ReceiptHandle": "r", "VisibilityTimeout": 5}])
        assert proxy.counters()["requests"] == 3
    if code is not None:
        assert info.value.response["Error"]["Code"] == code  # type: ignore[attr-defined]


def test_an_attempt_past_its_read_timeout_fails_as_boto3s_does(
        aws_at: Callable[[str], None], sqs_client: str) -> None:
    with HttpStub() as stub, FaultProxy(stub.url, delay_seconds=3) as proxy:
        aws_at(proxy.url)
        with pytest.raises(ReadTimeoutError):
            sqs(sqs_client, attempts=1, read_timeout=1).receive_message(
                QueueUrl=proxy.url + QUEUE, MaxNumberOfMessages=10, WaitTimeSeconds=0)


class _Abandoned(BaseException):
    """What the consumer's stop raises into a long poll (consumer._LongPollAbandoned)."""


def test_an_abandoned_call_leaves_no_connection_behind(
        stub: HttpStub, aws_at: Callable[[str], None]) -> None:
    # The first answer would come after the client's read timeout (10 s): a call queued behind
    # it on the same connection would time out (the receive client makes one attempt).
    with FaultProxy(stub.url, delay_seconds=60) as proxy:
        aws_at(proxy.url)
        client = sqs("crt", attempts=1)

        def abandon(signum: int, frame: FrameType | None) -> None:
            raise _Abandoned

        previous = signal.signal(signal.SIGALRM, abandon)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            with pytest.raises(_Abandoned):
                client.receive_message(QueueUrl=proxy.url + QUEUE, WaitTimeSeconds=20)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        proxy.configure(delay_seconds=0)
        # The next call does not wait behind the abandoned one: it gets a new connection.
        assert client.receive_message(QueueUrl=proxy.url + QUEUE, WaitTimeSeconds=0) == {
            "Messages": []}

