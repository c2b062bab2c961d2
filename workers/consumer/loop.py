"""One consumer process's main thread, in the style of gunicorn's arbiter: `run` starts, then
loops over named steps until stopped, then drains and finishes.

Threads, each with one job:
- main (this module): long-polls the queue and hands each batch to the processing threads, up to
  a few batches in flight (`workers.consumer.batches`), pausing while whole batches fail
  (`workers.consumer.breaker`);
- processing threads (`CONSUMER_THREADS`): one message group each, strictly in order
  (`workers.consumer.batches`); the one finishing a batch's last group settles the batch
  (`workers.lease.settle`): deletes, backs off and releases every message of it;
- keeper (`workers.consumer.keeper`): extends the visibility of held messages, notices orphaning.

An exception nothing expected in any of them ends the process (`workers.consumer.internal_errors`).

What it holds is also kept in the state dir (`workers.lease.files`); before its first receive, a
consumer hands back what the dead consumers the pool names held (`workers.lease.handback`).

Signals only set flags and wake the main thread (`workers.consumer.signals`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from workers import metrics
from workers.aws import AWS_ERRORS
from workers.aws.clients import make_clients
from workers.aws.errors import failure_fields, failure_reason
from workers.aws.preflight import not_fifo
from workers.aws.s3 import traced_objects
from workers.aws.sqs import Message, QueueInfo, SqsTransport, discover_queue
from workers.backoff import Backoff
from workers.books.payloads import SIZE_ATTRIBUTES, PayloadReader, PayloadRules
from workers.books.processor import BookProcessor, crash_limit_warning
from workers.books.store import BookStore
from workers.consumer.batches import GroupRunner, InFlightBatches
from workers.consumer.breaker import Breaker
from workers.consumer.internal_errors import (
    ConsumerThread,
    exit_at_once,
    exit_on_internal_error,
)
from workers.consumer.keeper import EXIT_ORPHANED, Keeper
from workers.consumer.queue_depth import Depths, QueueDepthSampler
from workers.consumer.signals import LongPollAbandoned, Signals
from workers.lease import handback
from workers.lease.crashes import CrashRegistry
from workers.lease.files import ConsumerRecord, recovery_dir
from workers.lease.handback import hand_back_from, receive_wait
from workers.lease.held import HeldMessages
from workers.lease.settle import (
    DeadLetterQueue,
    Outcome,
    Result,
    dead_letter,
    plan,
    settle,
)
from workers.status import ConsumerState, ConsumerStatus, StatusWriter
from workers.tracing import OFF, Tracing

if TYPE_CHECKING:
    from workers.consumer.process import ConsumerSpec

log = logging.getLogger(__name__)

# Named exit codes (and EXIT_ORPHANED, from workers.consumer.keeper; EXIT_INTERNAL_ERROR, from
# workers.consumer.internal_errors).
EXIT_OK = 0
# After a failed queue lookup or receive (SQS down, credentials, ...), and while whole batches
# fail (the breaker): 1, 2, 4 ... 30 s.
RECEIVE_BACKOFF = Backoff(1.0, 30.0)
# The longest a stopping consumer waits for its last spans to be exported (`workers.tracing`):
# a collector out of reach must not hold a stop up until the pool kills the consumer.
TRACING_FLUSH_SECONDS = 5.0


class Transport(handback.Transport, DeadLetterQueue, Depths, Protocol):
    """What a consumer needs of the SQS transport (`workers.aws.sqs.SqsTransport`)."""

    def receive(self, wait_time_seconds: int, lease_seconds: int) -> list[Message]: ...


class Consumer:
    def __init__(self, spec: ConsumerSpec, tracing: Tracing = OFF) -> None:
        self.spec = spec
        self.tracing = tracing
        self.settings = spec.settings
        self.pid = os.getpid()
        self._signals = Signals()
        self.status = StatusWriter(self.settings.state_dir, ConsumerStatus(
            slot=spec.slot, pid=self.pid, state=ConsumerState.STARTING, restarts=spec.restarts,
            started_at=time.time(), heartbeat_at=time.time()))
        self._crashes = CrashRegistry(recovery_dir(self.settings.state_dir),
                                      self.settings.crash_dead_letter_after)
        self._keeper = Keeper(spec.slot, spec.parent_pid, self._signals.stop)
        self._breaker = Breaker(spec.slot, self.status.failing, RECEIVE_BACKOFF)
        self._retry_backoff = Backoff(self.settings.retry_backoff_base_seconds,
                                      self.settings.retry_backoff_max_seconds)
        # Set once the queue is known (`hold`).
        self._record: ConsumerRecord | None = None
        self._held: HeldMessages | None = None
        self._payloads: PayloadReader | None = None

    def run(self) -> int:
        self._start()
        settings = self.settings
        clients = make_clients(settings.consumer_threads, settings.wait_time_seconds,
                               settings.s3_client, settings.sqs_client,
                               payloads=bool(settings.payload_buckets))
        queue = self._look_up_queue(clients.sqs)
        if queue is None:
            return self._finish(EXIT_OK)
        # The payloads' size attributes, asked for: a pointer's declared size is checked
        # against PAYLOAD_MAX_BYTES before anything is read.
        transport = SqsTransport(clients.sqs_receive, clients.sqs, queue, self.tracing,
                                 message_attributes=SIZE_ATTRIBUTES)
        record, held = self.hold(transport)
        self._hand_back_predecessors(transport)
        self._payloads = None if clients.payloads is None else PayloadReader(
            clients.payloads, PayloadRules(settings.payload_buckets, settings.payload_max_bytes))
        processor = BookProcessor(BookStore(traced_objects(clients.s3, self.tracing),
                                            settings.destinations),
                                  settings.genre_buckets,
                                  max_receive_count=queue.max_receive_count,
                                  crashes=self._crashes, slots=record.processing,
                                  payloads=self._payloads,
                                  delete_payloads=settings.payload_delete)
        executor = ThreadPoolExecutor(self.settings.consumer_threads, thread_name_prefix="group")
        settled = self._consume(transport, processor, executor)
        # Threads still busy past the stop deadline are abandoned, not waited for: the pool's
        # KILL would come next anyway. What they hold stays in the held file, handed back by
        # the next consumer the pool starts (or the next run), else after the visibility timeout.
        executor.shutdown(wait=settled, cancel_futures=True)
        held.close()
        return self._finish(EXIT_ORPHANED if self._keeper.orphaned else EXIT_OK)

    def internal_error(self, thread: ConsumerThread, exc: BaseException) -> None:
        """End this process on an exception nothing expected in one of its threads."""
        exit_on_internal_error(self.spec.slot, thread, exc,
                               self._record.processing if self._record is not None else None,
                               self._flush_and_exit)

    def _flush_and_exit(self, code: int) -> None:
        # The spans so far, the failing one's included, are worth a short wait: the pool
        # replaces this consumer in the meantime anyway.
        self.tracing.shutdown(TRACING_FLUSH_SECONDS)
        exit_at_once(code)

    # -- start-up -------------------------------------------------------------------------------
    def _start(self) -> None:
        self._signals.install()
        self.status.update(state=ConsumerState.STARTING)
        metrics.init_consumer_series(self.settings.genre_buckets)
        self._keeper.start()

    def _look_up_queue(self, sqs: Any) -> QueueInfo | None:
        """The input queue, looked up again with backoff while it cannot be consumed: a missing
        queue, or one that is not FIFO (the preflight could not tell at start), must not become
        a crash loop. None if stopped first."""
        failures = 0
        while not self._signals.stopping():
            self.status.beat()
            try:
                queue = discover_queue(sqs, self.settings.input_queue)
            except AWS_ERRORS as exc:
                unusable, fields = str(exc), failure_fields(exc)
            else:
                if queue.fifo:
                    self._warn_about(queue)
                    return queue
                unusable = not_fifo(self.settings.input_queue)
                fields = {"reason": "not_fifo", "error": unusable}
            failures += 1
            delay = RECEIVE_BACKOFF.delay(failures)
            log.error("consumer %d cannot use queue %r, retrying in %.0f s: %s", self.spec.slot,
                      self.settings.input_queue, delay, unusable, extra=fields)
            self.status.update(state=ConsumerState.BACKOFF, last_error=f"queue lookup: {unusable}")
            self._sleep(delay)
        return None

    def _warn_about(self, queue: QueueInfo) -> None:
        if queue.dead_letter_url is None:
            log.warning("input queue %s has no RedrivePolicy: invalid messages will stay "
                        "on the queue", queue.url)
        if (problem := crash_limit_warning(self.settings.crash_dead_letter_after,
                                           queue.max_receive_count)) is not None:
            log.warning("input queue %s: %s", queue.url, problem)

    def hold(self, transport: Transport) -> tuple[ConsumerRecord, HeldMessages]:
        """Start holding messages of `transport`'s queue: this consumer's files, its held set,
        the keeper's extensions."""
        queue = transport.queue
        self._record = ConsumerRecord(recovery_dir(self.settings.state_dir), self.spec.token,
                                      queue.url, self.settings.consumer_threads)
        # A queue whose own visibility timeout is shorter than the lease keeps its own.
        lease = min(queue.visibility_timeout, self.settings.visibility_lease_seconds)
        self._held = HeldMessages(transport, lease, self.settings.visibility_ceiling_seconds,
                                  record=self._record)
        self._keeper.keep(self._held, transport)
        log.info("consumer %d (pid %d) consuming %s (lease %d s, dlq %s)",
                 self.spec.slot, self.pid, queue.url, lease, queue.dead_letter_url)
        return self._record, self._held

    def _hand_back_predecessors(self, transport: Transport) -> None:
        """Hand back what our dead predecessors held, before receiving anything ourselves."""
        if not self.spec.predecessors:
            return
        directory = recovery_dir(self.settings.state_dir)
        wait = receive_wait(self.spec.predecessors, directory)
        if wait > 0:
            log.info("consumer %d waits %.1f s for its predecessors' last receive to end",
                     self.spec.slot, wait)
            self._sleep(wait)  # only a stop ends it early
        if self._signals.stopping():
            return  # the files stay for the next consumer
        started = time.time_ns()
        try:
            handed_back = hand_back_from(self.spec.predecessors, directory, transport,
                                         self._crashes)
        except AWS_ERRORS as exc:
            # Their messages then come back when their visibility timeout runs out.
            log.error("consumer %d could not hand back its predecessors' messages: %s",
                      self.spec.slot, exc)
            return
        log.info("consumer %d handed back %d message(s) held by %d dead consumer(s)",
                 self.spec.slot, handed_back, len(self.spec.predecessors))
        self.tracing.hand_back(transport.queue.url, started, len(self.spec.predecessors),
                               handed_back, ())

    # -- the receive loop -----------------------------------------------------------------------
    def _consume(self, transport: Transport, processor: BookProcessor, executor: Executor
                 ) -> bool:
        """Receive and hand each batch to the processing threads until stopped; True if every
        batch was settled within the stop timeout."""
        groups = GroupRunner(processor.process, functools.partial(dead_letter, transport),
                             self._signals.stopping, self.tracing, transport.queue.url)
        batches = InFlightBatches(
            slot=self.spec.slot, executor=executor, process_group=groups.run,
            settle=functools.partial(self._settle_batch, transport),
            group_limit=self.settings.consumer_threads, beat=self.status.beat,
            stuck_after=self.settings.visibility_ceiling_seconds,
            internal_error=self.internal_error)
        depth = QueueDepthSampler(self.spec.slot, transport, self.settings.queue_sample_seconds)
        receive_failures = 0
        while self._ready(batches):
            depth.sample_if_due()
            try:
                messages = self._receive(transport, batches)
            except LongPollAbandoned:
                break
            except AWS_ERRORS as exc:
                receive_failures += 1
                self._back_off(exc, receive_failures)
                continue
            receive_failures = 0
            if messages:
                self._dispatch(transport, messages, batches)
            elif self.settings.poll_interval_seconds and not batches:
                self._pause_between_polls()
        return self._drain(batches)

    def _ready(self, batches: InFlightBatches) -> bool:
        """Wait for room for another batch, and out a breaker pause; False once stopping."""
        stopping = self._signals.stopping
        if stopping() or not batches.wait_for_room(stopping):
            return False
        if (pause := self._breaker.remaining()) > 0:
            self.status.beat(ConsumerState.BACKOFF)
            self._sleep(pause)
        return not stopping()

    def _receive(self, transport: Transport, batches: InFlightBatches) -> list[Message]:
        """One receive call, counted, and what it brought held; `LongPollAbandoned` at a stop,
        an AWS error if it failed."""
        self.status.receiving(ConsumerState.PROCESSING if batches else ConsumerState.POLLING)
        assert self._held is not None and self._record is not None
        # Before the call: SQS starts the messages' visibility timeout after this, never
        # before, so the held file never claims them invisible for longer than they are.
        polled_at = time.monotonic()
        wait = self.settings.wait_time_seconds
        with self._signals.long_poll(), self._record.processing.receiving(wait):
            messages = transport.receive(wait, self._held.lease)
        now = time.time()
        metrics.LAST_POLL_TIMESTAMP.set(now)
        self.status.update(last_poll_at=now, last_error=None)
        metrics.RECEIVE_CALLS.labels(result="messages" if messages else "empty").inc()
        if messages:
            metrics.MESSAGES_RECEIVED.inc(len(messages))
            for message in messages:
                metrics.observe_since_sent(metrics.MESSAGE_AGE_SECONDS, message.sent_at, now)
            self._held.hold(messages, polled_at)
        return messages

    def _back_off(self, exc: Exception, failures: int) -> None:
        """After a failed receive: 1, 2, 4 ... 30 s, not cut short by a wake-up (`/`)."""
        metrics.RECEIVE_CALLS.labels(result="error").inc()
        delay = RECEIVE_BACKOFF.delay(failures)
        log.error("consumer %d receive failed, retrying in %.0f s: %s", self.spec.slot, delay,
                  exc, extra=failure_fields(exc))
        self.status.update(state=ConsumerState.BACKOFF,
                           last_error=f"receive: {failure_reason(exc)}")
        self._sleep(delay)

    def _dispatch(self, transport: Transport, messages: list[Message],
                  batches: InFlightBatches) -> None:
        """Hand a received batch to the processing threads; at a stop, release it instead."""
        self._crashes.refresh()  # one stat: reloads only when a recovery recorded a crash
        if self._signals.stopping():
            self._settle(transport, [Result(m, Outcome.RELEASED, "shutdown") for m in messages])
            return
        batches.start(messages)

    def _pause_between_polls(self) -> None:
        """After an empty receive: POLL_INTERVAL_SECONDS, cut short by a wake-up (`/`)."""
        self.status.beat(ConsumerState.IDLE)
        self._sleep(self.settings.poll_interval_seconds, wakeable=True)

    def _drain(self, batches: InFlightBatches) -> bool:
        if batches.drain(time.monotonic() + self.settings.stop_timeout_seconds):
            return True
        log.warning("consumer %d stopping with %d batch(es) still in progress; their "
                    "messages reappear after their visibility timeout", self.spec.slot,
                    len(batches))
        return False

    # -- settling -------------------------------------------------------------------------------
    def _settle_batch(self, transport: Transport, results: list[Result]) -> None:
        """Runs in the processing thread that finished a batch's last group."""
        self._settle(transport, results)
        self._breaker.record(results)

    def _settle(self, transport: Transport, results: Sequence[Result]) -> None:
        """Delete what is done, back off what failed, release the rest (`workers.lease.settle`);
        then the offloaded payloads of the deleted messages (PAYLOAD_DELETE)."""
        try:
            settled = settle(transport, plan(results, self._retry_backoff), held=self._held)
        except AWS_ERRORS as exc:
            # Undeleted messages come back after their visibility timeout and are rewritten
            # idempotently; the others just wait out their timeout. Late, never lost.
            log.error("consumer %d could not settle %d message(s): %s", self.spec.slot,
                      len(results), exc, extra=failure_fields(exc))
            return
        not_deleted = {message.message_id for message in settled.not_deleted}
        for result in results:
            if result.offloaded is not None and result.message.message_id not in not_deleted:
                self._delete_payload(result.message, *result.offloaded)

    def _delete_payload(self, message: Message, bucket: str, key: str) -> None:
        """After its message: a message still on the queue (not deleted) must find its payload
        when it comes back. A failed delete leaves the object, as the extended client's own
        consumer would, for a lifecycle rule to expire."""
        assert self._payloads is not None
        try:
            self._payloads.delete_object(bucket, key)
        except AWS_ERRORS as exc:
            log.warning("consumer %d could not delete the payload s3://%s/%s of message %s: %s",
                        self.spec.slot, bucket, key, message.message_id, exc,
                        extra={"message_id": message.message_id, "group_id": message.group_id,
                               "bucket": bucket, "key": key, **failure_fields(exc)})

    # -- helpers --------------------------------------------------------------------------------
    def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        self._signals.sleep(seconds, self.status.beat, wakeable=wakeable)

    def _finish(self, code: int) -> int:
        self.status.update(state=ConsumerState.STOPPED)
        log.info("consumer %d (pid %d) stopped", self.spec.slot, self.pid)
        return code
