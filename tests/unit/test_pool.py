"""The pool's supervision, with a fake clock and fake processes (as gunicorn tests its arbiter by
faking waitpid): restart back-off, the heartbeat kill, the stop deadline, retiring on a reload;
and which dead consumers' files it hands to the next consumer it starts."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support.fakes import FakeClock, die
from workers.consumer.process import ConsumerSpec
from workers.lease.files import (
    ConsumerRecord,
    processing_path,
    read_processing,
    recovery_dir,
    tokens,
)
from workers.pool import ConsumerPool
from workers.pool.process import Process
from workers.pool.supervisor import (
    QUICK_CRASH_SECONDS,
    _Retiring,
    _Slot,
    consumer_kill_deadline,
)
from workers.settings import Settings
from workers.status import (
    ConsumerState,
    ConsumerStatus,
    read_consumer_status,
    write_consumer_status,
)


@dataclass
class FakeProcess:
    """A consumer process: alive until told it died, or until a signal it obeys."""

    token: str
    predecessors: tuple[str, ...] = ()
    pid: int = 4242
    dead: bool = False
    # Signals that end it (a hung or frozen consumer ignores SIGTERM).
    obeys: frozenset[int] = frozenset({signal.SIGTERM, signal.SIGKILL})
    signals: list[int] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)

    def fileno(self) -> int:
        raise AssertionError("the tests wait with a fake, not select")

    def is_dead(self) -> bool:
        return self.dead

    def signal(self, signum: int) -> None:
        self.signals.append(signum)
        if signum in self.obeys:
            self.dead = True

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


# -- supervision, with a fake clock and fake processes -------------------------------------------

@dataclass
class Supervised:
    pool: ConsumerPool
    clock: FakeClock  # monotonic: deaths, back-offs, deadlines
    wall: FakeClock  # heartbeats
    specs: list[ConsumerSpec] = field(default_factory=list)
    spawned: list[FakeProcess] = field(default_factory=list)

    def spawn(self, spec: ConsumerSpec) -> FakeProcess:
        self.specs.append(spec)
        self.spawned.append(FakeProcess(spec.token, spec.predecessors, pid=5000 + len(self.specs)))
        return self.spawned[-1]

    def wait(self, processes: Sequence[Process], timeout: float) -> None:
        """Nothing ends while the pool waits: the time just passes."""
        self.clock.now += timeout
        self.wall.now += timeout

    def tick(self, seconds: float = 0.0) -> None:
        """`seconds` later, one round of the pool thread."""
        self.clock.now += seconds
        self.wall.now += seconds
        self.pool.manage_consumers()

    def beat(self, process: FakeProcess) -> None:
        """The consumer's main loop beats now, in its status file."""
        write_consumer_status(self.pool.settings.state_dir, ConsumerStatus(
            slot=0, pid=process.pid, state=ConsumerState.POLLING, restarts=0,
            started_at=self.wall.now, heartbeat_at=self.wall.now))


@pytest.fixture
def supervised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Supervised:
    """A pool of one consumer, started."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    sv = Supervised(ConsumerPool(Settings(state_dir=str(tmp_path), consumers=1),
                                 logging.getLogger("test-pool")),
                    FakeClock(1_000.0), FakeClock(50_000.0))
    sv.pool.clock, sv.pool.wall = sv.clock, sv.wall
    sv.pool.spawn, sv.pool.wait_for_any_death = sv.spawn, sv.wait
    sv.pool.resize_slots(1)
    sv.tick()
    return sv


def restarts(reason: str) -> float:
    return REGISTRY.get_sample_value("shelver_consumer_restarts_total", {"reason": reason}) or 0.0


def test_a_consumer_that_keeps_dying_early_is_restarted_after_0_2_4_up_to_60_seconds(
        supervised: Supervised) -> None:
    sv = supervised
    died = restarts("died")
    delays = []
    for _ in range(8):
        sv.tick(1.0)  # dies 1 s after its start: sooner than QUICK_CRASH_SECONDS
        sv.spawned[-1].dead = True
        started, died_at = len(sv.spawned), sv.clock.now
        sv.tick()
        while len(sv.spawned) == started:
            sv.tick(0.5)
        delays.append(sv.clock.now - died_at)

    assert delays == [0, 2, 4, 8, 16, 32, 60, 60]
    assert restarts("died") - died == 8
    assert [spec.restarts for spec in sv.specs] == list(range(9))


def test_a_consumer_that_lived_longer_is_restarted_at_once(supervised: Supervised) -> None:
    sv = supervised
    for _ in range(3):  # quick crashes: the next restart would wait 4 s
        sv.tick(1.0)
        sv.spawned[-1].dead = True
        while sv.pool._slots[0].process is None or sv.pool._slots[0].process.is_dead():
            sv.tick(0.5)
    sv.tick(QUICK_CRASH_SECONDS + 1)
    sv.spawned[-1].dead = True
    started = len(sv.spawned)

    sv.tick()

    assert len(sv.spawned) == started + 1


def test_a_consumer_that_said_it_stopped_is_counted_as_exited(supervised: Supervised) -> None:
    sv = supervised
    exited, died = restarts("exited"), restarts("died")
    write_consumer_status(sv.pool.settings.state_dir, ConsumerStatus(
        slot=0, pid=sv.spawned[0].pid, state=ConsumerState.STOPPED, restarts=0,
        started_at=sv.wall.now, heartbeat_at=sv.wall.now))
    sv.spawned[0].dead = True

    sv.tick()

    assert (restarts("exited") - exited, restarts("died") - died) == (1, 0)
    assert read_consumer_status(sv.pool.settings.state_dir, sv.spawned[0].pid) is None
    assert sv.spawned[0].closed == [True]


def test_a_consumer_whose_main_loop_stops_beating_is_killed_and_replaced(
        supervised: Supervised) -> None:
    sv = supervised
    timeout = sv.pool.settings.heartbeat_timeout_seconds
    hung = sv.spawned[0]
    hung.obeys = frozenset({signal.SIGKILL})
    heartbeats = restarts("heartbeat")
    sv.beat(hung)

    sv.tick(timeout)  # exactly the timeout: not yet
    assert hung.signals == []
    sv.tick(1.0)
    assert hung.signals == [signal.SIGKILL]
    sv.tick()

    assert len(sv.spawned) == 2  # replaced at once
    assert restarts("heartbeat") - heartbeats == 1
    assert sv.pool._slots[0].murdered is False  # the replacement starts with a clean slate


def test_a_consumer_that_never_beat_is_timed_from_its_start(supervised: Supervised) -> None:
    sv = supervised
    sv.tick(sv.pool.settings.heartbeat_timeout_seconds)
    assert sv.spawned[0].signals == []

    sv.tick(1.0)

    assert sv.spawned[0].signals == [signal.SIGKILL]


def test_a_stop_terms_every_consumer_and_kills_those_left_at_the_deadline(
        supervised: Supervised) -> None:
    sv = supervised
    sv.pool.resize_slots(2)
    sv.tick()
    obedient, stuck = sv.spawned
    stuck.obeys = frozenset({signal.SIGKILL})
    stopping_at = sv.clock.now

    sv.pool.stop_consumers()

    assert obedient.signals == [signal.SIGTERM]
    assert stuck.signals == [signal.SIGTERM, signal.SIGKILL]
    deadline = consumer_kill_deadline(sv.pool.settings)
    assert deadline < sv.clock.now - stopping_at < deadline + 1
    assert sv.pool._retiring == [] and obedient.closed == stuck.closed == [True]


def test_a_reload_retires_the_running_generation_and_starts_the_new_one_at_once(
        supervised: Supervised, tmp_path: Path) -> None:
    sv = supervised
    old = sv.spawned[0]
    old.obeys = frozenset({signal.SIGKILL})  # still finishing what it holds
    reloaded = Settings(state_dir=str(tmp_path), consumers=2, consumer_threads=8)

    sv.pool.reload(reloaded)
    sv.tick()

    assert old.signals == [signal.SIGTERM]
    assert [spec.settings for spec in sv.specs[1:]] == [reloaded, reloaded]
    sv.tick(consumer_kill_deadline(reloaded))
    assert old.signals == [signal.SIGTERM]  # its deadline is not over yet
    sv.tick(0.5)
    assert old.signals == [signal.SIGTERM, signal.SIGKILL]
    sv.tick()
    assert sv.pool._retiring == []


def test_a_smaller_pool_retires_the_consumers_of_the_slots_it_drops(
        supervised: Supervised, tmp_path: Path) -> None:
    sv = supervised
    sv.pool.resize_slots(3)
    sv.tick()
    first, second, third = sv.spawned

    sv.pool.resize_slots(1)
    sv.tick()

    assert (first.signals, second.signals, third.signals) == (
        [], [signal.SIGTERM], [signal.SIGTERM])
    assert len(sv.spawned) == 3


# -- which dead consumers' files a new consumer hands back ---------------------------------------

def test_files_without_a_live_consumer_are_orphans(pool: ConsumerPool, tmp_path: Path) -> None:
    leave_files(tmp_path, "previous-run-1", "previous-run-2")

    assert pool.orphans() == ("previous-run-1", "previous-run-2")


def test_live_consumers_and_what_they_recover_are_not_orphans(pool: ConsumerPool,
                                                               tmp_path: Path) -> None:
    leave_files(tmp_path, "being-recovered", "dead")
    leave_files(tmp_path, "alive", "retiring", alive=True)
    alive = FakeProcess("alive", predecessors=("being-recovered",))
    pool._slots = [_Slot(0, process=alive), _Slot(1)]
    pool._retiring = [_Retiring(FakeProcess("retiring"), kill_at=0.0)]

    assert pool.orphans() == ("dead",)


def test_a_retired_consumer_s_messages_in_processing_do_not_count_as_crashes(
        pool: ConsumerPool, tmp_path: Path) -> None:
    # Killed at its stop deadline, it was stopping on purpose: what it held is still handed
    # back, but nothing counts towards dead-lettering.
    leave_files(tmp_path, "retired")
    retired = FakeProcess("retired", dead=True)
    pool._retiring = [_Retiring(retired, kill_at=0.0)]

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
    pool._slots = [_Slot(0, process=hung, murdered=True)]

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
    pool._slots = [_Slot(0, process=crashed)]

    pool.reap_consumers()

    assert read_processing(processing_path(recovery_dir(tmp_path), "crashed")).in_processing \
        == ["m-1"]
