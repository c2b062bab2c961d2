"""The one backoff policy: capped doubling.

Whatever fails again and again waits longer each time, and never longer than a cap:
- the pool, before it restarts a consumer that keeps dying soon after its start (0, 2, 4 ... 60 s);
- a consumer, after a failed queue lookup or receive (1, 2, 4 ... 30 s);
- a consumer's breaker, while whole batches fail (1, 2, 4 ... 30 s);
- a failed message, kept invisible before its next receive (RETRY_BACKOFF_BASE_SECONDS,
  doubling per receive, up to RETRY_BACKOFF_MAX_SECONDS).

No jitter: the consumers of one instance fail apart (each its own messages, its own calls), and
SQS spreads a failed message's next receive by its own visibility timeout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float  # seconds after the first failure
    cap: float  # seconds at most

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row: none for none, then `first`,
        twice that, and so on, at most `cap`."""
        if failures < 1:
            return 0.0
        return min(self.cap, self.first * 2.0 ** min(failures - 1, 64))
