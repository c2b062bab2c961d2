"""Batches in flight: the pipelining limit, settling by the thread that finishes a batch's last
group, waiting with beats (none once a batch is stuck), the stop deadline."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from tests.support.aws import wait_until
from tests.support.fakes import msg
from workers.aws.sqs import Message
from workers.consumer.batches import InFlightBatches
from workers.consumer.internal_errors import ConsumerThread
from workers.lease.settle import Outcome, Result

# Upper bound for anything that should happen at once: never reached unless broken.
PATIENCE = 30.0


@dataclass
class Groups:
    """process_group for the tests: a group waits until opened, then is stored; the group
    named "boom" raises instead (a bug)."""

    gates: defaultdict[str, threading.Event] = field(
        default_factory=lambda: defaultdict(threading.Event))

    def open(self, *groups: str) -> None:
        for g in groups:
            self.gates[g].set()

    def __call__(self, messages: Sequence[Message]) -> list[Result]:
        group = messages[0].group_id
        assert self.gates[group].wait(PATIENCE)
        if group == "boom":
            raise RuntimeError("a bug")
        return [Result(m, Outcome.STORED) for m in messages]


@dataclass
class Fixture:
    groups: Groups
    batches: InFlightBatches
    settled: list[tuple[str, list[Result]]]  # (thread name, results) per settle
    beats: list[float]
    internal_errors: list[tuple[ConsumerThread, BaseException]]


def patience() -> Callable[[], bool]:
    """A `stopping` that gives up only once PATIENCE has run out."""
    deadline = time.monotonic() + PATIENCE
    return lambda: time.monotonic() > deadline


def stop_on_call(n: int) -> Callable[[], bool]:
    """A `stopping` that answers True from its n-th call on."""
    calls = iter(range(1, 1_000_000))
    return lambda: next(calls) >= n


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4, thread_name_prefix="group") as executor:
        yield executor


@pytest.fixture
def make(executor: ThreadPoolExecutor) -> Iterator[Callable[..., Fixture]]:
    made: list[Fixture] = []

    def make(group_limit: int = 2, stuck_after: float = 3600,
             settle: Callable[[list[Result]], None] | None = None) -> Fixture:
        groups, settled, beats, internal_errors = Groups(), [], [], []
        batches = InFlightBatches(
            slot=0, executor=executor, process_group=groups,
            settle=settle or (lambda results: settled.append(
                (threading.current_thread().name, results))),
            group_limit=group_limit, beat=lambda: beats.append(time.monotonic()),
            stuck_after=stuck_after,
            internal_error=lambda thread, exc: internal_errors.append((thread, exc)))
        made.append(Fixture(groups, batches, settled, beats, internal_errors))
        return made[-1]

    yield make
    for fx in made:  # let the executor shut down
        fx.groups.open(*fx.groups.gates, "a", "b", "c", "boom")


def test_the_thread_finishing_the_last_group_settles_the_whole_batch_once(make):
    fx = make()
    fx.batches.start([msg("a1", "a"), msg("b1", "b"), msg("a2", "a")])

    fx.groups.open("b")
    assert not fx.batches.drain(time.monotonic() + 0.2)  # group a still in progress
    assert fx.settled == []
    fx.groups.open("a")
    assert fx.batches.drain(time.monotonic() + PATIENCE)

    [(thread, results)] = fx.settled
    assert thread.startswith("group")  # a processing thread, not the receive loop
    assert sorted((r.message.receipt_handle, r.outcome) for r in results) == [
        ("a1", Outcome.STORED), ("a2", Outcome.STORED), ("b1", Outcome.STORED)]
    assert len(fx.batches) == 0


def test_receiving_waits_while_every_thread_has_a_group(make):
    fx = make(group_limit=2)
    fx.batches.start([msg("a1", "a")])  # a batch of one group, as FIFO receives often are
    assert fx.batches.wait_for_room(stop_on_call(1))  # a thread is free: no wait

    fx.batches.start([msg("b1", "b")])
    assert not fx.batches.wait_for_room(stop_on_call(1))  # both busy: waits until the stop

    fx.groups.open("b")
    assert fx.batches.wait_for_room(patience())  # a finished group makes room
    assert len(fx.batches) == 1


def test_a_batch_of_many_groups_holds_the_next_receive_back(make):
    fx = make(group_limit=2)
    fx.batches.start([msg("a1", "a"), msg("b1", "b"), msg("c1", "c")])
    assert not fx.batches.wait_for_room(stop_on_call(1))  # 3 groups for 2 threads

    fx.groups.open("c")
    assert not fx.batches.wait_for_room(stop_on_call(1))  # still 2 unfinished
    fx.groups.open("b")
    assert fx.batches.wait_for_room(patience())  # one left: a thread is free
    assert len(fx.batches) == 1  # the batch itself waits for its last group


def test_a_group_that_raises_is_retried_never_dropped(make):
    def retried() -> float:
        return REGISTRY.get_sample_value("shelver_messages_retried_total",
                                         {"reason": "RuntimeError"}) or 0.0
    before = retried()
    fx = make()
    fx.batches.start([msg("x1", "boom"), msg("c1", "c"), msg("x2", "boom")])

    fx.groups.open("boom", "c")
    assert fx.batches.drain(time.monotonic() + PATIENCE)

    [(_, results)] = fx.settled
    assert sorted((r.message.receipt_handle, r.outcome, r.reason) for r in results) == [
        ("c1", Outcome.STORED, ""),
        ("x1", Outcome.RETRY, "internal_error"), ("x2", Outcome.RETRY, "internal_error")]
    assert retried() - before == 2


def test_waiting_beats_every_second(make):
    fx = make(group_limit=1)
    fx.batches.start([msg("a1", "a")])

    assert not fx.batches.wait_for_room(stop_on_call(3))

    assert len(fx.beats) == 2  # after the 1st and 2nd second, not after the stop


def test_a_stuck_batch_stops_the_beats_so_the_pool_replaces_the_consumer(make):
    fx = make(group_limit=1, stuck_after=0)
    fx.batches.start([msg("a1", "a")])

    assert not fx.batches.wait_for_room(stop_on_call(3))

    assert fx.beats == []


def test_a_settle_that_raises_is_an_internal_error_not_a_lost_exception(make):
    bug = ValueError("a bug in the settle")

    def settle(results: list[Result]) -> None:
        raise bug

    fx = make(settle=settle)
    fx.batches.start([msg("a1", "a")])
    fx.groups.open("a")

    # A Future's done-callback: concurrent.futures would only have logged it and gone on.
    wait_until(lambda: fx.internal_errors, PATIENCE, 0.01, "the internal error")
    assert fx.internal_errors == [("settle", bug)]
