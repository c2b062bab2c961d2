"""A consumer's signals, handled as gunicorn's arbiter does: a handler sets a flag and wakes the
main thread through a self-pipe, nothing else.

TERM/INT stop gracefully, USR1 asks an idle consumer for an immediate poll (it does not cut a
backoff short), HUP is ignored (the pool reloads us),
and ALRM abandons a long poll that is still waiting a moment after a stop.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType

# A stop during a long poll gives it this long to answer before abandoning it: a busy queue
# answers within milliseconds, and the messages of that answer must be handed back, not left
# invisible until their visibility timeout; a poll still waiting by then has nothing to lose.
LONG_POLL_STOP_GRACE_SECONDS = 1.0


class LongPollAbandoned(BaseException):
    """Raised by the stop signal handler into a long poll in progress."""


class Signals:
    def __init__(self) -> None:
        self._stopping = False
        self._in_long_poll = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def install(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._handle_stop)
        signal.signal(signal.SIGINT, self._handle_stop)
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # the wakeup fd does the work
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, self._abandon_long_poll)

    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Stop without a signal (the keeper found us orphaned): a sleep ends at once, a long
        poll in progress is left to the keeper's orphan grace."""
        self._stopping = True
        self.wake()

    def wake(self) -> None:
        # A full pipe means a wake-up is already pending: wake-ups coalesce.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"!")

    def sleep(self, seconds: float, beat: Callable[[], None], *, wakeable: bool = False) -> None:
        """Sleep until the timeout or a stop; a `wakeable` sleep (the pause between polls) also
        ends at a wake-up (USR1, from `/`). Pending wake-ups are drained either way.

        A backoff is not wakeable: `/` polled by a load balancer every few seconds would turn
        it into a retry loop. A wake-up that comes during one (or during a poll, from a `/`
        that read an older state) is dropped: the next poll comes anyway.

        Beats every second meanwhile: a consumer waiting on purpose is alive, and the pool must
        not take a long POLL_INTERVAL_SECONDS or error backoff for a hang."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if select.select([self._wake_r], [], [], min(remaining, 1.0))[0]:
                self._drain()
                if wakeable:
                    return
                continue  # a stop is seen by the loop's test, a wake-up is ignored
            beat()
        self._drain()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    @contextlib.contextmanager
    def long_poll(self) -> Iterator[None]:
        """Mark a long poll in progress: a stop meanwhile abandons it after the grace period,
        raising `LongPollAbandoned` out of this block."""
        self._in_long_poll = True
        try:
            if self._stopping:
                # A stop that came after the loop's last look and before the flag above armed
                # no timer: the poll would sit out its whole WaitTimeSeconds. It is not started.
                raise LongPollAbandoned
            yield
        finally:
            self._in_long_poll = False

    def _handle_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        if self._in_long_poll:
            # Abandon the long poll rather than sit out WaitTimeSeconds (a deploy should not
            # take 20 s), but not at once: an answer may be on its way (chaos suite, deploy).
            signal.setitimer(signal.ITIMER_REAL, LONG_POLL_STOP_GRACE_SECONDS)

    def _abandon_long_poll(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping and self._in_long_poll:
            # A BaseException passes through botocore's `except Exception`; only an answer
            # arriving at this very moment could be lost, and its messages then reappear
            # after their visibility timeout (late, not lost).
            self._in_long_poll = False
            raise LongPollAbandoned
