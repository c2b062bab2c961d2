"""Queue depths for the metrics, sampled by a replica's first consumer between receives.

A sample every `QUEUE_SAMPLE_SECONDS`, not per receive or per scrape: the gauges only need to be
roughly current, and each sample costs SQS calls, one for the input queue and one for its
dead-letter queue (when it has one). The depths are the queue's, the same whoever asks, so one
consumer of a replica (slot `SAMPLING_SLOT`, which every pool has and refills when its consumer
dies) samples them: more would pay for the same figures again, `CONSUMERS` times over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Gauge

from workers import metrics
from workers.aws import AWS_ERRORS
from workers.aws.errors import failure_fields

log = logging.getLogger(__name__)

SAMPLING_SLOT = 0


class Depths(Protocol):
    """What sampling needs of the SQS transport (`workers.aws.sqs.SqsTransport`)."""

    def depth(self) -> tuple[int, int] | None: ...

    def dead_letter_depth(self) -> tuple[int, int] | None: ...


@dataclass(eq=False)
class QueueDepthSampler:
    slot: int
    transport: Depths
    every_seconds: float
    clock: Callable[[], float] = time.monotonic
    _next_sample: float = field(default=0.0, init=False)  # clock time; the first call samples

    def sample_if_due(self) -> None:
        if self.slot != SAMPLING_SLOT:
            return
        now = self.clock()
        if now < self._next_sample:
            return
        self._next_sample = now + self.every_seconds
        self._sample("input", self.transport.depth, metrics.QUEUE_MESSAGES)
        # Apart: a DLQ this consumer may not read (IAM) must not hide the input queue's depth.
        self._sample("dead-letter", self.transport.dead_letter_depth,
                     metrics.DEAD_LETTER_QUEUE_MESSAGES)

    def _sample(self, queue: str, read: Callable[[], tuple[int, int] | None], gauge: Gauge
                ) -> None:
        try:
            depth = read()
        except AWS_ERRORS as exc:
            log.warning("consumer %d could not sample %s queue depth: %s", self.slot, queue, exc,
                        extra=failure_fields(exc))
            return
        if depth is not None:
            visible, in_flight = depth
            gauge.labels(state="visible").set(visible)
            gauge.labels(state="in_flight").set(in_flight)
