"""A consumer's circuit breaker: when a whole batch fails (S3 down, say), pause receiving.

Receiving more would only fail more messages, and every receive of a message counts towards the
queue's maxReceiveCount: a message still failing one receive before it is dead-lettered
(`retries_exhausted`, workers/books/processor.py), valid book or not. The pause doubles
while whole batches keep failing (1, 2, 4 ... up to a cap) and ends with the first batch that
makes progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from workers.backoff import Backoff
from workers.lease.settle import Outcome, Result

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Breaker:
    slot: int
    # Hears why batches fail (e.g. "SlowDown") on each trip, and None once they make progress
    # again: /health needs it, since receives still succeed while S3 is down.
    report: Callable[[str | None], None]
    backoff: Backoff
    clock: Callable[[], float] = time.monotonic
    _failed: int = field(default=0, init=False)  # whole batches failed in a row
    _pause: float = field(default=0.0, init=False)  # seconds
    _paused_until: float = field(default=0.0, init=False)  # clock time
    _failing: str | None = field(default=None, init=False)
    # Batches in flight together settle on different processing threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def record(self, results: Sequence[Result]) -> None:
        """Take the outcome of one settled batch."""
        retried = [r for r in results if r.outcome is Outcome.RETRY]
        with self._lock:
            if not retried or any(r.outcome.done for r in results):
                self._failed = 0
                if self._failing is None:
                    return
                self._failing = None
            else:
                self._failed += 1
                self._pause = self.backoff.delay(self._failed)
                self._paused_until = self.clock() + self._pause
                self._failing = retried[0].reason
                log.warning("consumer %d: every message of the batch failed, pausing receives "
                            "for %.0f s", self.slot, self._pause,
                            extra={"reason": self._failing})
            self.report(self._failing)

    def remaining(self) -> float:
        """Seconds left of the current pause (0 when receiving may go on)."""
        return max(0.0, self._paused_until - self.clock())
