"""Handing back a dead consumer's messages (moto): what it held comes back at once, in groups;
what may have been received by someone else does not; each dead consumer is recovered once."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client import REGISTRY

from tests.support.fakes import die
from workers.aws.sqs import Message, QueueInfo, SqsTransport
from workers.lease.crashes import CrashRegistry
from workers.lease.files import (
    ConsumerRecord,
    ProcessingSlots,
    held_path,
    owner_alive,
    processing_path,
    tokens,
)
from workers.lease.handback import (
    HAND_BACK_MARGIN_SECONDS,
    RECEIVE_MARGIN_SECONDS,
    hand_back_from,
    receive_wait,
)
from workers.lease.held import HeldMessages
from workers.lease.settle import Action, Settlement, settle

VISIBILITY = 60


@dataclass
class Fixture:
    sqs: Any
    transport: SqsTransport
    directory: Path
    crashes: CrashRegistry

    def send(self, items: Sequence[tuple[str, str]]) -> None:
        for n, (group, body) in enumerate(items):
            self.sqs.send_message(QueueUrl=self.transport.queue.url, MessageBody=body,
                                  MessageGroupId=group, MessageDeduplicationId=f"{body}-{n}")

    def receive(self) -> list[Message]:
        """Everything visible now, as a consumer receives it."""
        received: list[Message] = []
        while batch := self.transport.receive(0, VISIBILITY):
            received.extend(batch)
        return received

    def dead_consumer(self, token: str, messages: Sequence[Message],
                      wall: Callable[[], float] = time.time,
                      in_processing: str | None = None) -> ConsumerRecord:
        """A consumer's files as it leaves them when it dies holding `messages`, processing
        `in_processing`."""
        record = ConsumerRecord(self.directory, token, self.transport.queue.url, threads=2)
        held = HeldMessages(self.transport, VISIBILITY, 3600, record=record, wall=wall)
        held.hold(messages, time.monotonic())
        if in_processing is not None:
            record.processing.begin(in_processing)
        die(record)
        return record

    def hand_back(self, *tokens: str) -> int:
        return hand_back_from(tokens, self.directory, self.transport, self.crashes)


@pytest.fixture
def fx(moto: None, tmp_path: Path) -> Fixture:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="in.fifo", Attributes={
        "FifoQueue": "true", "VisibilityTimeout": str(VISIBILITY)})["QueueUrl"]
    transport = SqsTransport(sqs, sqs, QueueInfo(url, VISIBILITY, None))
    return Fixture(sqs, transport, tmp_path, CrashRegistry(tmp_path, 3))


def recovered_total() -> float:
    return REGISTRY.get_sample_value("shelver_messages_recovered_total") or 0.0


def test_a_dead_consumer_s_messages_are_visible_again_at_once(fx: Fixture) -> None:
    fx.send([("g1", "a1"), ("g1", "a2"), ("g2", "b1")])
    held = fx.receive()
    assert len(held) == 3 and fx.receive() == []  # all invisible now
    fx.dead_consumer("dead", held)
    before = recovered_total()

    assert fx.hand_back("dead") == 3

    assert sorted(m.body for m in fx.receive()) == ["a1", "a2", "b1"]
    assert recovered_total() - before == 3
    assert tokens(fx.directory) == set()  # claimed: the files are gone


def test_a_consumer_is_recovered_once_even_if_two_are_given_it(fx: Fixture) -> None:
    fx.send([("g1", "a1")])
    fx.dead_consumer("dead", fx.receive())
    assert fx.hand_back("dead") == 1
    again = fx.receive()  # someone else holds it now, under a new receipt handle

    assert fx.hand_back("dead") == 0

    assert fx.receive() == []  # the old handle did not hand it back from its new holder
    assert [m.body for m in again] == ["a1"]


def test_messages_whose_visibility_may_have_run_out_are_left_alone(fx: Fixture) -> None:
    fx.send([("g1", "old"), ("g2", "fresh")])
    messages = {m.body: m for m in fx.receive()}
    # As if "old" was received VISIBILITY - 1 s ago: its timeout ends within the margin.
    record = ConsumerRecord(fx.directory, "dead", fx.transport.queue.url, threads=1)
    now = time.time()
    record.held.write([(messages["old"], now + HAND_BACK_MARGIN_SECONDS - 1),
                       (messages["fresh"], now + VISIBILITY)])
    die(record)

    assert fx.hand_back("dead") == 1

    assert [m.body for m in fx.receive()] == ["fresh"]


def test_messages_deleted_before_the_death_are_no_error(fx: Fixture) -> None:
    fx.send([("g1", "done"), ("g2", "pending")])
    messages = {m.body: m for m in fx.receive()}
    fx.dead_consumer("dead", list(messages.values()))
    fx.transport.delete([messages["done"]])  # deleted, and then the consumer died

    assert fx.hand_back("dead") == 1

    assert [m.body for m in fx.receive()] == ["pending"]


def test_messages_in_processing_are_counted_as_crashed(fx: Fixture) -> None:
    fx.send([("g1", "a1"), ("g2", "b1")])
    held = fx.receive()
    fx.dead_consumer("dead", held, in_processing=held[0].message_id)

    fx.hand_back("dead")

    assert fx.crashes.crashes(held[0].message_id) == 1
    assert fx.crashes.crashes(held[1].message_id) == 0
    assert not processing_path(fx.directory, "dead").exists()


def test_a_consumer_that_held_nothing_only_leaves_files_to_remove(fx: Fixture) -> None:
    os.close(os.open(processing_path(fx.directory, "early"), os.O_CREAT | os.O_WRONLY))

    assert fx.hand_back("early") == 0

    assert tokens(fx.directory) == set()


def test_a_held_file_torn_by_the_death_hands_nothing_back_but_still_counts(
        fx: Fixture) -> None:
    fx.send([("g1", "a1")])
    held = fx.receive()
    fx.dead_consumer("dead", held, in_processing=held[0].message_id)
    path = held_path(fx.directory, "dead")
    path.write_bytes(path.read_bytes()[:-5])

    assert fx.hand_back("dead") == 0

    assert fx.receive() == []  # back after its visibility timeout: nothing trusted a torn list
    assert fx.crashes.crashes(held[0].message_id) == 1
    assert tokens(fx.directory) == set()


def test_messages_of_another_queue_are_not_handed_back_here(fx: Fixture) -> None:
    fx.send([("g1", "a1")])
    held = fx.receive()
    record = ConsumerRecord(fx.directory, "dead", "https://sqs.example/other.fifo", threads=1)
    record.held.write([(held[0], time.time() + VISIBILITY)])
    die(record)

    assert fx.hand_back("dead") == 0

    assert not held_path(fx.directory, "dead").exists()
    assert fx.receive() == []


def test_the_wait_covers_the_latest_receive_still_answerable(tmp_path: Path) -> None:
    idle = ProcessingSlots(tmp_path, "idle", 1)
    polling = ProcessingSlots(tmp_path, "polling", 1, wall=lambda: 1000.0)
    assert receive_wait(["idle"], tmp_path, clock=lambda: 1000.0) == 0.0
    with polling.receiving(20):
        wait = receive_wait(["idle", "polling", "gone"], tmp_path, clock=lambda: 1005.0)
        assert wait == 15 + RECEIVE_MARGIN_SECONDS
        assert receive_wait(["polling"], tmp_path, clock=lambda: 1030.0) < 0
    assert idle.path.exists()


def test_recovery_works_with_what_the_keeper_wrote(fx: Fixture) -> None:
    # Extensions move visible_until on: a message held longer than one timeout is recovered.
    fx.send([("g1", "long")])
    clock = [time.monotonic()]
    record = ConsumerRecord(fx.directory, "dead", fx.transport.queue.url, threads=1)
    held = HeldMessages(fx.transport, VISIBILITY, 3600, clock=lambda: clock[0], record=record)
    held.hold(fx.receive(), clock[0])
    clock[0] += VISIBILITY - 10
    assert held.extend_due() == 1
    die(record)
    # The wall clock reads 50 s later than it did at the receive.
    late = time.time() + VISIBILITY - 10

    assert hand_back_from(["dead"], fx.directory, fx.transport, fx.crashes,
                   clock=lambda: late) == 1
    assert [m.body for m in fx.receive()] == ["long"]


def test_a_message_backed_off_before_the_death_is_not_handed_back_again(fx: Fixture) -> None:
    fx.send([("g1", "backoff"), ("g2", "kept")])
    messages = {m.body: m for m in fx.receive()}
    record = ConsumerRecord(fx.directory, "dead", fx.transport.queue.url, threads=1)
    held = HeldMessages(fx.transport, VISIBILITY, 3600, record=record)
    held.hold(list(messages.values()), time.monotonic())
    # A retry backoff: invisible for 30 s.
    settle(fx.transport, [Settlement(messages["backoff"], Action.BACK_OFF, 30)], held=held)
    die(record)

    assert fx.hand_back("dead") == 1

    assert [m.body for m in fx.receive()] == ["kept"]



def _hold_until_killed(directory: str, url: str, ready: Any) -> None:
    """A consumer's files, as a live consumer process keeps them."""
    record = ConsumerRecord(Path(directory), "alive", url, threads=1)
    record.held.write([(Message("m-0", "rh-0", "", "g", 1), time.time() + VISIBILITY)])
    ready.set()
    time.sleep(600)


def test_a_live_consumer_s_messages_are_never_handed_back(fx: Fixture) -> None:
    # Even if it is named by mistake (another instance on the same state dir, say): a live
    # consumer holds the lock on its held file until its process ends, however it ends.
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    owner = context.Process(target=_hold_until_killed,
                            args=(str(fx.directory), fx.transport.queue.url, ready))
    owner.start()
    try:
        assert ready.wait(60)
        assert owner_alive(fx.directory, "alive")

        assert fx.hand_back("alive") == 0
        assert tokens(fx.directory) == {"alive"}  # nothing claimed, nothing removed
    finally:
        owner.kill()
        owner.join(30)

    assert not owner_alive(fx.directory, "alive")
    assert fx.hand_back("alive") == 0  # rh-0 is no real handle: nothing to hand back, but claimed
    assert tokens(fx.directory) == set()
