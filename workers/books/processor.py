"""What should happen to one message: the processor decides, the store writes, and nothing here
calls SQS (`workers.lease.settle` sends dead letters, deletes, backs off and releases).

`BookProcessor.process` answers a `Result`:
- STORED: the book is in its bucket (or already was, from the same or a later message of its
  group: superseded), the message is to be deleted;
- DEAD_LETTERED: the message is to go to the dead-letter queue with a reason (invalid, a key
  conflict, too many crashes of its consumers, retries exhausted), then be deleted;
- RETRY: a failure worth another try (an AWS error, write contention), to be backed off.

A transient failure is retried until the message has spent the receives SQS's redrive leaves it
(`retries_exhausted_at`); then it is dead-lettered, reason `retries_exhausted`, and the rest of
its group goes on at once: SQS would otherwise move it, and the messages behind it, without a
reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

from workers import metrics
from workers.aws import AWS_ERRORS
from workers.aws.errors import failure_fields, failure_reason
from workers.aws.sqs import Message
from workers.books.decode import Book, InvalidBook, decode_book
from workers.books.payloads import (
    BUCKET_NOT_ALLOWED,
    InvalidPointer,
    PayloadPointer,
    read_pointer,
)
from workers.books.store import KeyConflict, Origin, StoredBook, WriteContention
from workers.lease.crashes import CrashRegistry, ProcessingGate
from workers.lease.files import ProcessingSlots
from workers.lease.settle import Outcome, Result, message_fields
from workers.tracing import NO_SPAN, Span

log = logging.getLogger(__name__)


class Store(Protocol):
    """Where books are written (`workers.books.store.BookStore`)."""

    def store(self, book: Book, origin: Origin) -> StoredBook: ...


class Payloads(Protocol):
    """Where offloaded payloads are read (`workers.books.payloads.PayloadReader`)."""

    def read(self, pointer: PayloadPointer) -> bytes: ...


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


def stored_fields(message: Message, book_id: str, stored: StoredBook) -> dict[str, str]:
    """A stored message; reason: how the book was written (created, replaced, superseded: not
    written)."""
    return {**message_fields(message, Outcome.STORED), "reason": stored.reason,
            "book_id": book_id, "bucket": stored.bucket, "key": stored.key}


def _dead_lettered(message: Message, invalid: InvalidBook, book_id: str | None = None
                   ) -> Result:
    """The decision to dead-letter a message; `book_id` when the book itself could be read."""
    return Result(message, Outcome.DEAD_LETTERED, invalid.reason, invalid.detail, book_id)


class BookProcessor:
    def __init__(
        self,
        store: Store,
        genre_buckets: Mapping[str, str],
        *,
        max_receive_count: int | None = None,
        crashes: CrashRegistry | None = None,
        slots: ProcessingSlots | None = None,
        gate: ProcessingGate | None = None,
        payloads: Payloads | None = None,
        delete_payloads: bool = False,
    ) -> None:
        self._store = store
        # A pointer message's payload is read here (None: no payload bucket is allowed) and,
        # with `delete_payloads`, its object deleted once the message is (`Result.offloaded`).
        self._payloads = payloads
        self._delete_payloads = delete_payloads
        self._genre_buckets = genre_buckets
        # The input queue's RedrivePolicy's, for `retries_exhausted`; None without one.
        self._max_receive_count = max_receive_count
        self._exhausted_at = retries_exhausted_at(max_receive_count)
        # Messages that crashed consumers too often are dead-lettered instead of processed, and
        # those that crashed one are processed alone, so the next death is rightly theirs.
        self._crashes = crashes
        self._gate = gate or ProcessingGate()
        # Where each thread says which message it is on, for the crash count if we die.
        self._slots = slots

    def process(self, message: Message, span: Span = NO_SPAN) -> Result:
        """What should happen to `message`, its book stored if it can be; `span`, the message's
        process span, told the book, how it was stored, and a failure (`workers.tracing`)."""
        crashes = 0 if self._crashes is None else self._crashes.crashes(message.message_id)
        if crashes:
            span.crashed(crashes)
        if self._crashes is not None and crashes >= self._crashes.dead_letter_after:
            return _dead_lettered(message, InvalidBook(
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
                return self._process(message, span)
            finally:
                if self._slots is not None:
                    self._slots.end()

    def _process(self, message: Message, span: Span) -> Result:
        try:
            pointer = read_pointer(message.body, message.attributes)
            body = message.body if pointer is None else self._read_payload(pointer)
        except InvalidPointer as invalid:
            return _dead_lettered(message, InvalidBook(invalid.reason, invalid.detail))
        except AWS_ERRORS as exc:
            return self._failed(message, None, exc)
        try:
            book = decode_book(body, self._genre_buckets)
        except InvalidBook as invalid:
            return _dead_lettered(message, invalid)
        span.book(book.id, book.genre, book.bucket)
        offloaded = ((pointer.bucket, pointer.key)
                     if pointer is not None and self._delete_payloads else None)
        try:
            with metrics.S3_PUT_SECONDS.time():
                stored = self._store.store(book, Origin(
                    message.message_id, message.group_id, message.sequence,
                    message.receive_count))
        except KeyConflict as conflict:
            return _dead_lettered(message, InvalidBook("key_conflict", str(conflict)), book.id)
        except (*AWS_ERRORS, WriteContention) as exc:
            span.failed(exc)
            return self._failed(message, book, exc)
        span.book(book.id, book.genre, stored.bucket, stored.key)
        span.outcome(Outcome.STORED.value, stored.reason)
        if not stored.written:
            # A redelivery of what a consumer that died before its delete had written already.
            log.info("book %r (message %s) not written: s3://%s/%s holds a later message of "
                     "group %s", book.id, message.message_id, stored.bucket, stored.key,
                     message.group_id, extra=stored_fields(message, book.id, stored))
            metrics.MESSAGES_SUPERSEDED.inc()
            return Result(message, Outcome.STORED, "superseded", offloaded=offloaded)
        if log.isEnabledFor(logging.DEBUG):  # the fields cost a dict per book, at every level
            log.debug("stored book %r as s3://%s/%s (%s)", book.id, stored.bucket, stored.key,
                      stored.reason, extra=stored_fields(message, book.id, stored))
        metrics.BOOKS_STORED.labels(genre=book.genre).inc()
        metrics.observe_since_sent(metrics.MESSAGE_LAG_SECONDS, message.sent_at, time.time())
        return Result(message, Outcome.STORED, offloaded=offloaded)

    def _read_payload(self, pointer: PayloadPointer) -> bytes:
        if self._payloads is None:
            raise InvalidPointer(BUCKET_NOT_ALLOWED, f"bucket {pointer.bucket!r} is not a "
                                 "payload bucket: PAYLOAD_BUCKETS allows none")
        return self._payloads.read(pointer)

    def _failed(self, message: Message, book: Book | None, exc: Exception) -> Result:
        """A failed write (or payload read, with no `book` yet): retried, unless the message has
        spent the receives SQS leaves it."""
        reason = failure_reason(exc)
        book_id = None if book is None else book.id
        if self._exhausted_at is not None and message.receive_count >= self._exhausted_at:
            return _dead_lettered(message, InvalidBook(
                "retries_exhausted",
                f"failed at receive {message.receive_count} of the queue's maxReceiveCount "
                f"{self._max_receive_count}, after which SQS would move it with no reason: "
                f"{reason}: {exc}"), book_id)
        fields = {**message_fields(message, Outcome.RETRY), **failure_fields(exc)}
        if book is None:
            log.warning("payload of message %s not read, will retry: %s", message.message_id,
                        exc, extra=fields)
        else:
            log.warning("book %r (message %s) not stored, will retry: %s",
                        book.id, message.message_id, exc,
                        extra={**fields, "book_id": book.id, "bucket": book.bucket})
        metrics.MESSAGES_RETRIED.labels(reason=reason).inc()
        return Result(message, Outcome.RETRY, reason)
