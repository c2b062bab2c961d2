"""A consumer's keeper thread: keeps the messages it holds invisible, and the consumer from
outliving the gunicorn master.

Orphaning is caught twice: Linux sends a parent-death signal (`die_with_parent`), and the keeper
watches getppid() in case the signal never came (not Linux, or the parent died before prctl).

A failed AWS call only waits for the next round; any other exception is a bug that would stop
both jobs in silence, so it ends the consumer (`workers.consumer.internal_errors`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from workers.aws import AWS_ERRORS
from workers.aws.errors import failure_fields
from workers.consumer.internal_errors import exit_at_once, exit_on_internal_error
from workers.lease.held import HeldMessages
from workers.lease.settle import Transport, hand_back, settle

log = logging.getLogger(__name__)

# Exit code of a consumer that stopped because its parent was gone.
EXIT_ORPHANED = 4
# After the parent dies, the consumer has this long to hand back what it holds before it exits
# anyway (its messages then reappear once their visibility runs out: late, not lost).
ORPHAN_GRACE_SECONDS = 3.0
# How often the parent is checked before any message is held.
_IDLE_INTERVAL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the thread that spawned us (the pool's) goes away."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the keeper's getppid() watch still catches orphaning


@dataclass(eq=False)
class Keeper:
    slot: int
    parent_pid: int
    # Asks the main loop to stop gracefully once the parent is gone; `exit_now` ends the
    # process if that takes longer than the grace period.
    stop: Callable[[], None]
    _: KW_ONLY
    clock: Callable[[], float] = time.monotonic
    parent: Callable[[], int] = os.getppid
    exit_now: Callable[[int], object] = exit_at_once
    _held: HeldMessages | None = field(default=None, init=False)
    _transport: Transport | None = field(default=None, init=False)
    _orphaned_at: float | None = field(default=None, init=False)

    @property
    def orphaned(self) -> bool:
        return self._orphaned_at is not None

    def start(self) -> None:
        threading.Thread(target=self._run, name="keeper", daemon=True).start()

    def keep(self, held: HeldMessages, transport: Transport) -> None:
        """From now on, extend these messages' visibility, and hand them back through
        `transport` if orphaned (the queue is known only after the keeper started: it watches
        the parent while the consumer looks the queue up)."""
        self._held, self._transport = held, transport

    def _run(self) -> None:
        try:
            while True:
                held = self._held
                time.sleep(held.check_interval if held is not None else _IDLE_INTERVAL_SECONDS)
                if held is not None:
                    self.extend(held)
                self.watch_parent()
        except Exception as exc:
            held = self._held
            exit_on_internal_error(self.slot, "keeper", exc,
                                   held.processing if held is not None else None, self.exit_now)

    def extend(self, held: HeldMessages) -> None:
        try:
            held.extend_due()
        except AWS_ERRORS as exc:
            log.warning("consumer %d could not extend visibility: %s", self.slot, exc,
                        extra=failure_fields(exc))

    def watch_parent(self) -> None:
        if self.parent() == self.parent_pid:
            return
        if self._orphaned_at is None:
            log.error("consumer %d: the gunicorn master is gone, stopping", self.slot)
            self._orphaned_at = self.clock()
            self.stop()
        elif self.clock() - self._orphaned_at > ORPHAN_GRACE_SECONDS:
            self._hand_back()

    def _hand_back(self) -> None:
        """Orphaned and the main loop is still busy (e.g. in a long poll): hand back everything
        we hold, messages in processing included (whatever a processing thread still writes is
        conditional on the file as it found it, see workers.lease.handback), then exit at once."""
        held, transport = self._held, self._transport
        if held is not None and transport is not None:
            # If this fails they reappear after their visibility timeout anyway.
            with contextlib.suppress(*AWS_ERRORS):
                settle(transport, hand_back(held.held_messages()), held=held)
            held.close()  # a stop, not a crash: what was in processing does not count
        self.exit_now(EXIT_ORPHANED)
