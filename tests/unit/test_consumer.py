"""The consumer's own timing mechanics: sleeping beats, and a wake-up cuts a sleep short."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from workers.consumer import Consumer, ConsumerSpec
from workers.settings import Settings
from workers.status import read_consumer_status


@pytest.fixture
def consumer(tmp_path: Path) -> Consumer:
    settings = Settings(state_dir=str(tmp_path))
    return Consumer(ConsumerSpec(slot=0, restarts=0, settings=settings,
                                 parent_pid=os.getppid()))


def test_a_long_sleep_keeps_beating(consumer: Consumer, monkeypatch: pytest.MonkeyPatch):
    beats: list[float] = []
    monkeypatch.setattr(consumer, "_beat", lambda state=None: beats.append(time.monotonic()))

    consumer._sleep(2.5)

    assert len(beats) >= 2  # once a second, so the pool never mistakes waiting for a hang


def test_a_wake_up_cuts_the_sleep_short_and_is_consumed(consumer: Consumer):
    consumer._wake()
    consumer._wake()  # coalesced with the first
    started = time.monotonic()
    consumer._sleep(60)
    assert time.monotonic() - started < 30

    started = time.monotonic()
    consumer._sleep(0.3)  # no leftover wake-up: this one sleeps its whole time
    assert time.monotonic() - started >= 0.29


def test_a_stop_request_ends_the_sleep(consumer: Consumer):
    consumer._stopping = True
    started = time.monotonic()
    consumer._sleep(60)
    assert time.monotonic() - started < 30


def test_status_file_tracks_state_and_heartbeat(consumer: Consumer, tmp_path: Path):
    consumer._beat("idle")
    status = read_consumer_status(tmp_path, os.getpid())
    assert status is not None
    assert status.state == "idle"
    assert status.slot == 0 and status.restarts == 0
    assert time.time() - status.heartbeat_at < 30
