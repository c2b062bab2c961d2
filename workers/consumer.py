"""One consumer process: owns its boto3 clients and its receive stream.

Threads, each with one job:
- main: long-polls the queue, splits a batch by message group, hands the groups to the pool of
  processing threads, then deletes / backs off / releases every message of the batch;
- processing threads (`CONSUMER_THREADS`): one message group each, strictly in order;
- keeper: extends the visibility of held messages, writes the status file, notices orphaning.

Signals only set flags and wake the main thread through a self-pipe (as gunicorn's arbiter does):
TERM/INT stop gracefully, USR1 asks for an immediate poll, HUP is ignored (the pool reloads us).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import math
import os
import select
import signal
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType

from botocore.exceptions import BotoCoreError, ClientError

from workers import metrics
from workers.aws import make_clients
from workers.inflight import HeldMessages
from workers.processing import (
    BookProcessor,
    Outcome,
    Result,
    failure_reason,
    visibility_changes,
)
from workers.settings import Settings
from workers.status import ConsumerStatus, write_consumer_status
from workers.storage import BookStore
from workers.transport import SQS_BATCH, Message, SqsTransport, discover_queue

log = logging.getLogger(__name__)

# Named exit codes, read by the pool.
EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_ORPHANED = 4

# After the parent dies, the consumer has this long to hand back what it holds before it exits
# anyway (its messages then reappear once their visibility runs out: late, not lost).
ORPHAN_GRACE_SECONDS = 3.0
# A stop during a long poll gives it this long to answer before abandoning it: a busy queue
# answers within milliseconds, and the messages of that answer must be handed back, not left
# invisible until their visibility timeout; a poll still waiting by then has nothing to lose.
LONG_POLL_STOP_GRACE_SECONDS = 1.0
# Receive errors (SQS down, credentials, ...) back off exponentially up to this.
MAX_RECEIVE_BACKOFF_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


class _LongPollAbandoned(BaseException):
    """Raised by the stop signal handler into a long poll in progress."""


@dataclass(eq=False)
class _Batch:
    """A received batch whose message groups are being processed."""

    started: float  # monotonic
    pending: int  # groups not finished yet
    results: list[Result] = field(default_factory=list)


@dataclass(frozen=True)
class ConsumerSpec:
    """Everything a consumer needs, passed by the pool when it spawns one (must pickle)."""

    slot: int
    restarts: int
    settings: Settings
    parent_pid: int


class Consumer:
    def __init__(self, spec: ConsumerSpec) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.pid = os.getpid()
        self._stopping = False
        self._orphaned_at: float | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._status = ConsumerStatus(
            slot=spec.slot, pid=self.pid, state="starting", restarts=spec.restarts,
            started_at=time.time(), heartbeat_at=time.time(),
        )
        self._status_lock = threading.Lock()
        self._held: HeldMessages | None = None
        self._transport: SqsTransport | None = None
        self._next_depth_sample = 0.0
        self._abandoned = False
        self._failing_pause = 0.0  # seconds; grows while whole batches fail
        self._paused_until = 0.0  # monotonic
        self._batches: set[_Batch] = set()
        self._batches_changed = threading.Condition()
        # One batch more than the threads can take at once keeps them busy across receives.
        self._max_batches = 1 + math.ceil(self.settings.consumer_threads / SQS_BATCH)
        self._in_long_poll = False

    # -- signals: set a flag and wake the main thread, nothing else -----------------------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._handle_stop)
        signal.signal(signal.SIGINT, self._handle_stop)
        signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # the wakeup fd does the work
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, self._abandon_long_poll)

    def _handle_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        if self._in_long_poll:
            # Abandon the long poll rather than sit out WaitTimeSeconds (a deploy should not
            # take 20 s), but not at once: an answer may be on its way (chaos suite, deploy).
            signal.setitimer(signal.ITIMER_REAL, LONG_POLL_STOP_GRACE_SECONDS)

    def _abandon_long_poll(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping and self._in_long_poll:
            # A BaseException passes through botocore's `except Exception`; only an answer
            # arriving at this very moment could be lost, and its messages then reappear
            # after their visibility timeout (late, not lost).
            self._in_long_poll = False
            raise _LongPollAbandoned

    def stopping(self) -> bool:
        return self._stopping

    def _wake(self) -> None:
        # A full pipe means a wake-up is already pending: wake-ups coalesce.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"!")

    def _sleep(self, seconds: float) -> None:
        """Sleep until the timeout, a signal, or a wake-up; drain pending wake-ups.

        Beats every second meanwhile: a consumer waiting on purpose is alive, and the pool must
        not take a long POLL_INTERVAL_SECONDS or error backoff for a hang."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or select.select([self._wake_r], [], [], min(remaining, 1.0))[0]:
                break
            self._beat()
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    # -- status ---------------------------------------------------------------------------------
    def _update(self, **changes: object) -> None:
        with self._status_lock:
            self._status = dataclasses.replace(self._status, **changes)  # type: ignore[arg-type]
            write_consumer_status(self.settings.state_dir, self._status)

    def _beat(self, state: str | None = None) -> None:
        now = time.time()
        if state in (None, self._status.state) and now - self._status.heartbeat_at < 0.5:
            return  # the pool reads heartbeats in seconds: no need to rewrite the file
        changes: dict[str, object] = {"heartbeat_at": now}
        if state is not None:
            changes["state"] = state
        self._update(**changes)

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        self._update(state="starting")
        metrics.init_consumer_series(self.settings.genre_buckets)
        keeper = threading.Thread(target=self._keep, name="keeper", daemon=True)
        keeper.start()
        clients = make_clients(self.settings.consumer_threads, self.settings.wait_time_seconds,
                               self.settings.s3_client, self.settings.sqs_client)
        if not self._connect(clients.sqs, clients.sqs_receive):
            return self._finish(EXIT_OK)
        assert self._transport is not None and self._held is not None
        processor = BookProcessor(BookStore(clients.s3), self._transport,
                                  self.settings.genre_buckets)
        executor = ThreadPoolExecutor(self.settings.consumer_threads, thread_name_prefix="group")
        self._consume(processor, executor)
        # Threads still busy past the stop deadline are abandoned, not waited for: the pool's
        # KILL would come next anyway, and their messages reappear after the visibility timeout.
        executor.shutdown(wait=not self._abandoned, cancel_futures=True)
        return self._finish(EXIT_ORPHANED if self._orphaned_at else EXIT_OK)

    def _connect(self, sqs: object, sqs_receive: object) -> bool:
        """Find the queue, retrying with backoff: a missing queue must not become a crash loop."""
        delay = 1.0
        while not self._stopping:
            self._beat()
            try:
                queue = discover_queue(sqs, self.settings.input_queue)
            except (ClientError, BotoCoreError, OSError) as exc:
                log.error("consumer %d cannot resolve queue %r, retrying in %.0f s: %s",
                          self.spec.slot, self.settings.input_queue, delay, exc)
                self._update(state="backoff", last_error=f"queue lookup: {exc}")
                self._sleep(delay)
                delay = min(delay * 2, MAX_RECEIVE_BACKOFF_SECONDS)
                continue
            if queue.dead_letter_url is None:
                log.warning("input queue %s has no RedrivePolicy: invalid messages will stay "
                            "on the queue", queue.url)
            self._transport = SqsTransport(sqs_receive, sqs, queue)
            self._held = HeldMessages(self._transport, queue.visibility_timeout,
                                      self.settings.visibility_ceiling_seconds)
            log.info("consumer %d (pid %d) consuming %s (visibility %d s, dlq %s)",
                     self.spec.slot, self.pid, queue.url, queue.visibility_timeout,
                     queue.dead_letter_url)
            return True
        return False

    def _consume(self, processor: BookProcessor, executor: ThreadPoolExecutor) -> None:
        """Receive and dispatch; settling happens as batches finish, off this thread.

        Up to `_max_batches` received batches are in flight at once, so the next receive
        overlaps the current batch's slowest group and its delete instead of waiting for them.
        SQS FIFO never hands out a group that has messages in flight, so batches in flight
        together never share a group and need no coordination.
        """
        assert self._transport is not None and self._held is not None
        error_delay = 1.0
        while not self._stopping:
            if not self._wait_for_batches(self._max_batches):
                break
            self._pause_while_failing()
            if self._stopping:
                break
            self._sample_depth()
            self._beat("processing" if self._batches else "polling")
            try:
                self._in_long_poll = True
                try:
                    messages = self._transport.receive(self.settings.wait_time_seconds)
                finally:
                    self._in_long_poll = False
            except _LongPollAbandoned:
                break
            except (ClientError, BotoCoreError, OSError) as exc:
                metrics.RECEIVE_CALLS.labels(result="error").inc()
                log.error("consumer %d receive failed, retrying in %.0f s: %s",
                          self.spec.slot, error_delay, exc)
                self._update(state="backoff", last_error=f"receive: {failure_reason(exc)}")
                self._sleep(error_delay)
                error_delay = min(error_delay * 2, MAX_RECEIVE_BACKOFF_SECONDS)
                continue
            error_delay = 1.0
            received_at = time.monotonic()
            now = time.time()
            metrics.LAST_POLL_TIMESTAMP.set(now)
            self._update(last_poll_at=now, last_error=None)
            if not messages:
                metrics.RECEIVE_CALLS.labels(result="empty").inc()
                if self.settings.poll_interval_seconds and not self._batches:
                    self._beat("idle")
                    self._sleep(self.settings.poll_interval_seconds)
                continue
            metrics.RECEIVE_CALLS.labels(result="messages").inc()
            metrics.MESSAGES_RECEIVED.inc(len(messages))
            self._held.hold(messages, received_at)
            if self._stopping:
                self._settle([Result(m, Outcome.RELEASED, "shutdown") for m in messages])
                break
            self._dispatch(processor, executor, messages)
        deadline = time.monotonic() + self.settings.stop_timeout_seconds
        if not self._wait_for_batches(1, deadline):
            log.warning("consumer %d stopping with %d batch(es) still in progress; their "
                        "messages reappear after their visibility timeout", self.spec.slot,
                        len(self._batches))
            self._abandoned = True

    def _dispatch(self, processor: BookProcessor, executor: ThreadPoolExecutor,
                  messages: list[Message]) -> None:
        """Hand each message group of a batch to the processing threads."""
        groups: OrderedDict[str, list[Message]] = OrderedDict()
        for m in messages:
            groups.setdefault(m.group_id, []).append(m)
        batch = _Batch(started=time.monotonic(), pending=len(groups))
        with self._batches_changed:
            self._batches.add(batch)
        for group in groups.values():
            future = executor.submit(processor.process_group, group, self.stopping)
            future.add_done_callback(functools.partial(self._group_done, batch, group))

    def _group_done(self, batch: _Batch, group: list[Message],
                    future: Future[list[Result]]) -> None:
        """Runs in the processing thread that finished the group; the last one settles."""
        try:
            results = future.result()
        except Exception as exc:  # a bug, not an AWS failure: back off, never drop
            log.exception("consumer %d failed processing group %s", self.spec.slot,
                          group[0].group_id)
            metrics.MESSAGES_RETRIED.labels(reason=type(exc).__name__).inc(len(group))
            results = [Result(m, Outcome.RETRY, "internal_error") for m in group]
        with self._batches_changed:
            batch.results.extend(results)
            batch.pending -= 1
            if batch.pending:
                return
        try:
            self._settle(batch.results)
            self._trip_breaker(batch.results)
        finally:
            with self._batches_changed:
                self._batches.discard(batch)
                self._batches_changed.notify_all()

    def _wait_for_batches(self, limit: int, deadline: float | None = None) -> bool:
        """Wait until fewer than `limit` batches are in flight, beating meanwhile; False if the
        deadline passed first (or, with no deadline, if a stop was requested)."""
        while True:
            with self._batches_changed:
                if len(self._batches) < limit:
                    return True
                self._batches_changed.wait(1.0)
                oldest = min((b.started for b in self._batches), default=time.monotonic())
            now = time.monotonic()
            if deadline is None and self._stopping:
                return False
            if deadline is not None and now > deadline:
                return False
            # A batch older than the visibility ceiling means a stuck thread: stop beating and
            # let the pool replace us rather than hold the messages forever.
            if now - oldest < self.settings.visibility_ceiling_seconds:
                self._beat()

    def _trip_breaker(self, results: list[Result]) -> None:
        """Circuit breaker: when a whole batch failed (S3 down, say), pause receiving.

        Receiving more would only fail more messages, and every receive of a message counts
        towards the queue's maxReceiveCount, after which SQS moves even a valid book to the DLQ.
        """
        if not any(r.outcome is Outcome.RETRY for r in results) or any(
                r.outcome.done for r in results):
            self._failing_pause = 0.0
            if self._status.failing is not None:
                self._update(failing=None, failing_at=None)
            return
        self._failing_pause = min(max(self._failing_pause * 2, 1.0), MAX_RECEIVE_BACKOFF_SECONDS)
        self._paused_until = time.monotonic() + self._failing_pause
        log.warning("consumer %d: every message of the batch failed, pausing receives for %.0f s",
                    self.spec.slot, self._failing_pause)
        # /health reads `failing`: receives still succeed, so the poll age alone cannot tell.
        reason = next(r.reason for r in results if r.outcome is Outcome.RETRY)
        self._update(failing=reason, failing_at=time.time())

    def _pause_while_failing(self) -> None:
        remaining = self._paused_until - time.monotonic()
        if remaining > 0:
            self._beat("backoff")
            self._sleep(remaining)

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
        except (ClientError, BotoCoreError, OSError) as exc:
            # Undeleted messages come back after their visibility timeout and are rewritten
            # idempotently; un-released ones just wait out their timeout. Late, never lost.
            log.error("consumer %d could not settle %d message(s): %s", self.spec.slot,
                      len(results), exc)
            self._held.forget([r.message for r in results])

    def _sample_depth(self) -> None:
        assert self._transport is not None
        now = time.monotonic()
        if now < self._next_depth_sample:
            return
        self._next_depth_sample = now + self.settings.queue_sample_seconds
        try:
            visible, in_flight = self._transport.depth()
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("consumer %d could not sample queue depth: %s", self.spec.slot, exc)
            return
        metrics.QUEUE_MESSAGES.labels(state="visible").set(visible)
        metrics.QUEUE_MESSAGES.labels(state="in_flight").set(in_flight)

    def _finish(self, code: int) -> int:
        self._update(state="stopped")
        log.info("consumer %d (pid %d) stopped", self.spec.slot, self.pid)
        return code

    # -- keeper thread --------------------------------------------------------------------------
    def _keep(self) -> None:
        while True:
            held = self._held
            interval = held.check_interval if held is not None else 0.5
            time.sleep(interval)
            try:
                if held is not None:
                    held.extend_due()
            except (ClientError, BotoCoreError, OSError) as exc:
                log.warning("consumer %d could not extend visibility: %s", self.spec.slot, exc)
            self._watch_parent()

    def _watch_parent(self) -> None:
        if os.getppid() == self.spec.parent_pid:
            return
        if self._orphaned_at is None:
            log.error("consumer %d: the gunicorn master is gone, stopping", self.spec.slot)
            self._orphaned_at = time.monotonic()
            self._stopping = True
            self._wake()
        elif time.monotonic() - self._orphaned_at > ORPHAN_GRACE_SECONDS:
            self._abandon()

    def _abandon(self) -> None:
        """Orphaned and the main loop is still busy (e.g. in a long poll): hand back what we
        hold that is not being processed, then exit at once."""
        held = self._held
        if held is not None:
            # If this fails they reappear after their visibility timeout anyway.
            with contextlib.suppress(ClientError, BotoCoreError, OSError):
                held.give_back([(m, 0) for m in held.held_messages()])
        logging.shutdown()
        os._exit(EXIT_ORPHANED)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the thread that spawned us (the pool's) goes away."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the keeper's getppid() watch still catches orphaning


def consumer_main(spec: ConsumerSpec) -> None:
    """Process entry point (multiprocessing target)."""
    _die_with_parent()
    # Our own process group: a Ctrl-C in the terminal goes to gunicorn, which stops us in order,
    # instead of racing the pool's restart logic.
    os.setpgrp()
    logging.basicConfig(
        level=spec.settings.log_level,
        format=f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] consumer-{spec.slot}: %(message)s",
        stream=sys.stderr,
    )
    # botocore announces where it found credentials and endpoints at INFO, per client.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    consumer = Consumer(spec)
    if os.getppid() != spec.parent_pid:  # the parent died before prctl took effect
        sys.exit(EXIT_ORPHANED)
    try:
        code = consumer.run()
    except Exception:
        log.exception("consumer %d crashed", spec.slot)
        code = EXIT_CRASHED
    logging.shutdown()
    # os._exit, not sys.exit: abandoned processing threads must not hold the exit up (the
    # interpreter would join them), and there is nothing left to flush.
    os._exit(code)
