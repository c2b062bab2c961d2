"""Settling: every final action on a message a consumer received, in one place.

A message is held from its receive until one of these actions ends the hold. The processor
decides what became of it (`Outcome`, in a `Result`); `plan` turns outcomes into actions;
`settle` carries them out, batched: no other code of a consumer deletes a message or sets its
visibility but to extend it (`workers.lease.held`). The one other write about a message, its
copy to the dead-letter queue, is `dead_letter`, also here: it comes before the message's
delete, in its group's order.

The message lifecycle, from its receive (it is then held, its visibility extended while it is):

    what became of it             outcome        action        visibility, then
    ----------------------------  -------------  ------------  ----------------------------------
    its book stored (or found     stored         delete        -
    superseded: nothing written)
    invalid, crashed_consumer,    dead_lettered  dead-letter,  -
    retries_exhausted,                           then delete
    key_conflict
    failed, worth another try     retry          back off      RETRY_BACKOFF_BASE_SECONDS,
    (an AWS error, write                                       doubled per receive, capped
    contention, a failed DLQ                                   (RETRY_BACKOFF_MAX_SECONDS)
    send, invalid with no DLQ)
    behind a failed message       released       release       the failed message's back-off:
    of its group                                               its group stays in order
    not started at a stop         released       release       0
    held by a consumer that died  -              hand back     0, by its successor
                                                               (`workers.lease.handback`)
    held by a consumer orphaned   -              hand back     0, by its keeper
    past its grace                                             (`workers.consumer.keeper`)
    held past the ceiling         -              none          runs out: SQS hands it out again
    (VISIBILITY_CEILING_SECONDS)

SQS calls: delete is DeleteMessageBatch; back off, release and hand back are
ChangeMessageVisibilityBatch; dead-letter is SendMessage to the DLQ. Counted in
shelver_books_stored_total / shelver_messages_superseded_total (stored),
shelver_messages_dead_lettered_total, shelver_messages_retried_total (retry: the processor's,
or `dead_letter`'s), shelver_messages_released_total, shelver_messages_recovered_total (a dead
consumer's, handed back), shelver_delete_failures_total.

A delete or a visibility change that fails (an AWS error) leaves the message to its visibility
timeout: an undeleted message comes back and is rewritten idempotently (or found superseded), an
unreleased one waits. Late, never lost.

Verbs, used alike in code, logs and docs: *receive*, *hold*, *extend*, *store*, *dead-letter*,
*delete*, *back off*, *release*, *hand back*; and *absolve* (`workers.lease.files`): clear what a
consumer was processing, so that its death counts against no message.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from workers import metrics
from workers.aws import AWS_ERRORS
from workers.aws.errors import failure_fields, failure_reason
from workers.aws.sqs import SQS_BATCH, Message, QueueInfo
from workers.backoff import Backoff

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What became of a message; the value is the log field `outcome`."""

    # The message is finished with and must be deleted from the input queue. An attribute, not
    # a property: it is asked of every message.
    done: bool

    STORED = "stored"
    DEAD_LETTERED = "dead_lettered"
    RETRY = "retry"
    RELEASED = "released"

    def __init__(self, value: str) -> None:
        self.done = value in ("stored", "dead_lettered")


class Result(NamedTuple):
    """What should happen, or has happened, to one message. A tuple: one is made per message."""

    message: Message
    outcome: Outcome
    reason: str = ""
    # A dead letter's: what exactly was wrong (its shelver-detail), and the book's id when the
    # book itself could be read.
    detail: str = ""
    book_id: str | None = None
    # A stored message's payload offloaded to S3 (bucket, key), to be deleted once the message
    # is (PAYLOAD_DELETE); the consumer does it after `settle`.
    offloaded: tuple[str, str] | None = None


class Action(enum.Enum):
    """A final action on a held message (the table above)."""

    DELETE = "delete"
    BACK_OFF = "back off"
    RELEASE = "release"
    HAND_BACK = "hand back"


class Settlement(NamedTuple):
    """One final action; a tuple, as a batch makes ten of them on the hot path."""

    message: Message
    action: Action
    seconds: int = 0  # its visibility from now on; for all but DELETE


@dataclass(frozen=True)
class Settled:
    """What SQS did not do: messages it did not delete, and messages whose visibility it did
    not change (each logged)."""

    not_deleted: list[Message]
    not_changed: list[Message]


class Transport(Protocol):
    """What `settle` needs of the SQS transport (`workers.aws.sqs.SqsTransport`)."""

    def delete(self, messages: Sequence[Message]) -> list[Message]: ...

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]: ...


class DeadLetterQueue(Protocol):
    """What `dead_letter` needs of the SQS transport."""

    @property
    def queue(self) -> QueueInfo: ...

    def dead_letter(self, message: Message, reason: str, detail: str) -> None: ...


class Holder(Protocol):
    """What settling needs of the messages a consumer holds (`workers.lease.held`)."""

    def forget(self, messages: Sequence[Message]) -> None: ...

    def letting_go(self, messages: Sequence[Message]) -> AbstractContextManager[None]: ...


def message_fields(message: Message, outcome: Outcome) -> dict[str, str]:
    """The log fields of what became of a message."""
    return {"message_id": message.message_id, "group_id": message.group_id,
            "outcome": outcome.value}


def back_off_seconds(backoff: Backoff, receive_count: int) -> int:
    """How long a message that failed at its `receive_count`-th receive stays invisible: rounded
    up, as SQS takes whole seconds and 0.5 s must not become an immediate retry."""
    return math.ceil(backoff.delay(max(receive_count, 1)))


def plan(results: Sequence[Result], backoff: Backoff) -> list[Settlement]:
    """The final action for each result, in order.

    A failed message backs off by its receive count. The messages behind it in its group wait
    exactly as long, never less: SQS FIFO would not hand them out before it anyway, and an SQS
    that does (LocalStack delivers a released message while the one before it in its group is in
    backoff) would break the group's order. Messages released for another reason (at a stop,
    with no failure in their group) become visible at once.
    """
    delays: dict[str, int] = {}
    for r in results:
        if r.outcome is Outcome.RETRY:
            delay = back_off_seconds(backoff, r.message.receive_count)
            delays[r.message.group_id] = max(delay, delays.get(r.message.group_id, 0))
    settlements = []
    for r in results:
        if r.outcome.done:
            settlements.append(Settlement(r.message, Action.DELETE))
        else:
            action = Action.BACK_OFF if r.outcome is Outcome.RETRY else Action.RELEASE
            settlements.append(Settlement(r.message, action, delays.get(r.message.group_id, 0)))
    return settlements


def hand_back(messages: Iterable[Message]) -> list[Settlement]:
    """Make messages held by a consumer that is gone, or going, visible at once."""
    return [Settlement(m, Action.HAND_BACK) for m in messages]


def settle(transport: Transport, settlements: Sequence[Settlement], *,
           held: Holder | None = None, failure_level: int = logging.WARNING) -> Settled:
    """Carry out these final actions: one batched delete, then one visibility change per batch of
    whole message groups (so a group becomes visible at once, at its oldest message). `held`:
    the consumer's held messages, which stop being held (and extended) before the calls;
    `failure_level`: how loudly a message SQS refuses is logged.

    An AWS error is raised after every message of `settlements` stopped being held: their
    visibility runs out, and they come back."""
    deleted = [s.message for s in settlements if s.action is Action.DELETE]
    changes = [(s.message, s.seconds) for s in settlements if s.action is not Action.DELETE]
    not_deleted: list[Message] = []
    not_changed: list[Message] = []
    try:
        if deleted:
            if held is not None:
                held.forget(deleted)  # an extension landing after the delete is harmless
            not_deleted = transport.delete(deleted)
            metrics.DELETE_FAILURES.inc(len(not_deleted))
        if changes:
            # Under the holder's lock: no extension can land after the change and hide again
            # what was just made visible.
            letting_go = held.letting_go([m for m, _ in changes]) if held else nullcontext()
            with letting_go:
                for chunk in group_chunks(changes, lambda change: change[0].group_id):
                    not_changed += transport.change_visibility(chunk, failure_level)
    except AWS_ERRORS:
        if held is not None:
            held.forget([s.message for s in settlements])
        raise
    metrics.MESSAGES_RELEASED.inc(sum(1 for s in settlements if s.action is Action.RELEASE))
    return Settled(not_deleted, not_changed)


def dead_letter(transport: DeadLetterQueue, result: Result) -> Result:
    """Send a message the processor decided to dead-letter (`result`) to the DLQ with its
    reason: `result` once it is there, to be deleted; a RETRY if it cannot be (no DLQ: it stays
    on the queue until an operator acts, as deleting it would lose it; a failed send: it is
    backed off and sent again at its next receive)."""
    message, reason, detail = result.message, result.reason, result.detail
    fields = {"reason": reason, "detail": detail, "book_id": result.book_id}
    if transport.queue.dead_letter_url is None:
        log.error("message %s is invalid (%s: %s) and the input queue has no dead-letter "
                  "queue; it stays on the queue", message.message_id, reason, detail,
                  extra={**message_fields(message, Outcome.RETRY), **fields})
        metrics.MESSAGES_RETRIED.labels(reason=reason).inc()
        return Result(message, Outcome.RETRY, reason)
    try:
        transport.dead_letter(message, reason, detail)
    except AWS_ERRORS as exc:
        log.warning("message %s could not be dead-lettered, will retry: %s",
                    message.message_id, exc,
                    extra={**message_fields(message, Outcome.RETRY), **fields,
                           **failure_fields(exc)})
        metrics.MESSAGES_RETRIED.labels(reason=failure_reason(exc)).inc()
        return Result(message, Outcome.RETRY, failure_reason(exc))
    log.error("message %s dead-lettered: %s: %s", message.message_id, reason, detail,
              extra={**message_fields(message, Outcome.DEAD_LETTERED), **fields})
    metrics.MESSAGES_DEAD_LETTERED.labels(reason=reason).inc()
    return result


T = TypeVar("T")


def group_chunks(items: Iterable[T], group_of: Callable[[T], str], size: int = SQS_BATCH
                 ) -> list[list[T]]:
    """Items in order, cut into batch calls without splitting a group: each group changes in one
    call. A group never has more than a receive's worth (10) held; the transport would split a
    larger one, in order."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(group_of(item), []).append(item)
    chunks: list[list[T]] = []
    current: list[T] = []
    for group in groups.values():
        if current and len(current) + len(group) > size:
            chunks.append(current)
            current = []
        current.extend(group)
    if current:
        chunks.append(current)
    return chunks
