"""The consumer's AWS clients: how many attempts each call makes, counted on the wire."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.proxy import FaultProxy
from workers.aws.clients import make_clients


@pytest.fixture
def failing_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every AWS call answered 500 by a proxy (its upstream is never reached)."""
    with FaultProxy("http://127.0.0.1:9", error_rate=1.0, error_statuses=(500,)) as proxy:
        for name, value in {"AWS_ENDPOINT_URL": proxy.url, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        yield proxy


def test_a_receive_is_one_attempt_so_a_hung_one_ends_within_the_receive_limit(
        failing_aws: FaultProxy, sqs_client: str) -> None:
    # botocore's `max_attempts` counts retries, not attempts: a receive configured that way made
    # two calls, and two hung long polls outlast the heartbeat budget of receive_call_limit().
    clients = make_clients(threads=1, wait_time_seconds=0, s3_client="boto3",
                           sqs_client=sqs_client)

    with pytest.raises(ClientError):
        clients.sqs_receive.receive_message(QueueUrl=failing_aws.url + "/000000000000/q.fifo")

    assert failing_aws.counters()["requests"] == 1


@pytest.mark.parametrize("call", ["delete_message_batch", "get_queue_attributes"])
def test_other_sqs_calls_make_three_attempts(failing_aws: FaultProxy, sqs_client: str,
                                             call: str) -> None:
    clients = make_clients(threads=1, wait_time_seconds=0, s3_client="boto3",
                           sqs_client=sqs_client)
    queue_url = failing_aws.url + "/000000000000/q.fifo"
    params: dict[str, dict[str, Any]] = {
        "delete_message_batch": {"Entries": [{"Id": "0", "ReceiptHandle": "r"}]},
        "get_queue_attributes": {"AttributeNames": ["All"]}}

    with pytest.raises(ClientError) as info:
        getattr(clients.sqs, call)(QueueUrl=queue_url, **params[call])

    assert failing_aws.counters()["requests"] == 3
    assert info.value.response["Error"]["Code"] == "InternalFailure"


def test_s3_calls_make_three_attempts_whichever_client(failing_aws: FaultProxy,
                                                        s3_client: str) -> None:
    clients = make_clients(threads=1, wait_time_seconds=0, s3_client=s3_client,
                           sqs_client="boto3")

    with pytest.raises(ClientError) as info:
        clients.s3.head("scifi", "k.json")

    # The CRT client first asks S3 for the bucket's region: one attempt, refused too.
    assert failing_aws.counters()["requests"] == 3 + (s3_client == "crt")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
