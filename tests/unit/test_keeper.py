"""The keeper: extension failures never end it; an orphan stops gracefully first, and one still
busy after the grace hands back what it holds and exits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from botocore.exceptions import EndpointConnectionError

from tests.support.fakes import FakeClock, FakeTransport, msg
from workers.held_state import ConsumerRecord, tokens
from workers.inflight import HeldMessages
from workers.keeper import EXIT_ORPHANED, ORPHAN_GRACE_SECONDS, Keeper
from workers.transport import Message, SqsTransport

PARENT = 4242


class DownTransport(FakeTransport):
    """SQS unreachable: every visibility change raises."""

    def change_visibility(self, changes: Sequence[tuple[Message, int]]) -> list[Message]:
        super().change_visibility(changes)
        raise EndpointConnectionError(endpoint_url="http://sqs")


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
        self.held = HeldMessages(cast(SqsTransport, self.transport), 30, 3600, clock=self.clock)

    def stop(self) -> None:
        self.stops += 1


def test_a_live_parent_is_left_alone():
    fx = Fixture()
    fx.keeper.watch_parent()

    assert (fx.stops, fx.exits, fx.keeper.orphaned) == (0, [], False)


def test_an_orphan_is_asked_to_stop_once_and_given_the_grace():
    fx = Fixture()
    fx.keeper.keep(fx.held)
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
    fx.keeper.keep(fx.held)
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
    fx.held = HeldMessages(cast(SqsTransport, fx.transport), 30, 3600, clock=fx.clock,
                           record=record)
    fx.keeper.keep(fx.held)
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
    fx.keeper.keep(fx.held)
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
