"""Queue depths are sampled by one consumer of a replica, at most every QUEUE_SAMPLE_SECONDS, the
dead-letter queue's with the input queue's, and a failed sample is no error."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prometheus_client import REGISTRY

from tests.support.fakes import FakeClock
from workers.consumer.queue_depth import QueueDepthSampler

Answer = tuple[int, int] | Exception | None


@dataclass
class DepthTransport:
    """Answers depth() and dead_letter_depth() from lists, one answer per call."""

    answers: list[Answer] = field(default_factory=list)
    dead_letter_answers: list[Answer] = field(default_factory=list)
    calls: int = 0

    def depth(self) -> tuple[int, int] | None:
        self.calls += 1
        return self._answer(self.answers)

    def dead_letter_depth(self) -> tuple[int, int] | None:
        return self._answer(self.dead_letter_answers)

    @staticmethod
    def _answer(answers: list[Answer]) -> tuple[int, int] | None:
        answer = answers.pop(0) if answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer


def gauge(state: str, name: str = "shelver_queue_messages") -> float | None:
    return REGISTRY.get_sample_value(name, {"state": state})


def dead_letter_gauge(state: str) -> float | None:
    return gauge(state, "shelver_dead_letter_queue_messages")


def make(transport: DepthTransport, clock: FakeClock) -> QueueDepthSampler:
    return QueueDepthSampler(0, transport, 15, clock=clock)


def test_the_first_call_samples_then_only_every_period():
    transport, clock = DepthTransport([(7, 3), (5, 1)]), FakeClock()
    sampler = make(transport, clock)

    sampler.sample_if_due()
    assert (gauge("visible"), gauge("in_flight")) == (7, 3)
    clock.now += 14.9
    sampler.sample_if_due()
    assert transport.calls == 1
    clock.now += 0.1
    sampler.sample_if_due()
    assert transport.calls == 2
    assert (gauge("visible"), gauge("in_flight")) == (5, 1)


def test_a_failed_sample_keeps_the_last_figures_and_waits_a_period(
        caplog: pytest.LogCaptureFixture):
    transport, clock = DepthTransport([(4, 2), EndpointConnectionError(endpoint_url="x"), (1, 0)]
                                      ), FakeClock()
    sampler = make(transport, clock)
    sampler.sample_if_due()

    clock.now += 15
    sampler.sample_if_due()

    assert (gauge("visible"), gauge("in_flight")) == (4, 2)
    assert "could not sample input queue depth" in caplog.text
    clock.now += 1
    sampler.sample_if_due()
    assert transport.calls == 2  # no retry before the period is over


def test_the_dead_letter_queue_is_sampled_with_the_input_queue():
    transport = DepthTransport([(9, 1), (9, 1)], dead_letter_answers=[(3, 0), (4, 1)])
    clock = FakeClock()
    sampler = make(transport, clock)

    sampler.sample_if_due()
    assert (dead_letter_gauge("visible"), dead_letter_gauge("in_flight")) == (3, 0)
    clock.now += 15
    sampler.sample_if_due()
    assert (dead_letter_gauge("visible"), dead_letter_gauge("in_flight")) == (4, 1)


def test_a_dead_letter_queue_that_cannot_be_read_leaves_the_input_depth_alone(
        caplog: pytest.LogCaptureFixture):
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}},
                         "GetQueueAttributes")
    transport = DepthTransport([(6, 2), (8, 0)], dead_letter_answers=[(2, 0), denied])
    clock = FakeClock()
    sampler = make(transport, clock)
    sampler.sample_if_due()

    clock.now += 15
    sampler.sample_if_due()

    assert (gauge("visible"), gauge("in_flight")) == (8, 0)
    assert (dead_letter_gauge("visible"), dead_letter_gauge("in_flight")) == (2, 0)
    assert "could not sample dead-letter queue depth" in caplog.text


@pytest.mark.parametrize("slot", [1, 2, 63])
def test_only_the_first_consumer_of_a_replica_samples(slot: int):
    # The depths are the queue's, the same for every consumer: one sampler per replica is
    # enough, and the others' GetQueueAttributes calls would be paid for nothing.
    transport, clock = DepthTransport([(7, 3)], dead_letter_answers=[(1, 0)]), FakeClock()
    sampler = QueueDepthSampler(slot, transport, 15, clock=clock)

    for _ in range(3):
        sampler.sample_if_due()
        clock.now += 15

    assert transport.calls == 0
    assert transport.dead_letter_answers == [(1, 0)]
