"""One consumer process: owns its boto3 clients and its receive stream.

Threads, each with one job:
- main (this module): long-polls the queue and hands each batch to the processing threads, up to
  a few batches in flight (`workers.consumer.batches`), pausing while whole batches fail
  (`workers.consumer.breaker`);
- processing threads (`CONSUMER_THREADS`): one message group each, strictly in order
  (`workers.books.processor`); the one finishing a batch's last group settles the batch: deletes /
  backs off / releases every message of it;
- keeper (`workers.consumer.keeper`): extends the visibility of held messages, notices orphaning.

An exception nothing expected in any of them ends the process (`workers.consumer.internal_errors`).

What it holds is also kept in the state dir (`workers.lease.files`); before its first receive, a
consumer hands back what the dead consumers the pool names held (`workers.lease.handback`).

Signals only set flags and wake the main thread (`workers.consumer.signals`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from workers import metrics
from workers.aws import AWS_ERRORS
from workers.aws.clients import make_clients
from workers.aws.errors import failure_fields, failure_reason
from workers.aws.preflight import not_fifo
from workers.aws.sqs import SqsTransport, discover_queue
from workers.backoff import Backoff
from workers.books.processor import (
    BookProcessor,
    Outcome,
    Result,
    crash_limit_warning,
    visibility_changes,
)
from workers.books.store import BookStore
from workers.consumer.batches import InFlightBatches
from workers.consumer.breaker import Breaker
from workers.consumer.internal_errors import ConsumerThread, exit_on_internal_error
from workers.consumer.keeper import EXIT_ORPHANED, Keeper
from workers.consumer.queue_depth import QueueDepthSampler
from workers.consumer.signals import LongPollAbandoned, Signals
from workers.lease.crashes import CrashRegistry
from workers.lease.files import ConsumerRecord, recovery_dir
from workers.lease.handback import receive_wait, recover
from workers.lease.held import HeldMessages
from workers.status import ConsumerState, ConsumerStatus, write_consumer_status

if TYPE_CHECKING:
    from workers.consumer.process import ConsumerSpec

log = logging.getLogger(__name__)

# Named exit codes (and EXIT_ORPHANED, from workers.consumer.keeper; EXIT_INTERNAL_ERROR, from
# workers.consumer.internal_errors).
EXIT_OK = 0
# After a failed queue lookup or receive (SQS down, credentials, ...), and while whole batches
# fail (the breaker): 1, 2, 4 ... 30 s.
RECEIVE_BACKOFF = Backoff(1.0, 30.0)


class Consumer:
    def __init__(self, spec: ConsumerSpec) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.pid = os.getpid()
        self._signals = Signals()
        self._status = ConsumerStatus(
            slot=spec.slot, pid=self.pid, state=ConsumerState.STARTING, restarts=spec.restarts,
            started_at=time.time(), heartbeat_at=time.time(),
        )
        self._status_lock = threading.Lock()
        self._held: HeldMessages | None = None
        self._record: ConsumerRecord | None = None
        self._crashes = CrashRegistry(recovery_dir(self.settings.state_dir),
                                      self.settings.crash_dead_letter_after)
        self._transport: SqsTransport | None = None
        self._keeper = Keeper(spec.slot, spec.parent_pid, self._signals.stop)
        self._breaker = Breaker(spec.slot, self._report_failing, RECEIVE_BACKOFF)

    # -- status ---------------------------------------------------------------------------------
    def _update(self, **changes: object) -> None:
        with self._status_lock:
            self._status = dataclasses.replace(self._status, **changes)  # type: ignore[arg-type]
            write_consumer_status(self.settings.state_dir, self._status)

    def _beat(self, state: ConsumerState | None = None) -> None:
        now = time.time()
        if state in (None, self._status.state) and now - self._status.heartbeat_at < 0.5:
            return  # the pool reads heartbeats in seconds: no need to rewrite the file
        changes: dict[str, object] = {"heartbeat_at": now}
        if state is not None:
            changes["state"] = state
        self._update(**changes)

    def _report_failing(self, reason: str | None) -> None:
        # /health reads `failing`: receives still succeed while S3 is down, so the poll age
        # alone cannot tell.
        self._update(failing=reason, failing_at=None if reason is None else time.time())

    def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        self._signals.sleep(seconds, self._beat, wakeable=wakeable)

    def internal_error(self, thread: ConsumerThread, exc: BaseException) -> None:
        """End this process on an exception nothing expected in one of its threads."""
        exit_on_internal_error(self.spec.slot, thread, exc,
                               self._record.processing if self._record is not None else None)

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> int:
        self._signals.install()
        self._update(state=ConsumerState.STARTING)
        metrics.init_consumer_series(self.settings.genre_buckets)
        self._keeper.start()
        clients = make_clients(self.settings.consumer_threads, self.settings.wait_time_seconds,
                               self.settings.s3_client, self.settings.sqs_client)
        if not self._connect(clients.sqs, clients.sqs_receive):
            return self._finish(EXIT_OK)
        assert self._transport is not None and self._held is not None
        assert self._record is not None
        self._recover()
        processor = BookProcessor(BookStore(clients.s3), self._transport,
                                  self.settings.genre_buckets, crashes=self._crashes,
                                  slots=self._record.processing)
        executor = ThreadPoolExecutor(self.settings.consumer_threads, thread_name_prefix="group")
        settled = self._consume(processor, executor)
        # Threads still busy past the stop deadline are abandoned, not waited for: the pool's
        # KILL would come next anyway. What they hold stays in the held file, handed back by
        # the next consumer the pool starts (or the next run), else after the visibility timeout.
        executor.shutdown(wait=settled, cancel_futures=True)
        self._held.close()
        return self._finish(EXIT_ORPHANED if self._keeper.orphaned else EXIT_OK)

    def _recover(self) -> None:
        """Hand back what our dead predecessors held, before receiving anything ourselves."""
        if not self.spec.predecessors:
            return
        assert self._transport is not None
        directory = recovery_dir(self.settings.state_dir)
        wait = receive_wait(self.spec.predecessors, directory)
        if wait > 0:
            log.info("consumer %d waits %.1f s for its predecessors' last receive to end",
                     self.spec.slot, wait)
            self._sleep(wait)  # only a stop ends it early
        if self._signals.stopping():
            return  # the files stay for the next consumer
        try:
            released = recover(self.spec.predecessors, directory, self._transport,
                               self._crashes)
        except AWS_ERRORS as exc:
            # Their messages then come back when their visibility timeout runs out.
            log.error("consumer %d could not hand back its predecessors' messages: %s",
                      self.spec.slot, exc)
            return
        log.info("consumer %d handed back %d message(s) held by %d dead consumer(s)",
                 self.spec.slot, released, len(self.spec.predecessors))

    def _connect(self, sqs: object, sqs_receive: object) -> bool:
        """Find the queue, retrying with backoff: a missing queue, or one that is not FIFO (the
        preflight could not tell at start), must not become a crash loop."""
        failures = 0
        while not self._signals.stopping():
            self._beat()
            unusable: str | None = None  # why the queue cannot be consumed, for now
            fields: dict[str, str] = {}
            try:
                queue = discover_queue(sqs, self.settings.input_queue)
            except AWS_ERRORS as exc:
                unusable, fields = str(exc), failure_fields(exc)
            else:
                if not queue.fifo:
                    unusable = not_fifo(self.settings.input_queue)
                    fields = {"reason": "not_fifo", "error": unusable}
            if unusable is not None:
                failures += 1
                delay = RECEIVE_BACKOFF.delay(failures)
                log.error("consumer %d cannot use queue %r, retrying in %.0f s: %s",
                          self.spec.slot, self.settings.input_queue, delay, unusable,
                          extra=fields)
                self._update(state=ConsumerState.BACKOFF, last_error=f"queue lookup: {unusable}")
                self._sleep(delay)
                continue
            if queue.dead_letter_url is None:
                log.warning("input queue %s has no RedrivePolicy: invalid messages will stay "
                            "on the queue", queue.url)
            if (problem := crash_limit_warning(self.settings.crash_dead_letter_after,
                                               queue.max_receive_count)) is not None:
                log.warning("input queue %s: %s", queue.url, problem)
            self._transport = SqsTransport(sqs_receive, sqs, queue)
            self._record = ConsumerRecord(recovery_dir(self.settings.state_dir), self.spec.token,
                                          queue.url, self.settings.consumer_threads)
            # A queue whose own visibility timeout is shorter than the lease keeps its own.
            lease = min(queue.visibility_timeout, self.settings.visibility_lease_seconds)
            self._held = HeldMessages(self._transport, lease,
                                      self.settings.visibility_ceiling_seconds,
                                      record=self._record)
            self._keeper.keep(self._held)
            log.info("consumer %d (pid %d) consuming %s (lease %d s, dlq %s)",
                     self.spec.slot, self.pid, queue.url, lease, queue.dead_letter_url)
            return True
        return False

    def _consume(self, processor: BookProcessor, executor: ThreadPoolExecutor) -> bool:
        """Receive and hand each batch to the processing threads until stopped; True if every
        batch was settled within the stop timeout."""
        assert self._transport is not None and self._held is not None
        assert self._record is not None
        stopping = self._signals.stopping
        batches = InFlightBatches(
            slot=self.spec.slot, executor=executor,
            process_group=functools.partial(processor.process_group, stopping=stopping),
            settle=self._settle_batch, group_limit=self.settings.consumer_threads,
            beat=self._beat, stuck_after=self.settings.visibility_ceiling_seconds,
            internal_error=self.internal_error,
        )
        depth = QueueDepthSampler(self.spec.slot, self._transport,
                                  self.settings.queue_sample_seconds)
        receive_failures = 0
        while not stopping():
            if not batches.wait_for_room(stopping):
                break
            if (pause := self._breaker.remaining()) > 0:
                self._beat(ConsumerState.BACKOFF)
                self._sleep(pause)
            if stopping():
                break
            depth.sample_if_due()
            self._beat(ConsumerState.PROCESSING if batches else ConsumerState.POLLING)
            # Before the call: SQS starts the messages' visibility timeout after this, never
            # before, so the held file never claims them invisible for longer than they are.
            polled_at = time.monotonic()
            wait = self.settings.wait_time_seconds
            try:
                with self._signals.long_poll(), self._record.processing.receiving(wait):
                    messages = self._transport.receive(wait, self._held.lease)
            except LongPollAbandoned:
                break
            except AWS_ERRORS as exc:
                metrics.RECEIVE_CALLS.labels(result="error").inc()
                receive_failures += 1
                error_delay = RECEIVE_BACKOFF.delay(receive_failures)
                log.error("consumer %d receive failed, retrying in %.0f s: %s",
                          self.spec.slot, error_delay, exc,
                          extra=failure_fields(exc))
                self._update(state=ConsumerState.BACKOFF,
                             last_error=f"receive: {failure_reason(exc)}")
                self._sleep(error_delay)
                continue
            receive_failures = 0
            now = time.time()
            metrics.LAST_POLL_TIMESTAMP.set(now)
            self._update(last_poll_at=now, last_error=None)
            if not messages:
                metrics.RECEIVE_CALLS.labels(result="empty").inc()
                if self.settings.poll_interval_seconds and not batches:
                    self._beat(ConsumerState.IDLE)
                    self._sleep(self.settings.poll_interval_seconds, wakeable=True)
                continue
            metrics.RECEIVE_CALLS.labels(result="messages").inc()
            metrics.MESSAGES_RECEIVED.inc(len(messages))
            for message in messages:
                metrics.observe_since_sent(metrics.MESSAGE_AGE_SECONDS, message.sent_at, now)
            self._held.hold(messages, polled_at)
            self._crashes.refresh()  # one stat: reloads only when a recovery recorded a crash
            if stopping():
                self._settle([Result(m, Outcome.RELEASED, "shutdown") for m in messages])
                break
            batches.start(messages)
        if batches.drain(time.monotonic() + self.settings.stop_timeout_seconds):
            return True
        log.warning("consumer %d stopping with %d batch(es) still in progress; their "
                    "messages reappear after their visibility timeout", self.spec.slot,
                    len(batches))
        return False

    def _settle_batch(self, results: list[Result]) -> None:
        """Runs in the processing thread that finished a batch's last group."""
        self._settle(results)
        self._breaker.record(results)

    def _settle(self, results: list[Result]) -> None:
        """Delete finished messages, back off failed ones (and their group's messages behind
        them), release the rest: batched."""
        assert self._transport is not None and self._held is not None
        done = [r.message for r in results if r.outcome.done]
        changes = visibility_changes(results, self.settings.retry_backoff_base_seconds,
                                     self.settings.retry_backoff_max_seconds)
        released = sum(1 for r in results if r.outcome is Outcome.RELEASED)
        try:
            if done:
                self._held.forget(done)
                failed = self._transport.delete(done)
                metrics.DELETE_FAILURES.inc(len(failed))
            self._held.give_back(changes)
            metrics.MESSAGES_RELEASED.inc(released)
        except AWS_ERRORS as exc:
            # Undeleted messages come back after their visibility timeout and are rewritten
            # idempotently; un-released ones just wait out their timeout. Late, never lost.
            log.error("consumer %d could not settle %d message(s): %s", self.spec.slot,
                      len(results), exc, extra=failure_fields(exc))
            self._held.forget([r.message for r in results])

    def _finish(self, code: int) -> int:
        self._update(state=ConsumerState.STOPPED)
        log.info("consumer %d (pid %d) stopped", self.spec.slot, self.pid)
        return code
