"""Settling (workers/lease/settle.py): what each outcome becomes, how long a failed message and
the messages behind it wait, and how the calls are cut; the settle and dead-letter calls
themselves against a fake transport. Against moto: test_sqs.py, test_dead_letter.py."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from botocore.exceptions import EndpointConnectionError

from tests.support.fakes import FakeClock, FakeTransport, msg
from workers.aws.sqs import Message
from workers.backoff import Backoff
from workers.lease.files import HeldEntry
from workers.lease.held import HeldMessages
from workers.lease.settle import (
    Action,
    Outcome,
    Result,
    Settlement,
    back_off_seconds,
    group_chunks,
    hand_back,
    plan,
    settle,
)


def message(name: str, *, group: str = "g", receive_count: int = 1) -> Message:
    return Message(f"m-{name}", f"rh-{name}", "{}", group, receive_count)


def test_only_stored_and_dead_lettered_are_done() -> None:
    assert {o for o in Outcome if o.done} == {Outcome.STORED, Outcome.DEAD_LETTERED}


# -- backoff -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("receive_count", "expected"),
    [(0, 2), (1, 2), (2, 4), (3, 8), (4, 16), (8, 256), (9, 300), (10, 300), (10_000, 300)],
)
def test_backoff_doubles_per_receive_and_is_capped(receive_count: int, expected: int) -> None:
    seconds = back_off_seconds(Backoff(2.0, 300.0), receive_count)

    assert seconds == expected
    assert isinstance(seconds, int)  # SQS visibility timeouts are whole seconds


def test_backoff_never_exceeds_the_cap_even_when_the_base_does() -> None:
    assert back_off_seconds(Backoff(50.0, 30.0), 1) == 30


def test_a_positive_backoff_base_never_gives_a_zero_second_backoff() -> None:
    assert back_off_seconds(Backoff(0.5, 300.0), 1) >= 1



# -- what happens to the messages not finished with ----------------------------------------------

def test_the_messages_behind_a_failed_one_wait_as_long_as_it_does() -> None:
    # Released at once, they were handed out by LocalStack before the failed message came back
    # from its backoff: the chaos suite saw version 1 of a book written after version 4.
    head = message("b", receive_count=3)
    results = [Result(message("a"), Outcome.STORED),
               Result(head, Outcome.RETRY, "SlowDown"),
               Result(message("c"), Outcome.RELEASED, "behind_retry"),
               Result(message("d"), Outcome.RELEASED, "behind_retry"),
               Result(message("e", group="other"), Outcome.RELEASED, "shutdown")]

    settlements = plan(results, Backoff(2.0, 300.0))

    delay = back_off_seconds(Backoff(2.0, 300.0), 3)
    assert [(s.message.message_id, s.action, s.seconds) for s in settlements] == [
        ("m-a", Action.DELETE, 0), ("m-b", Action.BACK_OFF, delay),
        ("m-c", Action.RELEASE, delay), ("m-d", Action.RELEASE, delay),
        ("m-e", Action.RELEASE, 0)]


def test_a_group_failed_as_a_whole_waits_for_its_most_retried_message() -> None:
    # An internal error fails every message of the group, whatever each one's receive count.
    results = [Result(message("a", receive_count=4), Outcome.RETRY, "internal_error"),
               Result(message("b", receive_count=1), Outcome.RETRY, "internal_error")]

    settlements = plan(results, Backoff(1.0, 300.0))

    assert [s.seconds for s in settlements] == [8, 8]


# -- batch calls never split a group -----------------------------------------------------------

def entry(group: str, n: int) -> HeldEntry:
    return HeldEntry(f"{group}-{n}", group, f"rh-{group}-{n}", 0.0)


def test_groups_are_never_split_across_batch_calls() -> None:
    entries = ([entry("a", n) for n in range(4)] + [entry("b", n) for n in range(5)]
               + [entry("c", n) for n in range(3)] + [entry("d", n) for n in range(1)])

    chunks = group_chunks(entries, lambda e: e.group_id)

    assert [[e.message_id for e in c] for c in chunks] == [
        [f"a-{n}" for n in range(4)] + [f"b-{n}" for n in range(5)],
        [f"c-{n}" for n in range(3)] + ["d-0"],
    ]


def test_a_group_keeps_its_receive_order_even_interleaved() -> None:
    entries = [entry("a", 0), entry("b", 0), entry("a", 1), entry("b", 1)]

    assert [[e.message_id for e in c] for c in group_chunks(entries, lambda e: e.group_id)] == [
        ["a-0", "a-1", "b-0", "b-1"]]


# -- settle --------------------------------------------------------------------------------------

def test_settling_a_batch_deletes_what_is_done_and_changes_the_rest_in_one_call_each() -> None:
    transport = FakeTransport()
    held = HeldMessages(transport, 30, 3600, clock=FakeClock())
    batch = [msg("a", "g1"), msg("b", "g2"), msg("c", "g2"), msg("d", "g3")]
    held.hold(batch, 1_000.0)
    results = [Result(batch[0], Outcome.STORED), Result(batch[1], Outcome.RETRY, "SlowDown"),
               Result(batch[2], Outcome.RELEASED, "behind_retry"),
               Result(batch[3], Outcome.DEAD_LETTERED, "not_json")]

    settled = settle(transport, plan(results, Backoff(2.0, 300.0)), held=held)

    assert transport.deleted == [["a", "d"]]
    assert transport.calls == [[("b", 2), ("c", 2)]]
    assert (settled.not_deleted, settled.not_changed) == ([], [])
    assert len(held) == 0


def test_what_sqs_refuses_is_reported_not_raised() -> None:
    transport = FakeTransport(failing={"a", "b"})

    settled = settle(transport, [Settlement(msg("a"), Action.DELETE),
                                 Settlement(msg("b"), Action.RELEASE)])

    assert ([m.receipt_handle for m in settled.not_deleted],
            [m.receipt_handle for m in settled.not_changed]) == (["a"], ["b"])


class DownTransport(FakeTransport):
    def delete(self, messages: Sequence[Message]) -> list[Message]:
        raise EndpointConnectionError(endpoint_url="http://sqs")


def test_an_aws_error_is_raised_with_nothing_held_any_more() -> None:
    # Held, they would be extended until the ceiling; let go, they come back when their lease
    # runs out.
    transport = DownTransport()
    held = HeldMessages(transport, 30, 3600, clock=FakeClock())
    held.hold([msg("a"), msg("b")], 1_000.0)

    with pytest.raises(EndpointConnectionError):
        settle(transport, [Settlement(msg("a"), Action.DELETE),
                           Settlement(msg("b"), Action.RELEASE)], held=held)

    assert len(held) == 0
    assert transport.calls == []


def test_a_hand_back_makes_each_group_visible_in_one_call() -> None:
    transport = FakeTransport()
    messages = ([msg(f"a{n}", "a") for n in range(6)] + [msg(f"b{n}", "b") for n in range(6)])

    settle(transport, hand_back(messages), failure_level=logging.INFO)

    assert transport.calls == [[(f"a{n}", 0) for n in range(6)],
                               [(f"b{n}", 0) for n in range(6)]]
