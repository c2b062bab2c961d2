"""Received batches in flight: how a consumer overlaps its next receive with the work in progress.

The consumer receives again as soon as fewer message groups are unfinished than it has
processing threads (`group_limit`): the next receive overlaps the current groups' work and their
batch's delete instead of waiting for them, and no thread waits for a receive it could have had.
It counts groups, not batches, because SQS FIFO returns as many messages of one group as it can
per receive: a batch is often a single group, and a limit of one or two batches left most
threads idle whenever requests took real time (AWS-like latency, docs/benchmarks.md). A batch of
ten groups still holds the next receive back until threads free up, so a consumer holds at most
`group_limit` + 9 groups. SQS FIFO never hands out a group that has messages in flight, so
batches in flight together never share a group and need no coordination.

Each batch is split by message group, one processing thread per group (`GroupRunner`), strictly
in order: each message is processed (`workers.books.processor`: the processor decides, the store
writes) and, when so decided, dead-lettered (`workers.lease.settle.dead_letter`) before the next
one starts, so a group's dead letters keep its order too. The first message to be retried stops
the group: the ones after it are released, to be handed out again only after it. At a stop, the
messages not started are released.

The thread that finishes a batch's last group settles the whole batch (`workers.lease.settle`:
one batched delete and visibility change), off the receive loop. It does so in a Future's
done-callback, whose exceptions concurrent.futures would only log: anything that escapes it is
an internal error (`workers.consumer.internal_errors`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from workers import metrics
from workers.aws.sqs import Message
from workers.consumer.internal_errors import ConsumerThread
from workers.lease.settle import Outcome, Result
from workers.tracing import OFF, Span, Tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupRunner:
    """One message group, on one processing thread, strictly in order (module docstring)."""

    # What should happen to one message (`BookProcessor.process`), told its process span.
    process: Callable[[Message, Span], Result]
    # Sends a message decided DEAD_LETTERED to the DLQ: the same result, or a RETRY if it
    # could not be sent (`workers.lease.settle.dead_letter`).
    dead_letter: Callable[[Result], Result]
    stopping: Callable[[], bool]
    # A process span per message, in its producer's trace (`workers.tracing`).
    tracing: Tracing = OFF
    queue_url: str = ""

    def run(self, messages: Sequence[Message]) -> list[Result]:
        results: list[Result] = []
        for index, message in enumerate(messages):
            if self.stopping():
                results.extend(Result(m, Outcome.RELEASED, "shutdown") for m in messages[index:])
                break
            result = self.one(message)
            results.append(result)
            if result.outcome is Outcome.RETRY:
                results.extend(Result(m, Outcome.RELEASED, "behind_retry")
                               for m in messages[index + 1:])
                break
        return results

    def one(self, message: Message) -> Result:
        """Process one message, and dead-letter it if so decided."""
        started = time.perf_counter()
        try:
            with self.tracing.process(self.queue_url, message.message_id, message.group_id,
                                      message.receive_count, message.trace,
                                      message.received) as span:
                result = self.process(message, span)
                if result.outcome is Outcome.DEAD_LETTERED:
                    result = self.dead_letter(result)
                if result.outcome is not Outcome.STORED:  # the processor told how it was stored
                    span.outcome(result.outcome.value, result.reason, result.detail)
                return result
        finally:
            metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)



@dataclass(eq=False)
class Batch:
    """A received batch whose message groups are being processed."""

    started: float  # monotonic
    pending: int  # groups not finished yet
    results: list[Result] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class InFlightBatches:
    slot: int
    executor: Executor
    process_group: Callable[[Sequence[Message]], list[Result]]
    # Gets every result of a batch once its last group is done, on that group's thread.
    settle: Callable[[list[Result]], None]
    # Receive again while fewer groups than this are unfinished: the processing threads.
    group_limit: int
    # Called every second while waiting, unless the oldest batch has been in flight for
    # `stuck_after` seconds.
    beat: Callable[[], None]
    stuck_after: float
    # Ends the process on an exception nothing expected (`exit_on_internal_error`).
    internal_error: Callable[[ConsumerThread, BaseException], object]
    _batches: set[Batch] = field(default_factory=set, init=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False)

    def __len__(self) -> int:
        return len(self._batches)

    def start(self, messages: Sequence[Message]) -> None:
        """Hand each message group of a received batch to the processing threads."""
        groups: OrderedDict[str, list[Message]] = OrderedDict()
        for m in messages:
            groups.setdefault(m.group_id, []).append(m)
        batch = Batch(started=time.monotonic(), pending=len(groups))
        with self._changed:
            self._batches.add(batch)
        for group in groups.values():
            future = self.executor.submit(self.process_group, group)
            future.add_done_callback(functools.partial(self._group_done, batch, group))

    def wait_for_room(self, stopping: Callable[[], bool]) -> bool:
        """Wait until a processing thread would be free for another batch's groups; False if a
        stop was requested first."""
        return self._wait(lambda: sum(b.pending for b in self._batches) < self.group_limit,
                          lambda now: stopping())

    def drain(self, deadline: float) -> bool:
        """Wait until every batch is settled; False if the (monotonic) deadline passed first."""
        return self._wait(lambda: not self._batches, lambda now: now > deadline)

    def _wait(self, room: Callable[[], bool], give_up: Callable[[float], bool]) -> bool:
        """Wait until `room()` (called under the lock), beating meanwhile."""
        while True:
            with self._changed:
                if room():
                    return True
                self._changed.wait(1.0)
                oldest = min((b.started for b in self._batches), default=time.monotonic())
            now = time.monotonic()
            if give_up(now):
                return False
            # A batch older than the visibility ceiling means a stuck thread: stop beating and
            # let the pool replace us rather than hold the messages forever.
            if now - oldest < self.stuck_after:
                self.beat()

    def _group_done(self, batch: Batch, group: list[Message],
                    future: Future[list[Result]]) -> None:
        """Runs in the processing thread that finished the group, as the future's
        done-callback."""
        try:
            self._finish_group(batch, group, future)
        except Exception as exc:
            self.internal_error("settle", exc)

    def _finish_group(self, batch: Batch, group: list[Message],
                      future: Future[list[Result]]) -> None:
        """Collect the group's results; the last group of the batch settles it."""
        try:
            results = future.result()
        except Exception as exc:  # a bug, not an AWS failure: back off, never drop
            log.exception("consumer %d failed processing group %s", self.slot,
                          group[0].group_id, extra={"group_id": group[0].group_id,
                                                    "outcome": Outcome.RETRY.value,
                                                    "reason": "internal_error"})
            metrics.MESSAGES_RETRIED.labels(reason=type(exc).__name__).inc(len(group))
            results = [Result(m, Outcome.RETRY, "internal_error") for m in group]
        with self._changed:
            batch.results.extend(results)
            batch.pending -= 1
            # A thread is free: room for another receive, even while this batch is settled.
            self._changed.notify_all()
            if batch.pending:
                return
        try:
            self.settle(batch.results)
        finally:
            with self._changed:
                self._batches.discard(batch)
                self._changed.notify_all()
