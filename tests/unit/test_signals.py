"""A consumer's signals and wake-ups: a wake-up cuts a wakeable sleep short (the pause between
polls) and no other (a backoff), a stop ends every sleep, a stop during a long poll abandons it
after the grace period."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from workers.consumer.signals import LongPollAbandoned, Signals


def _no_beat() -> None:
    pass


def test_a_wake_up_cuts_the_sleep_short_and_is_consumed():
    signals = Signals()
    signals.wake()
    signals.wake()  # coalesced with the first
    started = time.monotonic()
    signals.sleep(60, _no_beat, wakeable=True)
    assert time.monotonic() - started < 30

    started = time.monotonic()
    signals.sleep(0.3, _no_beat, wakeable=True)  # no leftover wake-up: it sleeps its whole time
    assert time.monotonic() - started >= 0.29


def test_a_wake_up_does_not_cut_a_sleep_short_that_is_not_wakeable_and_is_consumed():
    signals = Signals()
    signals.wake()
    started = time.monotonic()
    signals.sleep(0.3, _no_beat)
    assert time.monotonic() - started >= 0.29
    assert not signals.stopping()

    started = time.monotonic()
    signals.sleep(0.3, _no_beat, wakeable=True)  # the wake-up was dropped, not kept for later
    assert time.monotonic() - started >= 0.29


def test_a_stop_request_ends_every_sleep_not_just_the_next():
    signals = Signals()
    signals.stop()
    for wakeable in (False, True, False):  # the first one also drains the stop's wake-up
        started = time.monotonic()
        signals.sleep(60, _no_beat, wakeable=wakeable)
        assert time.monotonic() - started < 30
    assert signals.stopping()


def test_a_stop_during_a_sleep_that_is_not_wakeable_ends_it():
    signals = Signals()
    threading.Timer(0.2, signals.stop).start()
    started = time.monotonic()
    signals.sleep(60, _no_beat)
    assert time.monotonic() - started < 30


def test_usr1_wakes_a_sleep_without_stopping(restore_signals: None):
    signals = Signals()
    signals.install()
    signal.raise_signal(signal.SIGUSR1)
    started = time.monotonic()
    signals.sleep(60, _no_beat, wakeable=True)
    assert time.monotonic() - started < 30
    assert not signals.stopping()


def test_term_outside_a_long_poll_stops_without_arming_the_abandon_timer(
        restore_signals: None):
    signals = Signals()
    signals.install()
    signal.raise_signal(signal.SIGTERM)
    assert signals.stopping()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_term_during_a_long_poll_abandons_it_after_the_grace(restore_signals: None):
    signals = Signals()
    signals.install()
    started = time.monotonic()
    with pytest.raises(LongPollAbandoned), signals.long_poll():
        signal.raise_signal(signal.SIGTERM)
        time.sleep(60)  # a long poll that keeps waiting
    assert time.monotonic() - started < 30
    assert signals.stopping()


def test_a_stop_just_before_a_long_poll_abandons_it_before_it_starts(restore_signals: None):
    # TERM after the receive loop's last look at stopping() and before the poll is marked: no
    # timer is armed, so the poll must not start (it would sit out its WaitTimeSeconds).
    signals = Signals()
    signals.install()
    signal.raise_signal(signal.SIGTERM)
    started = []
    with pytest.raises(LongPollAbandoned), signals.long_poll():
        started.append(True)
    assert started == []
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
