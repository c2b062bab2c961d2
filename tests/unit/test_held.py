from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support.fakes import FakeClock, FakeTransport, msg
from workers.aws.sqs import Message
from workers.lease.files import ConsumerRecord, read_held
from workers.lease.held import HeldMessages
from workers.lease.settle import Action, Settlement, settle

TIMEOUT = 30
CEILING = 100


@dataclass
class Fixture:
    clock: FakeClock
    transport: FakeTransport
    held: HeldMessages

    def at(self, offset: float) -> int:
        """Run extend_due `offset` seconds after the start."""
        self.clock.now = START + offset
        return self.held.extend_due()


START = 1_000.0


def make(timeout: int = TIMEOUT, ceiling: int = CEILING) -> Fixture:
    clock = FakeClock(START)
    transport = FakeTransport()
    held = HeldMessages(transport, timeout, ceiling, clock=clock)
    return Fixture(clock, transport, held)


@pytest.fixture
def fx() -> Fixture:
    return make()


def test_nothing_is_extended_while_more_than_half_a_timeout_remains(fx: Fixture) -> None:
    fx.held.hold([msg("a"), msg("b")], START)

    assert fx.at(0) == 0
    assert fx.at(15) == 0  # exactly half a timeout left: not yet due
    assert fx.transport.calls == []


def test_messages_are_extended_by_a_full_timeout_when_due(fx: Fixture) -> None:
    extensions = REGISTRY.get_sample_value("shelver_visibility_extensions_total") or 0.0
    fx.held.hold([msg("a"), msg("b")], START)

    assert fx.at(15.5) == 2

    assert fx.transport.calls == [[("a", TIMEOUT), ("b", TIMEOUT)]]
    after = REGISTRY.get_sample_value("shelver_visibility_extensions_total") or 0.0
    assert after - extensions == 2


def test_an_extension_moves_the_next_due_time(fx: Fixture) -> None:
    fx.held.hold([msg("a")], START)
    fx.at(16)  # visible again at 16 + 30 = 46

    assert fx.at(30) == 0  # 16 s left
    assert fx.at(31.5) == 1  # 14.5 s left
    assert fx.transport.calls == [[("a", TIMEOUT)], [("a", TIMEOUT)]]


def test_only_messages_close_to_expiry_are_extended(fx: Fixture) -> None:
    fx.held.hold([msg("old")], START)
    fx.held.hold([msg("new")], START + 10)

    assert fx.at(16) == 1

    assert fx.transport.calls == [[("old", TIMEOUT)]]
    assert fx.at(26) == 1  # "new" expires at 40: 14 s left now
    assert fx.transport.calls[-1] == [("new", TIMEOUT)]


def test_extensions_stop_at_the_ceiling() -> None:
    fx = make(timeout=30, ceiling=60)
    fx.held.hold([msg("a")], START)

    assert fx.at(16) == 1  # visible until 46: held 46 s <= 60
    assert fx.at(32) == 0  # another extension would hold it until 62 > 60
    assert fx.at(45) == 0
    assert fx.at(500) == 0
    assert fx.transport.calls == [[("a", 30)]]
    # Still registered: given back or forgotten by the consumer, not here.
    assert fx.held.held_messages() == [msg("a")]


def test_an_extension_that_would_end_exactly_at_the_ceiling_is_made() -> None:
    fx = make(timeout=30, ceiling=60)
    fx.held.hold([msg("a")], START)

    assert fx.at(30) == 1  # 30 + 30 - 0 == 60

    assert fx.transport.calls == [[("a", 30)]]


def test_a_failed_extension_is_tried_again_on_the_next_check(fx: Fixture) -> None:
    fx.held.hold([msg("a"), msg("b")], START)
    fx.transport.failing = {"a"}

    assert fx.at(16) == 1

    fx.transport.failing = set()
    assert fx.at(17) == 1  # "a" is still due, "b" was extended
    assert fx.transport.calls == [[("a", TIMEOUT), ("b", TIMEOUT)], [("a", TIMEOUT)]]


def test_forgotten_messages_are_never_extended(fx: Fixture) -> None:
    fx.held.hold([msg("a"), msg("b")], START)

    fx.held.forget([msg("a")])

    assert fx.at(16) == 1
    assert fx.transport.calls == [[("b", TIMEOUT)]]
    assert fx.held.held_messages() == [msg("b")]


def let_go(held: HeldMessages, transport: FakeTransport, changes: list[tuple[Message, int]]
           ) -> None:
    """Settle these messages with the visibility each is given (`workers.lease.settle`)."""
    settle(transport, [Settlement(m, Action.RELEASE, seconds) for m, seconds in changes],
           held=held)


def test_settling_passes_the_timeouts_through_and_stops_holding(fx: Fixture) -> None:
    fx.held.hold([msg("a"), msg("b"), msg("c")], START)

    let_go(fx.held, fx.transport, [(msg("a"), 0), (msg("b"), 8)])

    assert fx.transport.calls == [[("a", 0), ("b", 8)]]
    assert len(fx.held) == 1
    assert fx.at(16) == 1
    assert fx.transport.calls[-1] == [("c", TIMEOUT)]
    assert fx.at(16 + TIMEOUT) == 1
    assert all(("a", TIMEOUT) not in call and ("b", TIMEOUT) not in call
               for call in fx.transport.calls)


def test_settling_nothing_calls_nothing(fx: Fixture) -> None:
    let_go(fx.held, fx.transport, [])

    assert fx.transport.calls == []


def test_a_message_held_again_after_its_release_is_held_anew(fx: Fixture) -> None:
    fx.held.hold([msg("a")], START)
    let_go(fx.held, fx.transport, [(msg("a"), 0)])
    fx.held.hold([msg("a")], START + 20)

    assert fx.at(21) == 0  # due from its new receive time, not the old one
    assert fx.at(36) == 1


@pytest.mark.parametrize(("timeout", "interval"), [(30, 1.0), (4, 1.0), (2, 0.5), (0, 0.05)])
def test_check_interval_leaves_time_for_several_checks_per_timeout(
    timeout: int, interval: float
) -> None:
    assert make(timeout=timeout).held.check_interval == interval


@dataclass
class BlockingTransport(FakeTransport):
    """The first call blocks until released, and is recorded only when it returns."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().change_visibility(changes)


def test_a_release_cannot_be_overtaken_by_an_extension_in_progress() -> None:
    clock = FakeClock(START)
    transport = BlockingTransport()
    held = HeldMessages(transport, TIMEOUT, CEILING, clock=clock)
    held.hold([msg("a")], START)
    clock.now = START + 20

    extender = threading.Thread(target=held.extend_due)
    extender.start()
    assert transport.entered.wait(30)
    giver = threading.Thread(target=let_go, args=(held, transport, [(msg("a"), 0)]))
    giver.start()
    giver.join(0.2)
    # Still waiting for the lock the extension holds (cannot fail when the lock works).
    assert giver.is_alive()
    transport.release.set()
    extender.join(30)
    giver.join(30)

    # The release lands last, so SQS ends up with the message visible, as the consumer asked.
    assert transport.calls == [[("a", TIMEOUT)], [("a", 0)]]
    assert len(held) == 0


# -- the held file -------------------------------------------------------------------------------

WALL = 50_000.0  # the wall clock reads this when the monotonic one reads START


@dataclass
class Recorded:
    fx: Fixture
    record: ConsumerRecord

    def file(self) -> list[tuple[str, float]]:
        """(receipt handle, visible_until) in the held file, in order."""
        entries = read_held(self.record.held.path).entries
        return [(e.receipt_handle, e.visible_until) for e in entries]


@pytest.fixture
def recorded(tmp_path: Path) -> Recorded:
    clock = FakeClock(START)
    transport = FakeTransport()
    record = ConsumerRecord(tmp_path, "tok", "https://sqs.example/q.fifo", threads=1)
    held = HeldMessages(transport, TIMEOUT, CEILING, clock=clock,
                        record=record, wall=lambda: clock.now - START + WALL)
    return Recorded(Fixture(clock, transport, held), record)


def test_the_held_file_follows_every_hold_and_release(recorded: Recorded) -> None:
    held = recorded.fx.held
    held.hold([msg("a", "g1"), msg("b", "g1")], START)
    held.hold([msg("c", "g2")], START + 5)
    assert recorded.file() == [("a", WALL + TIMEOUT), ("b", WALL + TIMEOUT),
                               ("c", WALL + 5 + TIMEOUT)]

    held.forget([msg("a", "g1")])
    assert recorded.file() == [("b", WALL + TIMEOUT), ("c", WALL + 5 + TIMEOUT)]

    let_go(held, recorded.fx.transport, [(msg("c", "g2"), 0)])
    assert recorded.file() == [("b", WALL + TIMEOUT)]


def test_a_message_leaves_the_file_before_it_is_released(recorded: Recorded) -> None:
    # A death between the two must not let a successor release it again: by then another
    # consumer may hold it.
    seen: list[list[tuple[str, float]]] = []
    original = recorded.fx.transport.change_visibility

    def change_visibility(changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        seen.append(recorded.file())
        return original(changes)

    recorded.fx.transport.change_visibility = change_visibility  # type: ignore[method-assign]
    recorded.fx.held.hold([msg("a"), msg("b")], START)

    let_go(recorded.fx.held, recorded.fx.transport, [(msg("a"), 0)])

    assert seen == [[("b", WALL + TIMEOUT)]]


def test_an_extension_moves_visible_until_only_when_it_succeeded(recorded: Recorded) -> None:
    recorded.fx.held.hold([msg("a"), msg("b")], START)
    recorded.fx.transport.failing = {"b"}

    assert recorded.fx.at(20) == 1

    assert recorded.file() == [("a", WALL + 20 + TIMEOUT), ("b", WALL + TIMEOUT)]
