"""PAYLOAD_DELETE: a consumer deletes a filed payload's object after its message, only once SQS
deleted the message (a message left on the queue comes back and must find its payload), and a
failed delete is logged, never raised."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from workers.aws.sqs import Message, QueueInfo
from workers.books.payloads import PayloadReader, PayloadRules
from workers.consumer.loop import Consumer
from workers.consumer.process import ConsumerSpec
from workers.lease.settle import Outcome, Result
from workers.settings import Settings

QUEUE = QueueInfo("https://sqs.us-east-1.amazonaws.com/123456789012/in.fifo", 30, None)


@dataclass
class Transport:
    """Deletes every message but those named in `refuse`."""

    refuse: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    queue: QueueInfo = QUEUE

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        self.calls.append("DeleteMessageBatch")
        return [m for m in messages if m.message_id in self.refuse]

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        return []

    # The rest of a consumer's transport, which settling does not use.
    def receive(self, wait_time_seconds: int, lease_seconds: int) -> list[Message]:
        raise AssertionError("not called")

    def dead_letter(self, message: Message, reason: str, detail: str) -> None:
        raise AssertionError("not called")

    def depth(self) -> tuple[int, int] | None:
        raise AssertionError("not called")

    def dead_letter_depth(self) -> tuple[int, int] | None:
        raise AssertionError("not called")


@dataclass
class Objects:
    calls: list[str]
    error: Exception | None = None

    def get(self, bucket: str, key: str, max_bytes: int) -> bytes:
        raise AssertionError("not read here")

    def delete_object(self, bucket: str, key: str) -> None:
        self.calls.append(f"DeleteObject {bucket}/{key}")
        if self.error is not None:
            raise self.error


def consumer(tmp_path: Path, objects: Objects) -> Consumer:
    made = Consumer(ConsumerSpec(slot=0, restarts=0, settings=Settings(state_dir=str(tmp_path)),
                                 parent_pid=os.getppid(), token="t0"))
    made._payloads = PayloadReader(objects, PayloadRules(frozenset({"payloads"}), 1000))
    return made


def stored(message_id: str, key: str | None) -> Result:
    message = Message(message_id, f"rh-{message_id}", "[]", "g", 1)
    return Result(message, Outcome.STORED, offloaded=None if key is None else ("payloads", key))


def test_the_payload_is_deleted_after_its_message_and_only_if_the_message_was(
        tmp_path: Path) -> None:
    transport = Transport(refuse={"m2"})
    objects = Objects(transport.calls)

    consumer(tmp_path, objects)._settle(transport, [
        stored("m1", "k1"), stored("m2", "k2"), stored("m3", None)])

    assert transport.calls == ["DeleteMessageBatch", "DeleteObject payloads/k1"]


def test_a_failed_payload_delete_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    transport = Transport()
    objects = Objects(transport.calls, EndpointConnectionError(endpoint_url="http://s3"))

    consumer(tmp_path, objects)._settle(transport, [stored("m1", "k1")])

    assert transport.calls == ["DeleteMessageBatch", "DeleteObject payloads/k1"]
    assert "could not delete the payload s3://payloads/k1 of message m1" in caplog.text
