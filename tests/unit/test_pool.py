"""Which dead consumers' files the pool hands to the next consumer it starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.support.fakes import die
from workers.lease.files import (
    ConsumerRecord,
    processing_path,
    read_processing,
    recovery_dir,
    tokens,
)
from workers.pool import ConsumerPool
from workers.pool.process import ConsumerProcess
from workers.pool.supervisor import _Retiring, _Slot
from workers.settings import Settings


@dataclass
class FakeProcess:
    token: str
    predecessors: tuple[str, ...] = ()
    pid: int = 4242
    dead: bool = False
    closed: list[bool] = field(default_factory=list)

    def is_dead(self) -> bool:
        return self.dead

    def close(self) -> None:
        self.closed.append(True)


def leave_files(state_dir: Path, *names: str, alive: bool = False,
                receive_wait: float | None = None) -> None:
    """Files of consumers that died processing a message (or, `alive`, that still live); given
    `receive_wait`, in a receive call with that long poll too."""
    for token in names:
        record = ConsumerRecord(recovery_dir(state_dir), token, "https://sqs.example/q.fifo", 1)
        record.processing.begin("m-1")
        if receive_wait is not None:
            record.processing.receiving(receive_wait).__enter__()
        if not alive:
            die(record)


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConsumerPool:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return ConsumerPool(Settings(state_dir=str(tmp_path)), logging.getLogger("test-pool"))


def test_files_without_a_live_consumer_are_orphans(pool: ConsumerPool, tmp_path: Path) -> None:
    leave_files(tmp_path, "previous-run-1", "previous-run-2")

    assert pool.orphans() == ("previous-run-1", "previous-run-2")


def test_live_consumers_and_what_they_recover_are_not_orphans(pool: ConsumerPool,
                                                               tmp_path: Path) -> None:
    leave_files(tmp_path, "being-recovered", "dead")
    leave_files(tmp_path, "alive", "retiring", alive=True)
    alive = FakeProcess("alive", predecessors=("being-recovered",))
    pool._slots = [_Slot(0, process=cast(ConsumerProcess, alive)), _Slot(1)]
    pool._retiring = [_Retiring(cast(ConsumerProcess, FakeProcess("retiring")), kill_at=0.0)]

    assert pool.orphans() == ("dead",)


def test_a_retired_consumer_s_messages_in_processing_do_not_count_as_crashes(
        pool: ConsumerPool, tmp_path: Path) -> None:
    # Killed at its stop deadline, it was stopping on purpose: what it held is still handed
    # back, but nothing counts towards dead-lettering.
    leave_files(tmp_path, "retired")
    retired = FakeProcess("retired", dead=True)
    pool._retiring = [_Retiring(cast(ConsumerProcess, retired), kill_at=0.0)]

    pool.reap_consumers()

    assert pool._retiring == []
    assert retired.closed == [True]
    assert read_processing(processing_path(recovery_dir(tmp_path), "retired")).in_processing \
        == []
    assert tokens(recovery_dir(tmp_path)) == {"retired"}  # its files stay, for recovery
    assert pool.orphans() == ("retired",)


def test_a_consumer_killed_for_a_missed_heartbeat_leaves_no_crash_to_count(
        pool: ConsumerPool, tmp_path: Path) -> None:
    # The pool decided that death: a main loop that stopped beating (a hung call, a starved
    # machine) says nothing about the messages its processing threads were on.
    leave_files(tmp_path, "hung", receive_wait=20.0)
    hung = FakeProcess("hung", dead=True)
    pool._slots = [_Slot(0, process=cast(ConsumerProcess, hung), murdered=True)]

    pool.reap_consumers()

    activity = read_processing(processing_path(recovery_dir(tmp_path), "hung"))
    assert activity.in_processing == []
    # Its successor must still wait out its last long poll before handing anything back.
    assert activity.receive_until is not None
    assert pool.orphans() == ("hung",)


def test_a_consumer_that_died_by_itself_leaves_its_crash_to_count(
        pool: ConsumerPool, tmp_path: Path) -> None:
    leave_files(tmp_path, "crashed")
    crashed = FakeProcess("crashed", dead=True)
    pool._slots = [_Slot(0, process=cast(ConsumerProcess, crashed))]

    pool.reap_consumers()

    assert read_processing(processing_path(recovery_dir(tmp_path), "crashed")).in_processing \
        == ["m-1"]
