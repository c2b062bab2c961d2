"""Queue depth is sampled at most every QUEUE_SAMPLE_SECONDS, and a failed sample is no error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import pytest
from botocore.exceptions import EndpointConnectionError
from prometheus_client import REGISTRY

from tests.support.fakes import FakeClock
from workers.queue_depth import QueueDepthSampler
from workers.transport import SqsTransport


@dataclass
class DepthTransport:
    answers: list[tuple[int, int] | Exception] = field(default_factory=list)
    calls: int = 0

    def depth(self) -> tuple[int, int]:
        answer = self.answers[self.calls]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def gauge(state: str) -> float | None:
    return REGISTRY.get_sample_value("shelver_queue_messages", {"state": state})


def make(transport: DepthTransport, clock: FakeClock) -> QueueDepthSampler:
    return QueueDepthSampler(0, cast(SqsTransport, transport), 15, clock=clock)


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
    assert "could not sample queue depth" in caplog.text
    clock.now += 1
    sampler.sample_if_due()
    assert transport.calls == 2  # no retry before the period is over
