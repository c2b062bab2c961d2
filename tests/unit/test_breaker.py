"""The circuit breaker: a batch that fails as a whole pauses receiving, 1, 2, 4 ... s up to the
cap; the first batch that makes progress closes it again."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.support.fakes import FakeClock, msg
from workers.backoff import Backoff
from workers.consumer.breaker import Breaker
from workers.lease.settle import Outcome, Result

CAP = 30.0


@dataclass
class Fixture:
    clock: FakeClock = field(default_factory=FakeClock)
    reports: list[str | None] = field(default_factory=list)
    breaker: Breaker = field(init=False)

    def __post_init__(self) -> None:
        self.breaker = Breaker(0, self.reports.append, Backoff(1.0, CAP), clock=self.clock)


def failed(reason: str = "SlowDown") -> list[Result]:
    """A batch in which every group's head failed and the rest waits behind it."""
    return [Result(msg("a", "g1"), Outcome.RETRY, reason),
            Result(msg("b", "g1"), Outcome.RELEASED, "behind_retry"),
            Result(msg("c", "g2"), Outcome.RETRY, reason)]


def progressed() -> list[Result]:
    return [Result(msg("d", "g1"), Outcome.STORED),
            Result(msg("e", "g2"), Outcome.RETRY, "SlowDown")]


def test_whole_batches_failing_pause_receives_longer_each_time_up_to_the_cap():
    fx = Fixture()
    pauses = []
    for _ in range(7):
        fx.breaker.record(failed())
        pauses.append(fx.breaker.remaining())

    assert pauses == [1, 2, 4, 8, 16, 30, 30]
    assert fx.reports == ["SlowDown"] * 7  # each trip refreshes /health's failing_at


def test_the_pause_runs_out():
    fx = Fixture()
    fx.breaker.record(failed())
    fx.breaker.record(failed())  # 2 s

    fx.clock.now += 1.5
    assert fx.breaker.remaining() == 0.5
    fx.clock.now += 1
    assert fx.breaker.remaining() == 0


def test_a_batch_that_makes_progress_closes_the_breaker_once():
    fx = Fixture()
    fx.breaker.record(failed("SlowDown"))
    fx.breaker.record(failed("SlowDown"))

    fx.breaker.record(progressed())
    fx.breaker.record(progressed())

    assert fx.reports == ["SlowDown", "SlowDown", None]
    fx.clock.now += 10
    fx.breaker.record(failed("InternalError"))
    assert fx.breaker.remaining() == 1  # the doubling starts over
    assert fx.reports[-1] == "InternalError"


def test_batches_without_failures_never_trip_nor_report():
    fx = Fixture()
    fx.breaker.record([Result(msg("a"), Outcome.STORED), Result(msg("b"), Outcome.DEAD_LETTERED)])
    fx.breaker.record([Result(msg("c"), Outcome.RELEASED, "shutdown")])

    assert fx.breaker.remaining() == 0
    assert fx.reports == []


def test_the_reason_reported_is_the_first_failure_of_the_batch():
    fx = Fixture()
    fx.breaker.record([Result(msg("a", "g1"), Outcome.RELEASED, "shutdown"),
                       Result(msg("b", "g2"), Outcome.RETRY, "ServiceUnavailable"),
                       Result(msg("c", "g3"), Outcome.RETRY, "SlowDown")])

    assert fx.reports == ["ServiceUnavailable"]
