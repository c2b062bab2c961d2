"""The consumer's own timing mechanics: sleeping beats, a stop ends a long poll without dropping
what it brings, a predecessor's last receive is waited out before its messages are handed back.
Wake-ups and stop requests themselves: test_signals.py."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from prometheus_client import REGISTRY

from tests.support.fakes import die
from workers.aws.sqs import Message, QueueInfo
from workers.books.decode import Book
from workers.books.processor import BookProcessor
from workers.books.store import Origin, StoredBook
from workers.consumer.loop import Consumer
from workers.consumer.process import ConsumerSpec
from workers.lease.files import ConsumerRecord, recovery_dir, tokens
from workers.lease.handback import RECEIVE_MARGIN_SECONDS
from workers.settings import Settings
from workers.status import ConsumerState, read_consumer_status


@pytest.fixture
def consumer(tmp_path: Path) -> Consumer:
    settings = Settings(state_dir=str(tmp_path))
    return Consumer(ConsumerSpec(slot=0, restarts=0, settings=settings,
                                 parent_pid=os.getppid(), token="t0"))


def test_a_long_sleep_keeps_beating(consumer: Consumer, monkeypatch: pytest.MonkeyPatch):
    beats: list[float] = []
    monkeypatch.setattr(consumer.status, "beat",
                        lambda state=None: beats.append(time.monotonic()))

    consumer._sleep(2.5)

    assert len(beats) >= 2  # once a second, so the pool never mistakes waiting for a hang


def test_status_file_tracks_state_and_heartbeat(consumer: Consumer, tmp_path: Path):
    consumer.status.beat(ConsumerState.IDLE)
    status = read_consumer_status(tmp_path, os.getpid())
    assert status is not None
    assert status.state == "idle"
    assert status.slot == 0 and status.restarts == 0
    assert time.time() - status.heartbeat_at < 30


# -- a queue that is not FIFO -------------------------------------------------------------------

def test_a_standard_queue_is_reported_and_waited_on_not_consumed(
        moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The preflight could not tell at start (SQS out of reach): the consumer took the queue,
    # raised KeyError('MessageGroupId') on its first message, and so did every replacement.
    sqs = boto3.client("sqs")
    sqs.create_queue(QueueName="standard")
    consumer = Consumer(ConsumerSpec(
        slot=0, restarts=0, settings=Settings(state_dir=str(tmp_path), input_queue="standard"),
        parent_pid=os.getppid(), token="t0"))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            consumer._signals.stop()

    monkeypatch.setattr(consumer, "_sleep", sleep)

    assert consumer._look_up_queue(sqs) is None  # stopped while waiting, never consuming

    assert waits == [1, 2, 4]
    status = read_consumer_status(tmp_path, os.getpid())
    assert status is not None
    assert status.state == "backoff"
    assert status.last_error == (
        "queue lookup: INPUT_QUEUE='standard' is a standard queue: Shelver needs a FIFO queue "
        "(FifoQueue true, a name ending in .fifo), whose message groups keep each book's "
        "versions in order; set INPUT_QUEUE to a FIFO queue")


# -- a stop during a long poll -------------------------------------------------------------------

class _PollingTransport:
    """Answers the first receive `answer_after` seconds after sending our own process the stop
    signal, as SQS would with messages already on their way; records what is handed back."""

    def __init__(self, answer_after: float, sent_at: float | None = None) -> None:
        self.answer_after = answer_after
        self.sent_at = sent_at
        self.queue = QueueInfo("https://sqs.example/q.fifo", 30, None)
        self.handed_back: list[tuple[str, int]] = []

    def receive(self, wait_time_seconds: int, lease_seconds: int) -> list[Message]:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(self.answer_after)  # the signal handler runs in here
        return [Message(f"m-{n}", f"rh-{n}", "{}", "g", 1, sent_at=self.sent_at)
                for n in range(3)]

    def depth(self) -> tuple[int, int]:
        return (0, 0)

    def dead_letter_depth(self) -> None:
        return None

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        return []

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = 0) -> list[Message]:
        self.handed_back.extend((m.message_id, seconds) for m, seconds in changes)
        return []

    def dead_letter(self, message: Message, reason: str, detail: str) -> None:
        raise AssertionError("no message of these tests is dead-lettered")


class _NoStore:
    """No book of these tests reaches the store."""

    def store(self, book: Book, origin: Origin) -> StoredBook:
        raise AssertionError("no book of these tests is stored")


@pytest.fixture
def signals(consumer: Consumer, restore_signals: None) -> Consumer:
    """The consumer's signal handlers, installed in this process for one test."""
    consumer._signals.install()
    return consumer


def _consume(consumer: Consumer, transport: _PollingTransport) -> float:
    consumer.hold(transport)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as executor:
        consumer._consume(transport, BookProcessor(_NoStore(), {}), executor)
    return time.monotonic() - started


def test_a_stop_does_not_drop_messages_already_on_their_way(signals: Consumer) -> None:
    # Abandoned at once, the answer's messages were lost to the consumer and stayed invisible
    # for their whole visibility timeout: the chaos suite's deploy found 10 left in flight.
    transport = _PollingTransport(answer_after=0.2)

    _consume(signals, transport)

    assert transport.handed_back == [("m-0", 0), ("m-1", 0), ("m-2", 0)]


def test_received_messages_report_their_age_since_they_were_sent(signals: Consumer) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (sample("shelver_message_age_seconds_count"),
              sample("shelver_message_age_seconds_bucket", le="60.0"),
              sample("shelver_message_age_seconds_bucket", le="30.0"))

    _consume(signals, _PollingTransport(answer_after=0.2, sent_at=time.time() - 45))

    after = (sample("shelver_message_age_seconds_count"),
             sample("shelver_message_age_seconds_bucket", le="60.0"),
             sample("shelver_message_age_seconds_bucket", le="30.0"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 0]


def test_a_stop_abandons_a_long_poll_that_keeps_waiting(signals: Consumer) -> None:
    transport = _PollingTransport(answer_after=60)

    elapsed = _consume(signals, transport)

    assert elapsed < 30  # not the whole wait: abandoned shortly after the stop
    assert transport.handed_back == []


# -- a wake-up (`/`) and the consumer's waits ----------------------------------------------------

class _WokenTransport(_PollingTransport):
    """Its first receive is woken (SIGUSR1, as `/` sends) and then fails or finds nothing; its
    second records when it came and stops the consumer."""

    def __init__(self, fail_first: bool) -> None:
        super().__init__(answer_after=0)
        self.fail_first = fail_first
        self.received_at: list[float] = []
        self.stop: Callable[[], None] = lambda: None

    def receive(self, wait_time_seconds: int, lease_seconds: int) -> list[Message]:
        self.received_at.append(time.monotonic())
        if len(self.received_at) > 1:
            self.stop()
            return []
        # Woken while polling: the consumer looked idle when `/` read its state, say.
        os.kill(os.getpid(), signal.SIGUSR1)
        if self.fail_first:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}},
                              "ReceiveMessage")
        return []


def _woken(consumer: Consumer, transport: _WokenTransport) -> float:
    """Seconds from the woken receive to the next one."""
    transport.stop = consumer._signals.stop
    _consume(consumer, transport)
    assert len(transport.received_at) == 2
    return transport.received_at[1] - transport.received_at[0]


def test_a_wake_up_does_not_cut_an_error_backoff_short(signals: Consumer) -> None:
    # The first receive error backs off 1 s: a load balancer checking `/` every few seconds
    # must not turn that into a retry loop against a failing SQS.
    assert _woken(signals, _WokenTransport(fail_first=True)) >= 1.0


def test_a_wake_up_does_not_cut_a_breaker_pause_short(signals: Consumer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pauses = iter([0.0, 1.0])  # none before the first receive, 1 s after it
    monkeypatch.setattr(signals._breaker, "remaining", lambda: next(pauses, 0.0))

    assert _woken(signals, _WokenTransport(fail_first=False)) >= 1.0


def test_a_wake_up_cuts_the_pause_between_polls_short(tmp_path: Path,
                                                      restore_signals: None) -> None:
    consumer = Consumer(ConsumerSpec(
        slot=0, restarts=0, parent_pid=os.getppid(), token="t0",
        settings=Settings(state_dir=str(tmp_path), poll_interval_seconds=60)))
    consumer._signals.install()

    assert _woken(consumer, _WokenTransport(fail_first=False)) < 30  # not the 60 s pause


# -- handing back what dead predecessors held ----------------------------------------------------

def successor(tmp_path: Path, transport: _PollingTransport, poll_seconds: float) -> Consumer:
    """A consumer started to replace "dead", which held one message and died in a long poll of
    `poll_seconds` (from now)."""
    directory = recovery_dir(tmp_path)
    dead = ConsumerRecord(directory, "dead", transport.queue.url, threads=1)
    dead.held.write([(Message("m-0", "rh-0", "", "g", 1), time.time() + 300)])
    dead.processing.receiving(poll_seconds).__enter__()  # died in it: never left
    die(dead)
    consumer = Consumer(ConsumerSpec(slot=0, restarts=1, settings=Settings(state_dir=str(tmp_path)),
                                     parent_pid=os.getppid(), token="new",
                                     predecessors=("dead",)))
    return consumer


def test_a_stop_while_a_predecessor_s_receive_may_still_be_answered_leaves_its_files(
        tmp_path: Path) -> None:
    transport = _PollingTransport(answer_after=0)
    consumer = successor(tmp_path, transport, poll_seconds=60)
    threading.Timer(0.3, consumer._signals.stop).start()

    # Waits for the long poll's end, 60 s away: the stop comes first.
    consumer._hand_back_predecessors(transport)

    assert transport.handed_back == []
    assert tokens(recovery_dir(tmp_path)) == {"dead"}  # for the next consumer to recover


def test_a_predecessor_s_messages_are_handed_back_once_its_receive_is_over(
        tmp_path: Path) -> None:
    transport = _PollingTransport(answer_after=0)
    poll_ends = time.time() + 0.5
    consumer = successor(tmp_path, transport, poll_seconds=0.5)
    handed_back_at: list[float] = []
    change_visibility = transport.change_visibility

    def timed(changes: Sequence[tuple[Message, int]], failure_level: int = 0) -> list[Message]:
        handed_back_at.append(time.time())
        return change_visibility(changes, failure_level)

    transport.change_visibility = timed  # type: ignore[method-assign]

    consumer._hand_back_predecessors(transport)

    assert transport.handed_back == [("m-0", 0)]
    # SQS could have answered the dead consumer's long poll until then, with this message.
    assert handed_back_at[0] >= poll_ends + RECEIVE_MARGIN_SECONDS
    assert tokens(recovery_dir(tmp_path)) == set()
