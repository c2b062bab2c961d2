"""An exception nothing expected, in a thread the consumer's correctness depends on, ends the
consumer at once, logged with its traceback and counted, and blames no message. The keeper's
and the settle's: test_keeper.py, test_batches.py; a real consumer replaced after one:
tests/e2e/test_internal_errors.py."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path
from typing import get_args

import pytest

from workers import metrics
from workers.consumer.internal_errors import ConsumerThread
from workers.consumer.loop import Consumer
from workers.consumer.process import ConsumerSpec, consumer_main
from workers.lease.files import ConsumerRecord, processing_path, read_processing, recovery_dir
from workers.settings import Settings


def test_every_thread_has_its_series() -> None:
    assert get_args(ConsumerThread) == metrics.INTERNAL_ERROR_THREADS


def _main_loop_with_a_bug(spec: ConsumerSpec) -> None:
    """consumer_main, in a forked child, with a main loop that raises once it is busy."""
    def run(self: Consumer) -> int:
        self._record = ConsumerRecord(recovery_dir(self.settings.state_dir), self.spec.token,
                                      "https://sqs.example/q.fifo", 1)
        self._record.processing.begin("m-1")  # what this thread was on: not its fault
        raise ValueError("a bug in the main loop")

    Consumer.run = run  # type: ignore[method-assign]
    logging.getLogger().handlers.clear()  # pytest's, inherited: the consumer logs to stderr
    consumer_main(spec)


def test_an_unexpected_error_in_the_main_loop_ends_the_consumer_blaming_no_message(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    spec = ConsumerSpec(slot=3, restarts=0, settings=Settings(state_dir=str(tmp_path)),
                        parent_pid=os.getpid(), token="tok")
    child = multiprocessing.get_context("fork").Process(target=_main_loop_with_a_bug,
                                                        args=(spec,))
    child.start()
    child.join(60)

    assert child.exitcode == 1
    processing = processing_path(recovery_dir(tmp_path), "tok")
    assert read_processing(processing).in_processing == []  # no crash to count against m-1
    stderr = capfd.readouterr().err
    assert "consumer 3: internal error in the main thread" in stderr
    assert "Traceback" in stderr and "ValueError: a bug in the main loop" in stderr
