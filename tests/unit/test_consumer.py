"""The consumer's own timing mechanics: sleeping beats, a stop ends a long poll without dropping
what it brings. Wake-ups and stop requests themselves: test_signals.py."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from workers.consumer import Consumer, ConsumerSpec
from workers.held_state import ConsumerRecord, recovery_dir
from workers.inflight import HeldMessages
from workers.processing import BookProcessor
from workers.settings import Settings
from workers.status import read_consumer_status
from workers.transport import Message, QueueInfo


@pytest.fixture
def consumer(tmp_path: Path) -> Consumer:
    settings = Settings(state_dir=str(tmp_path))
    return Consumer(ConsumerSpec(slot=0, restarts=0, settings=settings,
                                 parent_pid=os.getppid(), token="t0"))


def test_a_long_sleep_keeps_beating(consumer: Consumer, monkeypatch: pytest.MonkeyPatch):
    beats: list[float] = []
    monkeypatch.setattr(consumer, "_beat", lambda state=None: beats.append(time.monotonic()))

    consumer._sleep(2.5)

    assert len(beats) >= 2  # once a second, so the pool never mistakes waiting for a hang


def test_status_file_tracks_state_and_heartbeat(consumer: Consumer, tmp_path: Path):
    consumer._beat("idle")
    status = read_consumer_status(tmp_path, os.getpid())
    assert status is not None
    assert status.state == "idle"
    assert status.slot == 0 and status.restarts == 0
    assert time.time() - status.heartbeat_at < 30


# -- a stop during a long poll -------------------------------------------------------------------

class _PollingTransport:
    """Answers the first receive `answer_after` seconds after sending our own process the stop
    signal, as SQS would with messages already on their way; records what is handed back."""

    def __init__(self, answer_after: float) -> None:
        self.answer_after = answer_after
        self.queue = QueueInfo("https://sqs.example/q.fifo", 30, None)
        self.handed_back: list[tuple[str, int]] = []

    def receive(self, wait_time_seconds: int) -> list[Message]:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(self.answer_after)  # the signal handler runs in here
        return [Message(f"m-{n}", f"rh-{n}", "{}", "g", 1) for n in range(3)]

    def depth(self) -> tuple[int, int]:
        return (0, 0)

    def delete(self, messages: object) -> list[Message]:
        return []

    def change_visibility(self, changes: list[tuple[Message, int]]) -> list[Message]:
        self.handed_back.extend((m.message_id, seconds) for m, seconds in changes)
        return []


@pytest.fixture
def signals(consumer: Consumer, restore_signals: None) -> Consumer:
    """The consumer's signal handlers, installed in this process for one test."""
    consumer._signals.install()
    return consumer


def _consume(consumer: Consumer, transport: _PollingTransport) -> float:
    consumer._transport = transport  # type: ignore[assignment]
    consumer._record = ConsumerRecord(recovery_dir(consumer.settings.state_dir), "t0",
                                      transport.queue.url, 1)
    consumer._held = HeldMessages(transport, 30, 3600,  # type: ignore[arg-type]
                                  record=consumer._record)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as executor:
        consumer._consume(BookProcessor(None, transport, {}), executor)  # type: ignore[arg-type]
    return time.monotonic() - started


def test_a_stop_does_not_drop_messages_already_on_their_way(signals: Consumer) -> None:
    # Abandoned at once, the answer's messages were lost to the consumer and stayed invisible
    # for their whole visibility timeout: the chaos suite's deploy found 10 left in flight.
    transport = _PollingTransport(answer_after=0.2)

    _consume(signals, transport)

    assert transport.handed_back == [("m-0", 0), ("m-1", 0), ("m-2", 0)]


def test_a_stop_abandons_a_long_poll_that_keeps_waiting(signals: Consumer) -> None:
    transport = _PollingTransport(answer_after=60)

    elapsed = _consume(signals, transport)

    assert elapsed < 30  # not the whole wait: abandoned shortly after the stop
    assert transport.handed_back == []
