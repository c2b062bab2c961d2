"""The keeper: extension failures never end it; an orphan stops gracefully first, and one still
busy after the grace hands back what it holds and exits."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.parsers import ResponseParserError
from prometheus_client import REGISTRY

from tests.support.aws import wait_until
from tests.support.fakes import FakeClock, FakeTransport, msg
from workers.aws.sqs import Message
from workers.consumer.keeper import EXIT_ORPHANED, ORPHAN_GRACE_SECONDS, Keeper
from workers.lease.files import (
    ConsumerRecord,
    held_path,
    processing_path,
    read_held,
    read_processing,
    tokens,
)
from workers.lease.held import HeldMessages

PARENT = 4242


class DownTransport(FakeTransport):
    """SQS unreachable: every visibility change raises."""

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        super().change_visibility(changes)
        raise EndpointConnectionError(endpoint_url="http://sqs")


class GarbledTransport(FakeTransport):
    """SQS answers 200 with a body that is no JSON: the CRT client raises botocore's
    ResponseParserError (not a BotoCoreError)."""

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        super().change_visibility(changes)
        raise ResponseParserError("ChangeMessageVisibilityBatch: 200 answer is not JSON")


class BrokenTransport(FakeTransport):
    """A bug under the keeper: every visibility change raises what nothing expects."""

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        super().change_visibility(changes)
        raise ValueError("a bug")


@dataclass
class Fixture:
    transport: FakeTransport = field(default_factory=FakeTransport)
    clock: FakeClock = field(default_factory=FakeClock)
    parent_pid: int = PARENT
    stops: int = 0
    exits: list[int] = field(default_factory=list)
    keeper: Keeper = field(init=False)
    held: HeldMessages = field(init=False)

    def __post_init__(self) -> None:
        self.keeper = Keeper(0, PARENT, self.stop, clock=self.clock,
                             parent=lambda: self.parent_pid, exit_now=self.exits.append)
        self.held = HeldMessages(self.transport, 30, 3600, clock=self.clock)

    def stop(self) -> None:
        self.stops += 1


def test_a_live_parent_is_left_alone():
    fx = Fixture()
    fx.keeper.watch_parent()

    assert (fx.stops, fx.exits, fx.keeper.orphaned) == (0, [], False)


def test_an_orphan_is_asked_to_stop_once_and_given_the_grace():
    fx = Fixture()
    fx.keeper.keep(fx.held, fx.transport)
    fx.held.hold([msg("a")], fx.clock())
    fx.parent_pid = 1  # reparented to init

    fx.keeper.watch_parent()
    fx.clock.now += ORPHAN_GRACE_SECONDS
    fx.keeper.watch_parent()

    assert fx.keeper.orphaned
    assert fx.stops == 1
    assert fx.exits == []
    assert fx.transport.calls == []


def test_an_orphan_still_busy_after_the_grace_hands_back_what_it_holds_and_exits():
    fx = Fixture()
    fx.keeper.keep(fx.held, fx.transport)
    fx.held.hold([msg("a"), msg("b")], fx.clock())
    fx.parent_pid = 1
    fx.keeper.watch_parent()

    fx.clock.now += ORPHAN_GRACE_SECONDS + 0.1
    fx.keeper.watch_parent()

    assert fx.transport.calls == [[("a", 0), ("b", 0)]]
    assert fx.exits == [EXIT_ORPHANED]


def test_an_orphan_leaves_nothing_to_recover_and_no_crash_to_count(tmp_path: Path):
    fx = Fixture()
    record = ConsumerRecord(tmp_path, "tok", "https://sqs.example/q.fifo", threads=1)
    fx.held = HeldMessages(fx.transport, 30, 3600, clock=fx.clock,
                           record=record)
    fx.keeper.keep(fx.held, fx.transport)
    fx.held.hold([msg("a")], fx.clock())
    record.processing.begin("id-a")  # a thread busy with it when the master died
    fx.parent_pid = 1
    fx.keeper.watch_parent()

    fx.clock.now += ORPHAN_GRACE_SECONDS + 0.1
    fx.keeper.watch_parent()

    assert fx.transport.calls == [[("a", 0)]]
    assert tokens(tmp_path) == set()
    assert fx.exits == [EXIT_ORPHANED]


def test_an_orphan_exits_even_when_sqs_cannot_take_its_messages_back():
    fx = Fixture(transport=DownTransport())
    fx.keeper.keep(fx.held, fx.transport)
    fx.held.hold([msg("a")], fx.clock())
    fx.parent_pid = 1
    fx.keeper.watch_parent()

    fx.clock.now += ORPHAN_GRACE_SECONDS + 0.1
    fx.keeper.watch_parent()

    assert fx.transport.calls == [[("a", 0)]]
    assert fx.exits == [EXIT_ORPHANED]


def test_an_extension_failure_is_logged_and_the_next_one_still_runs(
        caplog: pytest.LogCaptureFixture):
    fx = Fixture(transport=DownTransport())
    fx.held.hold([msg("a")], fx.clock())

    for _ in range(2):
        fx.clock.now += 16  # due: less than half the 30 s timeout left
        fx.keeper.extend(fx.held)

    assert fx.transport.calls == [[("a", 30)], [("a", 30)]]
    assert caplog.text.count("could not extend visibility") == 2


def test_a_malformed_answer_is_an_extension_failure_like_any_other(
        caplog: pytest.LogCaptureFixture):
    fx = Fixture(transport=GarbledTransport())
    fx.held.hold([msg("a")], fx.clock())

    for _ in range(2):
        fx.clock.now += 16
        fx.keeper.extend(fx.held)

    assert fx.transport.calls == [[("a", 30)], [("a", 30)]]
    assert caplog.text.count("could not extend visibility") == 2


def test_an_unexpected_error_ends_the_process_at_once_blaming_no_message(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    def internal_errors() -> float:
        return REGISTRY.get_sample_value("shelver_internal_errors_total",
                                         {"thread": "keeper"}) or 0.0

    before = internal_errors()
    exits: list[int] = []
    record = ConsumerRecord(tmp_path, "tok", "https://sqs.example/q.fifo", threads=1)
    # A real keeper thread, clock and parent: a lease of 1 s makes the message due in 0.5 s.
    transport = BrokenTransport()
    held = HeldMessages(transport, 1, 3600, record=record)
    keeper = Keeper(0, os.getppid(), lambda: None, exit_now=exits.append)
    keeper.keep(held, transport)
    held.hold([msg("a")], time.monotonic())
    record.processing.begin("id-a")  # a processing thread is on it

    keeper.start()
    wait_until(lambda: exits, 30, 0.05, "the keeper to end the process")

    assert exits == [1]
    assert internal_errors() - before == 1
    [logged] = [r for r in caplog.records if "internal error in the keeper thread" in r.message]
    assert logged.levelno == logging.CRITICAL
    assert "Traceback" in caplog.text and "ValueError: a bug" in caplog.text
    # Its replacement hands "a" back, and counts no crash against it: the bug was not its.
    assert read_processing(processing_path(tmp_path, "tok")).in_processing == []
    assert [e.message_id for e in read_held(held_path(tmp_path, "tok")).entries] == ["id-a"]
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == "keeper"], 10, 0.05,
               "the keeper thread to end")
