"""The consumer pool: a supervisor for consumer processes, run by the gunicorn master.

gunicorn's arbiter knows nothing of these processes, so the pool supervises them itself, from
one thread of the master, in the arbiter's style: `manage_consumers` is a loop of named steps,
`reap_`, `murder_`, `replace_`, `spawn_`, `publish`. Three gunicorn facts shape it (measured:
docs/architecture.md, "Facts the design rests on"):
- the master reaps ANY child with waitpid(-1), so `Process.is_alive()`/`exitcode` lie once it has;
  deaths are detected through a pidfd per consumer instead (readable when the process ends,
  whoever reaps it), and a consumer reports a clean exit in its status file. multiprocessing's
  sentinel pipe is no substitute: an HTTP worker forked while a consumer is being spawned
  inherits the pipe's write end and keeps it open, so the sentinel would miss that death;
- HTTP workers are forked from the master and inherit multiprocessing's child list;
  gunicorn.conf.py clears it in post_fork, and the pool drops reaped processes from it so that
  nothing signals a reused pid;
- consumers are started with the "spawn" method (`workers.pool.process.spawn`): a fresh
  interpreter inherits no listening socket and no boto3 state, whenever it is started.

Each consumer gets a token naming its files in the state dir (`workers.lease.files`), and the
tokens of consumers that are gone and left files there: the one it replaces, those of the
previous run (at start-up), one killed at a stop deadline. It hands back what they held before
receiving (`workers.lease.handback`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field

from prometheus_client import multiprocess

from workers import metrics
from workers.backoff import Backoff
from workers.consumer.process import ConsumerSpec
from workers.lease.files import absolve, recovery_dir, tokens
from workers.logs import Logger
from workers.pool.process import Process, spawn, wait_for_any_death
from workers.settings import Settings
from workers.status import (
    ConsumerState,
    PoolSlot,
    read_consumer_status,
    remove_consumer_status,
    write_pool,
)

# A consumer that dies sooner than this after its start counts as crashing, and its slot's
# restarts back off: the first crash is restarted at once, then 2, 4 ... MAX_RESPAWN_DELAY s.
QUICK_CRASH_SECONDS = 10.0
MAX_RESPAWN_DELAY = 60.0
RESPAWN_BACKOFF = Backoff(2.0, MAX_RESPAWN_DELAY)
# Extra time given to consumers past their own stop deadline before they are killed.
KILL_GRACE_SECONDS = 5.0
# gunicorn's graceful_timeout (gunicorn.conf.py reads it): how long a stop waits for the HTTP
# workers before the consumers are even told to stop. An int, as gunicorn requires.
HTTP_GRACEFUL_TIMEOUT_SECONDS = 10
_TICK = 0.5
# In a stop, beyond the two timeouts: the pool thread noticing (one tick), reaping (0.1 s
# polls, gunicorn's and the pool's) and the interpreters' exit. Measured worst case, an HTTP
# worker and a consumer both frozen: 0.4 s past the timeouts (bench/footprint.py).
STOP_OVERHEAD_SECONDS = 2.0


def consumer_kill_deadline(settings: Settings) -> float:
    """Seconds from TERM to KILL for a retiring consumer: a long poll it may still be in, its
    own time to finish what it holds (CONSUMER_STOP_TIMEOUT_SECONDS), then KILL_GRACE_SECONDS."""
    return settings.wait_time_seconds + settings.stop_timeout_seconds + KILL_GRACE_SECONDS


def stop_deadline(settings: Settings) -> float:
    """Longest a SIGTERM to the gunicorn master can take until everything has exited.

    gunicorn's arbiter (halt -> stop) first waits up to its graceful_timeout for the HTTP
    workers (then KILLs them), and only then runs the on_exit hook, which stops the pool: the
    pool thread notices within one tick and TERMs every consumer, KILLing any still running
    after consumer_kill_deadline. An orchestrator's grace period (Kubernetes'
    terminationGracePeriodSeconds) must exceed this, or it SIGKILLs a stop in progress."""
    return (HTTP_GRACEFUL_TIMEOUT_SECONDS + consumer_kill_deadline(settings)
            + STOP_OVERHEAD_SECONDS)


@dataclass
class _Slot:
    index: int
    process: Process | None = None
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0
    restarts: int = 0
    quick_crashes: int = 0
    respawn_at: float = 0.0  # monotonic; when process is None
    murdered: bool = False  # killed by the pool for a missed heartbeat


@dataclass
class _Retiring:
    process: Process
    kill_at: float


@dataclass
class ConsumerPool:
    settings: Settings
    log: Logger
    _: KW_ONLY
    # What the supervision runs on; the unit tests give it fakes.
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    spawn: Callable[[ConsumerSpec], Process] = spawn
    wait_for_any_death: Callable[[Sequence[Process], float], None] = wait_for_any_death
    _slots: list[_Slot] = field(default_factory=list)
    _retiring: list[_Retiring] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _pending_settings: Settings | None = None
    _thread: threading.Thread | None = None
    _published: list[PoolSlot] | None = None

    def __post_init__(self) -> None:
        self._master_pid = os.getpid()

    # -- called from gunicorn hooks (main thread): set state, the pool thread acts on it --------
    def start(self) -> None:
        # The pool thread spawns every consumer: PR_SET_PDEATHSIG is tied to the spawning thread,
        # which must therefore live as long as the consumers.
        self._thread = threading.Thread(target=self._run, name="shelver-pool", daemon=True)
        self._thread.start()

    def reload(self, settings: Settings) -> None:
        self._pending_settings = settings

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # -- the pool thread ------------------------------------------------------------------------
    def _run(self) -> None:
        metrics.init_pool_series()
        self.resize_slots(self.settings.consumers)
        while not self._stop.is_set():
            try:
                self.manage_consumers()
            except Exception as exc:  # the supervisor must outlive any one bad tick
                self.log.error("consumer pool: unexpected error: %r", exc)
            self._wait_for_deaths(_TICK)
        self.stop_consumers()

    def manage_consumers(self) -> None:
        self.reap_consumers()
        self.murder_stale_consumers()
        if self._pending_settings is not None:
            settings, self._pending_settings = self._pending_settings, None
            self.replace_consumers(settings)
        self.spawn_due_consumers()
        self.publish()

    def resize_slots(self, count: int) -> None:
        for slot in self._slots[count:]:
            if slot.process is not None:
                self.retire(slot.process)
        self._slots = self._slots[:count] + [_Slot(i) for i in range(len(self._slots), count)]

    def spawn_due_consumers(self) -> None:
        now = self.clock()
        for slot in self._slots:
            if slot.process is None and now >= slot.respawn_at:
                self.spawn_consumer(slot)

    def spawn_consumer(self, slot: _Slot) -> None:
        predecessors = self.orphans()
        spec = ConsumerSpec(slot=slot.index, restarts=slot.restarts, settings=self.settings,
                            parent_pid=self._master_pid, token=uuid.uuid4().hex,
                            predecessors=predecessors)
        process = self.spawn(spec)
        slot.process = process
        slot.started_at = self.clock()
        slot.started_wall = self.wall()
        self.log.info("consumer %d started (pid %s)%s", slot.index, process.pid,
                      f", handing back what {len(predecessors)} dead consumer(s) held"
                      if predecessors else "",
                      extra={"slot": slot.index})

    def orphans(self) -> tuple[str, ...]:
        """Tokens with files in the state dir whose consumer is gone, and that no live consumer
        is handing back already."""
        live = [r.process for r in self._retiring]
        live += [s.process for s in self._slots if s.process is not None]
        taken = {p.token for p in live} | {t for p in live for t in p.predecessors}
        # Whether their owner is really dead (`owner_alive`) is left to the consumer: the
        # lock test holds a descriptor for a moment, which an HTTP worker forked meanwhile
        # would inherit, lock and all.
        return tuple(sorted(tokens(recovery_dir(self.settings.state_dir)) - taken))

    def reap_consumers(self) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.is_dead():
                self._reap(slot, slot.process)
        for retiring in list(self._retiring):
            if retiring.process.is_dead():
                # Stopped on purpose, killed at most for overrunning its stop deadline: what it
                # was processing does not count as a crash (what it held is still handed back).
                absolve(recovery_dir(self.settings.state_dir), retiring.process.token)
                self._forget(retiring.process)
                self._retiring.remove(retiring)
            elif self.clock() > retiring.kill_at:
                self.kill(retiring.process)

    def _reap(self, slot: _Slot, process: Process) -> None:
        """A slot's consumer has ended: count why, and schedule its replacement."""
        if slot.murdered:
            # We killed it for its main loop, which processes nothing: not a crash of the
            # messages it was processing (its successor still hands them back).
            absolve(recovery_dir(self.settings.state_dir), process.token)
        clean = self._forget(process)
        lived = self.clock() - slot.started_at
        slot.process = None
        slot.restarts += 1
        slot.quick_crashes = slot.quick_crashes + 1 if lived < QUICK_CRASH_SECONDS else 0
        delay = RESPAWN_BACKOFF.delay(slot.quick_crashes - 1)
        slot.respawn_at = self.clock() + delay
        reason = "heartbeat" if slot.murdered else "exited" if clean else "died"
        slot.murdered = False
        metrics.CONSUMER_RESTARTS.labels(reason=reason).inc()
        self.log.error("consumer %d (pid %s) %s after %.1f s; restarting in %.0f s",
                       slot.index, process.pid, reason, lived, delay,
                       extra={"slot": slot.index, "reason": reason})

    def murder_stale_consumers(self) -> None:
        """SIGKILL consumers whose main loop stopped beating; the reaper then replaces them."""
        now = self.wall()
        for slot in self._slots:
            process = slot.process
            if process is None:
                continue
            status = read_consumer_status(self.settings.state_dir, process.pid)
            last_beat = max(status.heartbeat_at if status else 0.0, slot.started_wall)
            if not slot.murdered and now - last_beat > self.settings.heartbeat_timeout_seconds:
                self.log.error("consumer %d (pid %s) has not beaten for %.0f s: killing it",
                               slot.index, process.pid, now - last_beat,
                               extra={"slot": slot.index, "reason": "heartbeat"})
                slot.murdered = True
                self.kill(process)

    def replace_consumers(self, settings: Settings) -> None:
        """SIGHUP: start a new generation with the new settings, stop the old one gracefully."""
        self.log.info("consumer pool: reloading %d consumer(s), %d after", len(self._slots),
                      settings.consumers)
        self.settings = settings
        self.resize_slots(settings.consumers)
        for slot in self._slots:
            if slot.process is not None:
                self.retire(slot.process)
                slot.process = None
            slot.respawn_at = 0.0
            slot.quick_crashes = 0

    def retire(self, process: Process) -> None:
        self.terminate(process)
        kill_at = self.clock() + consumer_kill_deadline(self.settings)
        self._retiring.append(_Retiring(process, kill_at))

    def stop_consumers(self) -> None:
        """TERM every consumer, wait up to the deadline, then KILL the stragglers."""
        for slot in self._slots:
            if slot.process is not None:
                self.retire(slot.process)
                slot.process = None
        while self._retiring:
            self.reap_consumers()
            self._wait_for_deaths(0.1)
        metrics.CONSUMERS_ALIVE.set(0)
        self.log.info("consumer pool stopped")

    def publish(self) -> None:
        slots = [
            PoolSlot(slot=s.index, pid=s.process.pid if s.process else 0,
                     restarts=s.restarts, started_at=s.started_wall)
            for s in self._slots
        ]
        if slots != self._published:  # every tick would otherwise rewrite an unchanged file
            write_pool(self.settings.state_dir, slots)
            self._published = slots
        metrics.CONSUMERS_ALIVE.set(sum(1 for s in self._slots if s.process is not None))
        metrics.CONSUMERS_CONFIGURED.set(len(self._slots))

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def terminate(process: Process) -> None:
        process.signal(signal.SIGTERM)

    @staticmethod
    def kill(process: Process) -> None:
        process.signal(signal.SIGKILL)

    def _forget(self, process: Process) -> bool:
        """Clean up after a dead consumer; True if it exited cleanly (said so in its status)."""
        pid = process.pid
        status = read_consumer_status(self.settings.state_dir, pid)
        process.close()
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        remove_consumer_status(self.settings.state_dir, pid)
        return status is not None and status.state is ConsumerState.STOPPED

    def _wait_for_deaths(self, timeout: float) -> None:
        watched = [s.process for s in self._slots if s.process and not s.process.is_dead()]
        watched += [r.process for r in self._retiring if not r.process.is_dead()]
        if watched:
            self.wait_for_any_death(watched, timeout)
        else:
            self._stop.wait(timeout)
