"""Queue depth for the metrics, sampled by a consumer between receives.

A sample every `QUEUE_SAMPLE_SECONDS`, not per receive or per scrape: the gauge only needs to be
roughly current, and each sample is one more SQS call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from workers import metrics
from workers.transport import SqsTransport

log = logging.getLogger(__name__)


class QueueDepthSampler:
    def __init__(
        self,
        slot: int,
        transport: SqsTransport,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slot = slot
        self._transport = transport
        self._every = every_seconds
        self._clock = clock
        self._next_sample = 0.0  # clock time; the first call samples

    def sample_if_due(self) -> None:
        now = self._clock()
        if now < self._next_sample:
            return
        self._next_sample = now + self._every
        try:
            visible, in_flight = self._transport.depth()
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("consumer %d could not sample queue depth: %s", self._slot, exc)
            return
        metrics.QUEUE_MESSAGES.labels(state="visible").set(visible)
        metrics.QUEUE_MESSAGES.labels(state="in_flight").set(in_flight)
