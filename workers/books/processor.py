"""What happens to one message, and to one message group, independent of SQS mechanics.

The result of each message says what the transport must do with it: delete it (stored or
dead-lettered), back it off (transient failure, or a poison message with no DLQ to send it to), or
release it untouched (behind a failed message in its group, or at shutdown).

A transient failure is backed off until the message has spent the receives SQS's redrive leaves
it (`retries_exhausted_at`); then Shelver dead-letters it itself, reason `retries_exhausted`,
and the rest of its group goes on at once: SQS would otherwise move it, and the messages behind
it, without a reason.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from workers import metrics
from workers.aws import AWS_ERRORS
from workers.aws.errors import failure_fields, failure_reason
from workers.aws.sqs import Message, SqsTransport
from workers.backoff import Backoff
from workers.books.decode import InvalidBook, decode_book
from workers.books.store import BookStore, KeyConflict, Origin, StoredBook, WriteContention
from workers.lease.crashes import CrashRegistry, ProcessingGate
from workers.lease.files import ProcessingSlots

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    STORED = "stored"
    DEAD_LETTERED = "dead_lettered"
    RETRY = "retry"
    RELEASED = "released"

    @property
    def done(self) -> bool:
        """The message is finished with and must be deleted from the input queue."""
        return self in (Outcome.STORED, Outcome.DEAD_LETTERED)


@dataclass(frozen=True)
class Result:
    message: Message
    outcome: Outcome
    reason: str = ""


def retries_exhausted_at(max_receive_count: int | None) -> int | None:
    """The receive count from which a message whose processing fails transiently is
    dead-lettered by Shelver (reason `retries_exhausted`) instead of backed off; None when the
    queue has no RedrivePolicy (nothing ever moves its messages, and there is no DLQ).

    SQS's redrive moves a message that was received `maxReceiveCount` times at its next
    receive, with no reason, and the messages of its group behind it with it: a receive that
    returns a message returns those before it in its group, so theirs counts are never above
    its own. Shelver must act before that. At receive `maxReceiveCount` itself it still could,
    but a DLQ send that failed there would leave no receive to try again; one receive earlier
    leaves exactly one. So a failing message gets `maxReceiveCount` - 2 backoffs; with
    `maxReceiveCount` 1 or 2 its first failure dead-letters it."""
    if max_receive_count is None:
        return None
    return max(1, max_receive_count - 1)


def crash_limit_warning(dead_letter_after: int, max_receive_count: int | None) -> str | None:
    """Why CRASH_DEAD_LETTER_AFTER is too high for the queue's redrive, or None. Each death
    spends a receive of the message that causes it (the hand-back makes it visible, the next
    consumer receives it), so it is dead-lettered as `crashed_consumer` at its receive
    `dead_letter_after` + 1; that must come no later than `retries_exhausted_at`, which keeps
    one receive for a failed DLQ send, or SQS's redrive may move it, and its group's messages
    behind it, first and with no reason."""
    last = retries_exhausted_at(max_receive_count)
    if last is None or dead_letter_after < last:
        return None
    return (f"CRASH_DEAD_LETTER_AFTER={dead_letter_after} must be below {last} (the input "
            f"queue's maxReceiveCount {max_receive_count} less one): a message that kills its "
            f"consumer is dead-lettered only at its receive {dead_letter_after + 1}, and SQS "
            "may move it, and the valid books behind it in its group, to the DLQ first with "
            "no reason")


def message_fields(message: Message, outcome: Outcome) -> dict[str, str]:
    """What became of a message."""
    return {"message_id": message.message_id, "group_id": message.group_id,
            "outcome": outcome.value}


def stored_fields(message: Message, book_id: str, stored: StoredBook) -> dict[str, str]:
    """A stored message; reason: how the book was written (created, replaced, superseded: not
    written)."""
    return {**message_fields(message, Outcome.STORED), "reason": stored.reason,
            "book_id": book_id, "bucket": stored.bucket, "key": stored.key}


class BookProcessor:
    def __init__(
        self,
        store: BookStore,
        transport: SqsTransport,
        genre_buckets: Mapping[str, str],
        *,
        crashes: CrashRegistry | None = None,
        slots: ProcessingSlots | None = None,
        gate: ProcessingGate | None = None,
    ) -> None:
        self._store = store
        self._transport = transport
        self._genre_buckets = genre_buckets
        # Messages that crashed consumers too often are dead-lettered instead of processed, and
        # those that crashed one are processed alone, so the next death is rightly theirs.
        self._crashes = crashes
        self._gate = gate or ProcessingGate()
        # Where each thread says which message it is on, for the crash count if we die.
        self._slots = slots
        self._exhausted_at = retries_exhausted_at(transport.queue.max_receive_count)

    def process_group(
        self, messages: Sequence[Message], stopping: Callable[[], bool]
    ) -> list[Result]:
        """Process one group's messages strictly in order.

        The first message that must be retried stops the group: the ones after it are released
        so SQS hands them out again only after it, which keeps the group's order.
        """
        results: list[Result] = []
        for index, message in enumerate(messages):
            if stopping():
                results.extend(Result(m, Outcome.RELEASED, "shutdown") for m in messages[index:])
                break
            result = self.process(message)
            results.append(result)
            if result.outcome is Outcome.RETRY:
                results.extend(Result(m, Outcome.RELEASED, "behind_retry")
                               for m in messages[index + 1:])
                break
        return results

    def process(self, message: Message) -> Result:
        started = time.perf_counter()
        try:
            crashes = 0 if self._crashes is None else self._crashes.crashes(message.message_id)
            if self._crashes is not None and crashes >= self._crashes.dead_letter_after:
                return self._reject(message, InvalidBook(
                    "crashed_consumer",
                    f"a consumer died {crashes} time(s) while processing this message"))
            if crashes:
                log.info("message %s was in processing at %d death(s) of its consumer: "
                         "processing it alone", message.message_id, crashes,
                         extra={"message_id": message.message_id, "group_id": message.group_id,
                                "reason": "crashed_consumer"})
            with self._gate.alone() if crashes else self._gate.shared():
                if self._slots is not None:
                    self._slots.begin(message.message_id)
                try:
                    return self._process(message)
                finally:
                    if self._slots is not None:
                        self._slots.end()
        finally:
            metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)

    def _process(self, message: Message) -> Result:
        try:
            book = decode_book(message.body, self._genre_buckets)
        except InvalidBook as invalid:
            return self._reject(message, invalid)
        try:
            with metrics.S3_PUT_SECONDS.time():
                stored = self._store.store(book, Origin(
                    message.message_id, message.group_id, message.sequence,
                    message.receive_count))
        except KeyConflict as conflict:
            return self._reject(message, InvalidBook("key_conflict", str(conflict)), book.id)
        except (*AWS_ERRORS, WriteContention) as exc:
            reason = failure_reason(exc)
            if self._exhausted_at is not None and message.receive_count >= self._exhausted_at:
                return self._reject(message, InvalidBook(
                    "retries_exhausted",
                    f"failed at receive {message.receive_count} of the queue's maxReceiveCount "
                    f"{self._transport.queue.max_receive_count}, after which SQS would move it "
                    f"with no reason: {reason}: {exc}"), book.id)
            log.warning("book %r (message %s) not stored, will retry: %s",
                        book.id, message.message_id, exc,
                        extra={**message_fields(message, Outcome.RETRY), **failure_fields(exc),
                               "book_id": book.id, "bucket": book.bucket})
            metrics.MESSAGES_RETRIED.labels(reason=reason).inc()
            return Result(message, Outcome.RETRY, reason)
        if not stored.written:
            # A redelivery of what a consumer that died before its delete had written already.
            log.info("book %r (message %s) not written: s3://%s/%s holds a later message of "
                     "group %s", book.id, message.message_id, stored.bucket, stored.key,
                     message.group_id, extra=stored_fields(message, book.id, stored))
            metrics.MESSAGES_SUPERSEDED.inc()
            return Result(message, Outcome.STORED, "superseded")
        if log.isEnabledFor(logging.DEBUG):  # the fields cost a dict per book, at every level
            log.debug("stored book %r as s3://%s/%s (%s)", book.id, stored.bucket, stored.key,
                      stored.reason, extra=stored_fields(message, book.id, stored))
        metrics.BOOKS_STORED.labels(genre=book.genre).inc()
        metrics.observe_since_sent(metrics.MESSAGE_LAG_SECONDS, message.sent_at, time.time())
        return Result(message, Outcome.STORED)

    def _reject(self, message: Message, invalid: InvalidBook, book_id: str | None = None
                ) -> Result:
        """Dead-letter an invalid message; `book_id` when the book itself could be read."""
        fields = {"reason": invalid.reason, "detail": invalid.detail, "book_id": book_id}
        if self._transport.queue.dead_letter_url is None:
            # Deleting it would lose it: keep it on the queue, loudly, until an operator acts.
            log.error("message %s is invalid (%s: %s) and the input queue has no dead-letter "
                      "queue; it stays on the queue", message.message_id, invalid.reason,
                      invalid.detail,
                      extra={**message_fields(message, Outcome.RETRY), **fields})
            metrics.MESSAGES_RETRIED.labels(reason=invalid.reason).inc()
            return Result(message, Outcome.RETRY, invalid.reason)
        try:
            self._transport.dead_letter(message, invalid.reason, invalid.detail)
        except AWS_ERRORS as exc:
            reason = failure_reason(exc)
            log.warning("message %s could not be dead-lettered, will retry: %s",
                        message.message_id, exc,
                        extra={**message_fields(message, Outcome.RETRY), **fields,
                               **failure_fields(exc)})
            metrics.MESSAGES_RETRIED.labels(reason=reason).inc()
            return Result(message, Outcome.RETRY, reason)
        log.error("message %s dead-lettered: %s: %s", message.message_id, invalid.reason,
                  invalid.detail,
                  extra={**message_fields(message, Outcome.DEAD_LETTERED), **fields})
        metrics.MESSAGES_DEAD_LETTERED.labels(reason=invalid.reason).inc()
        return Result(message, Outcome.DEAD_LETTERED, invalid.reason)


def visibility_changes(results: Sequence[Result], base: float, cap: float
                       ) -> list[tuple[Message, int]]:
    """How long each message not finished with stays invisible: (message, seconds).

    A failed message backs off by its receive count. The messages behind it in its group wait
    exactly as long, never less: SQS FIFO would not hand them out before it anyway, and an
    SQS that does (LocalStack delivers a released message while the one before it in its group
    is in backoff) would break the group's order. Messages released for another reason (at
    shutdown, with no failure in their group) become visible at once.
    """
    delays: dict[str, int] = {}
    for r in results:
        if r.outcome is Outcome.RETRY:
            delay = backoff_seconds(r.message.receive_count, base, cap)
            delays[r.message.group_id] = max(delay, delays.get(r.message.group_id, 0))
    return [(r.message, delays.get(r.message.group_id, 0))
            for r in results if not r.outcome.done]


def backoff_seconds(receive_count: int, base: float, cap: float) -> int:
    """Exponential visibility backoff for a message's n-th failed attempt, capped."""
    # Rounded up: SQS takes whole seconds, and 0.5 s must not become an immediate retry.
    return math.ceil(Backoff(base, cap).delay(max(receive_count, 1)))
