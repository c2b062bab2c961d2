"""Messages a consumer holds, and the extensions that keep them invisible while it does.

A FIFO message that becomes visible again while we still work on it would be delivered to another
consumer: a duplicate write, and possibly an out-of-order one. So every message between its
receive and its settlement (`workers.lease.settle`) is held here and its visibility is extended
before it runs out, up to a ceiling after which we let SQS hand it out again (the consumer is
presumably stuck).

One lock covers the held set and every visibility change, so an extension can never land after a
back-off, release or hand-back and hide again a message that was just made visible.

Given a `ConsumerRecord`, the registry is also kept in the consumer's held file
(`workers.lease.files`), so that a successor can hand the messages back if this process dies.
The file only ever claims less than the truth: a message leaves it before the call that ends our
hold on it (delete, back off, release, hand back), and its `visible_until` moves on only after an
extension succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from workers import metrics
from workers.aws.sqs import Message
from workers.lease.files import ConsumerRecord, ProcessingSlots

log = logging.getLogger(__name__)


@dataclass
class _Held:
    message: Message
    # Monotonic, at or before the moment SQS started the visibility timeout: the start of the
    # receive call, so that `visible_at` never overestimates.
    received_at: float
    visible_at: float  # monotonic: when SQS will hand the message out again


class Visibility(Protocol):
    """What holding needs of the SQS transport (`workers.aws.sqs.SqsTransport`)."""

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]: ...


class HeldMessages:
    def __init__(
        self,
        transport: Visibility,
        lease_seconds: int,
        ceiling_seconds: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        record: ConsumerRecord | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        # How long a receive or an extension keeps a message invisible: messages of a consumer
        # that died (or of a receive answer that reached no one) are free again this soon.
        self._timeout = lease_seconds
        self._ceiling = ceiling_seconds
        self._clock = clock
        self._record = record
        self._wall = wall
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    @property
    def lease(self) -> int:
        return self._timeout

    @property
    def processing(self) -> ProcessingSlots | None:
        """The consumer's processing slots, if it keeps its files."""
        return self._record.processing if self._record is not None else None

    @property
    def check_interval(self) -> float:
        """How often `extend_due` must run to extend every message in time."""
        return max(0.05, min(1.0, self._timeout / 4))

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, messages: Sequence[Message], received_at: float) -> None:
        """`received_at`: monotonic time at or before SQS received the call (its start)."""
        with self._lock:
            for m in messages:
                self._held[m.receipt_handle] = _Held(m, received_at, received_at + self._timeout)
            self._persist()

    def forget(self, messages: Sequence[Message]) -> None:
        """Stop holding these messages (an extension landing after their delete is harmless)."""
        with self._lock:
            self._drop(messages)

    @contextlib.contextmanager
    def letting_go(self, messages: Sequence[Message]) -> Iterator[None]:
        """Stop holding these messages, and keep every extension out until the block ends: the
        block makes them visible (`workers.lease.settle`), and no extension may hide them again
        after that."""
        with self._lock:
            self._drop(messages)
            yield

    def _drop(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self._held.pop(m.receipt_handle, None)
        self._persist()

    def close(self) -> None:
        """This process stops on purpose: see `ConsumerRecord.close`."""
        if self._record is not None:
            with self._lock:
                self._record.close()

    def _persist(self) -> None:
        """Rewrite the held file (under the lock, so writes land in the order of the changes)."""
        if self._record is None:
            return
        to_wall = self._wall() - self._clock()
        self._record.held.write((h.message, h.visible_at + to_wall) for h in self._held.values())

    def held_messages(self) -> list[Message]:
        with self._lock:
            return [h.message for h in self._held.values()]

    def extend_due(self) -> int:
        """Extend every held message whose visibility runs out within half a timeout."""
        with self._lock:
            now = self._clock()
            due = [
                h for h in self._held.values()
                if h.visible_at - now < self._timeout / 2
                and now + self._timeout - h.received_at <= self._ceiling
            ]
            if not due:
                return 0
            failed = self.transport.change_visibility([(h.message, self._timeout) for h in due])
            failed_handles = {m.receipt_handle for m in failed}
            for h in due:
                if h.message.receipt_handle not in failed_handles:
                    h.visible_at = now + self._timeout
            self._persist()
        extended = len(due) - len(failed)
        metrics.VISIBILITY_EXTENSIONS.inc(extended)
        return extended
