"""Handing back what dead consumers held, before their successor receives anything.

The pool gives each new consumer the tokens of consumers that are gone and left files behind
(`workers.lease.files`): its predecessor in the slot, consumers of the previous run of the
instance, a consumer stopped past its deadline. The new consumer first waits until every receive
call they had in progress can no longer be answered (`receive_wait`: SQS answers a long poll
whose client died, and what it hands out then stays invisible for the visibility timeout; at most
`WAIT_TIME_SECONDS`, usually nothing). Then, for each, it:

1. checks that its owner is dead (`owner_alive`: the lock a live consumer holds on its file),
   then claims the files: reads the held file and unlinks it. Only one unlink succeeds, so two
   consumers handed the same token never both act on it; and the file is gone before any
   message is handed back, so a consumer dying half-way can never make a later one hand back
   the same receipt handles again, after someone else has received those messages;
2. records the ids in the processing slots as crashed (`workers.lease.crashes`); a death the pool
   decided, or a stop, left them blank (`workers.lease.files.absolve`, `ConsumerRecord.close`);
3. hands back (visibility 0, `workers.lease.settle`) every held message still invisible,
   `HAND_BACK_MARGIN_SECONDS` ahead of now. A message whose visibility ran out may have been
   received by someone else already, and an old receipt handle must never make visible a
   message another consumer now holds;
4. counts the messages handed back (`shelver_messages_recovered_total`).

Why this keeps FIFO order: a consumer holds either all or none of a group's received messages
(SQS FIFO hands out no message of a group with messages in flight), and its held file lists them
in receive order. They are handed back in one ChangeMessageVisibilityBatch call per group, so the
group becomes visible again all at once, at its oldest message, exactly as a visibility timeout
running out would have made it.

Why it cannot bring back a stale version: a message handed back here is processed again from
the start, and what it writes is checked against the file S3 holds then: a file already holding
this book from the same or a later message of the group is not rewritten ("superseded",
workers/books/store.py). A write the dead process had sent and that lands late is conditional
(`If-None-Match: *` or `If-Match: <etag>`) on the object as that process saw it, so S3 refuses it
if anything was written since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from workers import metrics
from workers.aws.sqs import Message, QueueInfo
from workers.lease.crashes import CrashRegistry
from workers.lease.files import (
    HeldEntry,
    HeldRecord,
    TornFile,
    held_path,
    owner_alive,
    processing_path,
    read_held,
    read_processing,
)
from workers.lease.settle import Transport as SettleTransport
from workers.lease.settle import hand_back, settle

log = logging.getLogger(__name__)


class Transport(SettleTransport, Protocol):
    """What handing back needs of the SQS transport (`workers.aws.sqs.SqsTransport`)."""

    @property
    def queue(self) -> QueueInfo: ...


# A held message is handed back only if SQS keeps it invisible at least this much longer: time
# for the call to reach SQS, retries included, before the message could be handed out again.
HAND_BACK_MARGIN_SECONDS = 2.0
# A dead consumer's receive call may be answered this long after its long poll's end (network).
RECEIVE_MARGIN_SECONDS = 1.0


def receive_wait(predecessors: Sequence[str], directory: Path,
                 clock: Callable[[], float] = time.time) -> float:
    """Seconds until no receive call of these consumers can be answered any more."""
    ends = [activity.receive_until for token in predecessors
            if (activity := read_processing(processing_path(directory, token))).receive_until]
    return max((end + RECEIVE_MARGIN_SECONDS - clock() for end in ends), default=0.0)


def hand_back_from(
    predecessors: Sequence[str],
    directory: Path,
    transport: Transport,
    crashes: CrashRegistry,
    clock: Callable[[], float] = time.time,
) -> int:
    """Hand back what these dead consumers held; return how many messages were handed back."""
    handed_back = 0
    for token in predecessors:
        if owner_alive(directory, token):
            log.warning("consumer %s is alive: not handing back what it holds", token)
            continue
        held = held_path(directory, token)
        processing = processing_path(directory, token)
        in_processing = read_processing(processing).in_processing
        record = _claim(token, held, transport)
        processing.unlink(missing_ok=True)
        if record is None:
            continue
        if in_processing:
            for message_id, count in crashes.record(in_processing).items():
                log.warning("message %s was in processing when its consumer died (%d time(s) "
                            "so far; dead-lettered at %d)", message_id, count,
                            crashes.dead_letter_after,
                            extra={"message_id": message_id, "reason": "crashed_consumer"})
        if record.queue_url != transport.queue.url:
            log.warning("not handing back %d message(s) of %s: this consumer reads %s",
                        len(record.entries), record.queue_url, transport.queue.url)
            continue
        handed_back += _hand_back(token, record.entries, transport, clock)
    return handed_back


def _claim(token: str, held: Path, transport: Transport) -> HeldRecord | None:
    """Read the held file and unlink it; None if there is none: the consumer never held
    anything (its processing file, blank then, is all it left), or another consumer claimed it
    first (only one unlink succeeds)."""
    try:
        record = read_held(held)
    except FileNotFoundError:
        return None
    except TornFile as torn:
        log.warning("not handing back what consumer %s held: it died writing the list down "
                    "(they come back after their visibility timeout): %s", token, torn)
        record = HeldRecord(transport.queue.url, [])
    try:
        held.unlink()
    except FileNotFoundError:
        return None
    return record


def _hand_back(token: str, entries: list[HeldEntry], transport: Transport,
               clock: Callable[[], float]) -> int:
    deadline = clock() + HAND_BACK_MARGIN_SECONDS
    live = [e for e in entries if e.visible_until > deadline]
    if len(live) < len(entries):
        log.info("consumer %s: %d held message(s) not handed back: their visibility may have "
                 "run out", token, len(entries) - len(live))
    messages = [Message(e.message_id, e.receipt_handle, "", e.group_id, 0) for e in live]
    # A handle may be invalid by now (the message was deleted before the death): fine.
    settled = settle(transport, hand_back(messages), failure_level=logging.INFO)
    handed_back = len(messages) - len(settled.not_changed)
    metrics.MESSAGES_RECOVERED.inc(handed_back)
    return handed_back
