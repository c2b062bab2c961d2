"""Queue depth for the metrics, sampled by a consumer between receives.

A sample every `QUEUE_SAMPLE_SECONDS`, not per receive or per scrape: the gauge only needs to be
roughly current, and each sample is one more SQS call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from workers import metrics
from workers.processing import failure_fields
from workers.transport import SqsTransport

log = logging.getLogger(__name__)


@dataclass(eq=False)
class QueueDepthSampler:
    slot: int
    transport: SqsTransport
    every_seconds: float
    clock: Callable[[], float] = time.monotonic
    _next_sample: float = field(default=0.0, init=False)  # clock time; the first call samples

    def sample_if_due(self) -> None:
        now = self.clock()
        if now < self._next_sample:
            return
        self._next_sample = now + self.every_seconds
        try:
            visible, in_flight = self.transport.depth()
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("consumer %d could not sample queue depth: %s", self.slot, exc,
                        extra=failure_fields(exc))
            return
        metrics.QUEUE_MESSAGES.labels(state="visible").set(visible)
        metrics.QUEUE_MESSAGES.labels(state="in_flight").set(in_flight)
