"""The emulator keeps SQS's FIFO contract where Shelver's correctness rests on it: a message group
is handed to one receiver at a time, also when a dead consumer's messages are handed back in one
ChangeMessageVisibilityBatch call; and it listens on loopback only, as GATEWAY_LISTEN says
(scripts/localstack_runtime.py has both defects and their fixes)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from scripts.emulator import HOST, LocalStack
from tests.support.aws import Aws
from tests.support.listeners import descendants, listeners

HELD = 10
RECEIVERS = 6
TRIALS = 5


def _hand_back_while_receivers_wait(aws: Aws, url: str) -> list[list[str]]:
    """Receive ten of a group's fifteen messages, park six receivers on a long poll, hand the
    ten back in one batch call; return what each receiver got."""
    aws.send(url, [("G", f"m{i}") for i in range(HELD + 5)])
    held = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=HELD,
                                   VisibilityTimeout=60)["Messages"]
    assert len(held) == HELD
    got: list[list[str]] = []

    def receive(client: Any) -> None:
        answer = client.receive_message(QueueUrl=url, MaxNumberOfMessages=3,
                                        WaitTimeSeconds=2, VisibilityTimeout=30)
        got.append([m["Body"] for m in answer.get("Messages", [])])

    clients = [aws.client("sqs") for _ in range(RECEIVERS)]
    for client in clients:  # connected before the clock starts
        client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    receivers = [threading.Thread(target=receive, args=(client,)) for client in clients]
    for thread in receivers:
        thread.start()
    time.sleep(1.0)  # every receiver is long-polling the queue, which has nothing visible
    aws.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for i, m in enumerate(held)])
    for thread in receivers:
        thread.join(30)
    return got


def test_a_group_handed_back_in_one_batch_goes_to_one_receiver(aws: Aws) -> None:
    for _ in range(TRIALS):
        url = aws.sqs.create_queue(QueueName=f"t{uuid.uuid4().hex[:10]}-race.fifo",
                                   Attributes={"FifoQueue": "true", "VisibilityTimeout": "60"}
                                   )["QueueUrl"]
        try:
            got = _hand_back_while_receivers_wait(aws, url)
        finally:
            aws.sqs.delete_queue(QueueUrl=url)
        assert len(got) == RECEIVERS
        assert [g for g in got if g] == [["m0", "m1", "m2"]], got


def test_the_emulator_listens_on_loopback_only(localstack: LocalStack) -> None:
    assert localstack.pid is not None
    found = listeners(descendants(localstack.pid))
    assert [(listener.address, listener.port) for listener in found] == [
        (HOST, localstack.port)], [str(listener) for listener in found]
