"""`shelver dlq stats | peek | delete | redrive`: the dead-letter queue of the input queue.

The DLQ is the one named by the input queue's RedrivePolicy, as the consumers find it. Reading it
never consumes a message: what is read is held invisible while the read goes on (released at once,
the same messages would come back on every receive), then made visible again, in order. A FIFO
queue shows only part of a deep group that way: one receive takes at most ten messages of a
group, and SQS hands out none of the group's later ones while those are in flight. What a read
could not reach is reported, never guessed.

`delete` and a selective `redrive` (by reason, genre or message id) read the queue the same way,
act on the messages selected while they are still held, and release the others. A redrive of
a selection sends each message to the input queue (its group, its body, its attributes less
Shelver's own), in queue order, and deletes it from the DLQ only once sent; a redrive of
everything is SQS's own move task. Both go at `--rate` messages per second at most.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from workers.aws.sqs import (
    DETAIL_ATTRIBUTE,
    ORIGINAL_ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    SQS_BATCH,
    Message,
    QueueInfo,
    SqsTransport,
    chunks,
    discover_queue,
)
from workers.cli.arguments import int_between
from workers.cli.progress import Progress
from workers.cli.session import CommandError, Session

# How long read messages stay hidden if the command dies before releasing them.
HOLD_SECONDS = 120
# A long poll this long that brings nothing new means the queue has nothing more to give.
EMPTY_WAIT_SECONDS = 1
EXCERPT_CHARS = 200
# Messages SQS moved itself after maxReceiveCount receives carry no reason of Shelver's.
NO_REASON = "(none)"
MOVE_POLL_SECONDS = 1.0
MOVE_TASKS_LISTED = 10  # ListMessageMoveTasks' maximum (it lists the most recent first)
# Our clock against SQS's, when telling our move task from an earlier one (see `our_task`).
CLOCK_MARGIN_MS = 1000
# A move task SQS has not listed for this long is not waited for any more.
NOT_LISTED_SECONDS = 60.0
MAX_RATE = 500  # StartMessageMoveTask's limit for MaxNumberOfMessagesPerSecond
MOVE_DONE = frozenset({"COMPLETED", "CANCELLED", "FAILED"})
# delete and a selective redrive: messages per second unless --rate says otherwise.
DEFAULT_RATE = 50
SHELVER_ATTRIBUTES = frozenset({REASON_ATTRIBUTE, DETAIL_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE})


@dataclass(frozen=True)
class DeadLetter:
    message: Message
    reason: str
    detail: str
    original_id: str
    # The producer's own attributes (an extended client's pointer has some), Shelver's left out.
    attributes: dict[str, Any]

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> DeadLetter:
        attributes = raw.get("MessageAttributes", {})

        def attribute(name: str, default: str = "") -> str:
            return str(attributes.get(name, {}).get("StringValue", default))

        message = Message(message_id=raw["MessageId"], receipt_handle=raw["ReceiptHandle"],
                          body=raw["Body"], group_id=raw["Attributes"].get("MessageGroupId", ""),
                          receive_count=0)
        own = {name: value for name, value in attributes.items()
               if name not in SHELVER_ATTRIBUTES}
        return cls(message, attribute(REASON_ATTRIBUTE, NO_REASON), attribute(DETAIL_ATTRIBUTE),
                   attribute(ORIGINAL_ID_ATTRIBUTE), own)

    @property
    def genre(self) -> str | None:
        """The body's genre as the consumers read it (trimmed, lower case); None if none."""
        try:
            book = orjson.loads(self.message.body)
        except orjson.JSONDecodeError:
            return None
        genre = book.get("genre") if isinstance(book, dict) else None
        return genre.strip().lower() if isinstance(genre, str) else None


@dataclass(frozen=True)
class Selection:
    """Which dead letters a delete or a redrive takes: all of every criterion given."""

    ids: frozenset[str]
    reasons: frozenset[str]
    genres: frozenset[str]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Selection:
        return cls(frozenset(args.ids or ()), frozenset(args.reasons or ()),
                   frozenset(g.strip().lower() for g in args.genres or ()))

    def __bool__(self) -> bool:
        return bool(self.ids or self.reasons or self.genres)

    def takes(self, letter: DeadLetter) -> bool:
        return ((not self.ids or bool({letter.message.message_id, letter.original_id}
                                      & self.ids))
                and (not self.reasons or letter.reason in self.reasons)
                and (not self.genres or letter.genre in self.genres))

    def describe(self) -> str:
        said = [f"{name} {', '.join(sorted(values))}" for name, values in
                (("id", self.ids), ("reason", self.reasons), ("genre", self.genres)) if values]
        return " and ".join(said)


@dataclass(frozen=True)
class Depth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser(
        "dlq", help="inspect and redrive the dead-letter queue",
        description="Inspect and redrive the dead-letter queue named by the input queue's "
                    "RedrivePolicy. Reading it consumes nothing.")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "stats", help="depth, and the count of messages by shelver-reason",
    ).set_defaults(run=stats)
    peek = actions.add_parser(
        "peek", help="show messages with reason, detail and original message id; "
                     "nothing is consumed")
    peek.add_argument("-n", "--count", type=int_between(1), default=10,
                      help="how many messages (default 10)")
    peek.set_defaults(run=peek_messages)
    delete_parser = actions.add_parser(
        "delete", help="delete the messages selected by id or reason (say which: there is no "
                       "'delete everything')")
    _add_selection(delete_parser, required=True)
    delete_parser.add_argument(
        "--rate", type=int_between(1, MAX_RATE), default=DEFAULT_RATE,
        help=f"messages per second, 1-{MAX_RATE} (default {DEFAULT_RATE})")
    delete_parser.add_argument("--dry-run", action="store_true",
                               help="print what would be deleted, delete nothing")
    delete_parser.set_defaults(run=delete)
    redrive_parser = actions.add_parser(
        "redrive", help="move messages back to the input queue: every one (SQS move task), "
                        "or those selected by reason, genre or id")
    _add_selection(redrive_parser, required=False)
    redrive_parser.add_argument(
        "--rate", type=int_between(1, MAX_RATE), default=None,
        help=f"messages per second, 1-{MAX_RATE} (default: as fast as SQS goes for every "
             f"message, {DEFAULT_RATE} for a selection)")
    redrive_parser.add_argument("--dry-run", action="store_true",
                                help="print what would move, move nothing")
    redrive_parser.set_defaults(run=redrive)


def _add_selection(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group(
        "selection (repeatable; a message must match every kind given)")
    group.add_argument("--id", dest="ids", action="append", metavar="MESSAGE_ID",
                       help="the DLQ message id, or the original message id peek shows")
    group.add_argument("--reason", dest="reasons", action="append",
                       help="its shelver-reason, e.g. not_json; (none) for messages SQS "
                            "moved itself")
    if not required:
        group.add_argument("--genre", dest="genres", action="append",
                           help="the genre of its body")
    parser.set_defaults(genres=None)


# -- commands ------------------------------------------------------------------------------------
def stats(args: argparse.Namespace, session: Session) -> int:
    queue = find_queue(session)
    _report_contents(session, _dlq_url(queue))
    return 0


def peek_messages(args: argparse.Namespace, session: Session) -> int:
    url = _dlq_url(find_queue(session))
    before = depth(session.sqs, url)
    letters = read(session.sqs, url, limit=args.count)
    for letter in letters:
        print(f"{letter.message.message_id}  group {letter.message.group_id}  "
              f"original {letter.original_id or '-'}")
        print(f"  reason  {letter.reason}")
        print(f"  detail  {letter.detail or '-'}")
        print(f"  body    {excerpt(letter.message.body)}")
    print(f"{len(letters)} message(s) of {url}, left in the queue")
    if len(letters) < args.count:
        _note_unread(len(letters), before)
    return 0


def delete(args: argparse.Namespace, session: Session) -> int:
    selection = Selection.from_args(args)
    if not selection:
        raise CommandError("dlq delete needs --id or --reason: say which messages")
    url = _dlq_url(find_queue(session))
    with held(session.sqs, url) as letters:
        chosen = [letter for letter in letters if selection.takes(letter)]
        _list_chosen(chosen, "delete" if not args.dry_run else "would delete")
        if args.dry_run:
            print(f"dry run: would delete {len(chosen)} of {len(letters)} message(s) read "
                  f"({selection.describe()}); nothing deleted")
            return 0
        transport = _transport(session.sqs, url)
        failed: list[Message] = []
        for batch in _paced(chosen, args.rate):
            failed += transport.delete([letter.message for letter in batch])
        letters[:] = [letter for letter in letters if letter not in chosen]  # gone: not released
    print(f"deleted {len(chosen) - len(failed)} of {len(chosen)} message(s) selected "
          f"({selection.describe()}) from {url}; {len(letters)} other(s) read, left in the queue")
    if failed:
        raise CommandError(f"{len(failed)} message(s) not deleted (their hold ran out?): "
                           "run the command again")
    return 0


def redrive(args: argparse.Namespace, session: Session) -> int:
    selection = Selection.from_args(args)
    if selection:
        return _redrive_selected(args, session, selection)
    queue = find_queue(session)
    dlq_url = _dlq_url(queue)
    if args.dry_run:
        before = _report_contents(session, dlq_url)
        print(f"dry run: would move {before.visible} message(s) to {queue.url}; nothing moved")
        return 0
    source, destination = queue_arn(session.sqs, dlq_url), queue_arn(session.sqs, queue.url)
    request = {"SourceArn": source, "DestinationArn": destination}
    if args.rate is not None:
        request["MaxNumberOfMessagesPerSecond"] = args.rate
    requested_at = int(time.time() * 1000)  # SQS's StartedTimestamp: epoch milliseconds
    handle = session.sqs.start_message_move_task(**request)["TaskHandle"]
    started = time.monotonic()
    try:
        task = wait_for_move(session.sqs, source, handle, requested_at)
    except KeyboardInterrupt:
        print(f"\nshelver: stopped waiting; the move task goes on in SQS (cancel it with "
              f"`aws sqs cancel-message-move-task --task-handle {handle}`)", file=sys.stderr)
        raise
    moved = task.get("ApproximateNumberOfMessagesMoved", 0)
    if task["Status"] != "COMPLETED":
        raise CommandError(f"move task {task['Status']} after {moved} message(s): "
                           f"{task.get('FailureReason', 'no reason given')}")
    print(f"moved {moved} message(s) from {dlq_url} to {queue.url} "
          f"in {time.monotonic() - started:.1f} s")
    return 0


def _redrive_selected(args: argparse.Namespace, session: Session, selection: Selection) -> int:
    """Send each selected message to the input queue, in queue order, then delete it from the
    DLQ: a message is deleted only once sent (a failure leaves it in the DLQ, not lost)."""
    queue = find_queue(session)
    url = _dlq_url(queue)
    with held(session.sqs, url) as letters:
        chosen = [letter for letter in letters if selection.takes(letter)]
        _list_chosen(chosen, "redrive" if not args.dry_run else "would redrive")
        if args.dry_run:
            print(f"dry run: would move {len(chosen)} of {len(letters)} message(s) read "
                  f"({selection.describe()}) to {queue.url}; nothing moved")
            return 0
        transport = _transport(session.sqs, url)
        moved: list[DeadLetter] = []
        try:
            for batch in _paced(chosen, args.rate or DEFAULT_RATE):
                _send(session.sqs, queue.url, batch)
                moved += batch
                transport.delete([letter.message for letter in batch])
        finally:
            letters[:] = [letter for letter in letters if letter not in moved]
    print(f"moved {len(moved)} message(s) ({selection.describe()}) from {url} to {queue.url}; "
          f"{len(letters)} other(s) read, left in the DLQ")
    return 0


def _send(sqs: Any, url: str, batch: Sequence[DeadLetter]) -> None:
    """One batch onto the input queue, in order; all of it sent, or CommandError."""
    entries = []
    for index, letter in enumerate(batch):
        entry: dict[str, Any] = {
            "Id": str(index), "MessageBody": letter.message.body,
            "MessageGroupId": letter.message.group_id,
            # The DLQ message's id: a redrive run again within SQS's 5-minute deduplication
            # window does not send the same message twice.
            "MessageDeduplicationId": letter.message.message_id}
        if letter.attributes:
            entry["MessageAttributes"] = letter.attributes
        entries.append(entry)
    failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
    if failed:
        raise CommandError(f"SQS refused {len(failed)} message(s) of a batch, none of it "
                           f"deleted from the DLQ: {failed[0]}")


def _list_chosen(chosen: Sequence[DeadLetter], verb: str) -> None:
    for letter in chosen:
        print(f"{verb}  {letter.message.message_id}  group {letter.message.group_id}  "
              f"reason {letter.reason}")


def _paced(letters: Sequence[DeadLetter], rate: int) -> Iterator[list[DeadLetter]]:
    """Batches of up to ten, at most `rate` messages per second."""
    progress = Progress()
    done = 0
    started = time.monotonic()
    try:
        for batch in chunks(letters, min(SQS_BATCH, rate)):
            # The time these messages are due at the rate: wait for it, never hurry.
            time.sleep(max(0.0, started + done / rate - time.monotonic()))
            yield list(batch)
            done += len(batch)
            progress.update(f"{done} of {len(letters)}")
    finally:
        progress.clear()


# -- building blocks -----------------------------------------------------------------------------
def _transport(sqs: Any, url: str) -> SqsTransport:
    return SqsTransport(receive_client=sqs, client=sqs,
                        queue=QueueInfo(url=url, visibility_timeout=0, dead_letter_url=None))


def find_queue(session: Session) -> QueueInfo:
    return discover_queue(session.sqs, session.settings.input_queue)


def _dlq_url(queue: QueueInfo) -> str:
    if queue.dead_letter_url is None:
        raise CommandError(f"the input queue {queue.url} has no dead-letter queue "
                           "(no RedrivePolicy)")
    return queue.dead_letter_url


def queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def depth(sqs: Any, url: str) -> Depth:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return Depth(int(attributes["ApproximateNumberOfMessages"]),
                 int(attributes["ApproximateNumberOfMessagesNotVisible"]),
                 int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))


def read(sqs: Any, url: str, limit: int | None = None) -> list[DeadLetter]:
    """Up to `limit` messages (all when None) in queue order, each group's in order; every one
    is visible again when this returns, whatever happened meanwhile."""
    with held(sqs, url, limit) as letters:
        return list(letters)


@contextlib.contextmanager
def held(sqs: Any, url: str, limit: int | None = None) -> Iterator[list[DeadLetter]]:
    """Up to `limit` messages (all when None) in queue order, each group's in order, held
    invisible while the block runs; those still in the list at its end (the block removes the
    ones it deleted) are made visible again, whatever happened meanwhile."""
    letters = _receive_all(sqs, url, limit)
    try:
        yield letters
    finally:
        _release(sqs, url, [letter.message for letter in letters])


def _receive_all(sqs: Any, url: str, limit: int | None) -> list[DeadLetter]:
    held: dict[str, DeadLetter] = {}
    progress = Progress()
    try:
        while limit is None or len(held) < limit:
            want = SQS_BATCH if limit is None else min(SQS_BATCH, limit - len(held))
            batch = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=want, WaitTimeSeconds=EMPTY_WAIT_SECONDS,
                VisibilityTimeout=HOLD_SECONDS, MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId"],
            ).get("Messages", [])
            # A message read again (its hold ran out on a long read) is counted once; its new
            # receipt handle is the one that can release it.
            fresh = [raw for raw in batch if raw["MessageId"] not in held]
            for raw in batch:
                held[raw["MessageId"]] = DeadLetter.from_sqs(raw)
            if not fresh:
                break
            progress.update(f"read {len(held)} message(s)")
    except BaseException:
        _release(sqs, url, [letter.message for letter in held.values()])
        raise
    finally:
        progress.clear()
    return list(held.values())


def _release(sqs: Any, url: str, messages: list[Message]) -> None:
    failed = _transport(sqs, url).change_visibility([(message, 0) for message in messages])
    if failed:
        print(f"shelver: {len(failed)} message(s) stay hidden until their visibility timeout "
              f"runs out (at most {HOLD_SECONDS} s)", file=sys.stderr)


def _report_contents(session: Session, url: str) -> Depth:
    """Print the DLQ's depth and the messages read by reason; return the depth."""
    before = depth(session.sqs, url)
    letters = read(session.sqs, url)
    print(f"dead-letter queue  {url}")
    print(f"messages           {before.total} (visible {before.visible}, "
          f"in flight {before.in_flight}, delayed {before.delayed})")
    print(f"by {REASON_ATTRIBUTE} ({len(letters)} read)")
    for reason, count in Counter(letter.reason for letter in letters).most_common():
        print(f"  {count:>8}  {reason}")
    _note_unread(len(letters), before)
    return before


def _note_unread(read_count: int, before: Depth) -> None:
    if read_count < before.total:
        print(f"{before.total - read_count} message(s) not read: in flight, delayed, or later "
              "in a FIFO group whose first messages were read (SQS hands those out only once "
              "the earlier ones are deleted)")


def wait_for_move(sqs: Any, source_arn: str, handle: str, requested_at: int
                  ) -> dict[str, Any]:
    """Poll the move task this command started (`handle`, requested at `requested_at`, epoch
    milliseconds) with a live counter until it ends; return its last description."""
    since = requested_at - CLOCK_MARGIN_MS
    listed = time.monotonic()
    progress = Progress()
    try:
        while True:
            tasks = sqs.list_message_move_tasks(SourceArn=source_arn,
                                                MaxResults=MOVE_TASKS_LISTED)["Results"]
            found = our_task(tasks, handle, since)
            if found is not None:
                listed = time.monotonic()
            elif time.monotonic() - listed > NOT_LISTED_SECONDS:
                raise CommandError(
                    f"SQS does not list the move task this command started ({handle}): see "
                    f"`aws sqs list-message-move-tasks --source-arn {source_arn}`")
            task = found or {"Status": "RUNNING"}
            if task["Status"] in MOVE_DONE:
                return task
            since = task.get("StartedTimestamp", since)
            progress.update(f"moved {task.get('ApproximateNumberOfMessagesMoved', 0)} of "
                            f"{task.get('ApproximateNumberOfMessagesToMove', '?')}")
            time.sleep(MOVE_POLL_SECONDS)
    finally:
        progress.clear()


def our_task(tasks: list[dict[str, Any]], handle: str, since: int) -> dict[str, Any] | None:
    """Our move task among those listed, or None while it is not listed yet.

    SQS lists a task's TaskHandle only while it runs, and allows one running task per source: a
    task listed after ours has ended may be another one's, started since. So ours is the one
    with our handle while it runs; once it has ended, the earliest one started at `since` or
    later (its StartedTimestamp once seen running; before that, when it was requested, less a
    clock margin: a few messages move within one poll)."""
    for task in tasks:
        if task.get("TaskHandle") == handle:
            return task
    ended = [task for task in tasks
             if task["Status"] in MOVE_DONE and task.get("StartedTimestamp", 0) >= since]
    return min(ended, key=lambda task: int(task["StartedTimestamp"]), default=None)


def excerpt(body: str, limit: int = EXCERPT_CHARS) -> str:
    """One line of the body: control characters escaped, cut at `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in body[:limit])
    return text + ("..." if len(body) > limit else "")
