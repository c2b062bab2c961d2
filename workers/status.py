"""Status files: how consumers and the pool tell the HTTP workers how they are doing.

Each file has exactly one writer and is replaced atomically, so readers never see half a file and
never take a lock: `pool.json` is written by the pool (in the gunicorn master) and names the current
consumer of every slot; `consumer-<pid>.json` is written by that consumer. `/health` and `/` read
them without touching AWS, and the pool reads the consumers' heartbeats from them.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

POOL_FILE = "pool.json"


class ConsumerState(enum.StrEnum):
    """What a consumer is doing, as its status file and /health say it."""

    STARTING = "starting"  # spawned, looking its queue up, handing back its predecessors'
    POLLING = "polling"  # in a receive call, nothing in processing
    PROCESSING = "processing"  # receiving again while batches are in processing
    IDLE = "idle"  # the pause between polls after an empty receive (POLL_INTERVAL_SECONDS)
    BACKOFF = "backoff"  # waiting after a failed receive or queue lookup, or a breaker pause
    STOPPED = "stopped"  # exited on purpose: the pool counts its end as "exited", not "died"
    # /health's own, for a slot the consumer's status file cannot speak for:
    RESTARTING = "restarting"  # no consumer in the slot (the pool is replacing it)
    UNRESPONSIVE = "unresponsive"  # its process is gone or has not beaten for too long


# The state in which a wake-up makes a consumer poll at once: its pause between polls. A backoff
# is not cut short (workers/consumer/signals.py).
WAKEABLE_STATES = frozenset({ConsumerState.IDLE})


@dataclass(frozen=True)
class ConsumerStatus:
    slot: int
    pid: int
    state: ConsumerState
    restarts: int
    started_at: float
    heartbeat_at: float
    last_poll_at: float | None = None
    # When its first receive call began: until a receive completes, /health counts that call,
    # in flight, as its poll (on an idle queue the first long poll lasts WAIT_TIME_SECONDS).
    first_receive_at: float | None = None
    last_error: str | None = None
    # Why the last batch failed as a whole (e.g. "SlowDown" while S3 is down), and when; None
    # once a batch made progress. Receives still succeed then, so the poll age cannot tell.
    failing: str | None = None
    failing_at: float | None = None


@dataclass(frozen=True)
class PoolSlot:
    slot: int
    pid: int
    restarts: int
    started_at: float


def consumer_file(state_dir: str | Path, pid: int) -> Path:
    return Path(state_dir) / f"consumer-{pid}.json"


def write_atomically(path: Path, payload: object) -> None:
    # A per-writer temporary name, then rename: readers see the old or the new file, never a mix.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(orjson.dumps(payload))
    os.replace(tmp, path)


def write_consumer_status(state_dir: str | Path, status: ConsumerStatus) -> None:
    write_atomically(consumer_file(state_dir, status.pid), dataclasses.asdict(status))


def read_consumer_status(state_dir: str | Path, pid: int) -> ConsumerStatus | None:
    try:
        raw = orjson.loads(consumer_file(state_dir, pid).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return ConsumerStatus(**{**raw, "state": ConsumerState(raw["state"])})


class StatusWriter:
    """A consumer's status file, written by its threads through this one object."""

    def __init__(self, state_dir: str | Path, status: ConsumerStatus) -> None:
        self._state_dir = state_dir
        self._status = status
        self._lock = threading.Lock()

    @property
    def state(self) -> ConsumerState:
        return self._status.state

    def update(self, **changes: object) -> None:
        with self._lock:
            self._status = dataclasses.replace(self._status, **changes)  # type: ignore[arg-type]
            write_consumer_status(self._state_dir, self._status)

    def receiving(self, state: ConsumerState) -> None:
        """A receive call begins; the first is recorded (one write in a consumer's life)."""
        if self._status.first_receive_at is None:
            now = time.time()
            self.update(state=state, heartbeat_at=now, first_receive_at=now)
        else:
            self.beat(state)

    def beat(self, state: ConsumerState | None = None) -> None:
        """The heartbeat the pool watches, and the state, if it changed."""
        now = time.time()
        if state in (None, self._status.state) and now - self._status.heartbeat_at < 0.5:
            return  # the pool reads heartbeats in seconds: no need to rewrite the file
        changes: dict[str, object] = {"heartbeat_at": now}
        if state is not None:
            changes["state"] = state
        self.update(**changes)

    def failing(self, reason: str | None) -> None:
        """Why whole batches fail (S3 down, say), or None once they make progress: /health
        reads it, as receives still succeed meanwhile and the poll age alone cannot tell."""
        self.update(failing=reason, failing_at=None if reason is None else time.time())


def remove_consumer_status(state_dir: str | Path, pid: int) -> None:
    consumer_file(state_dir, pid).unlink(missing_ok=True)


def write_pool(state_dir: str | Path, slots: list[PoolSlot]) -> None:
    write_atomically(Path(state_dir) / POOL_FILE, [dataclasses.asdict(s) for s in slots])


def read_pool(state_dir: str | Path) -> list[PoolSlot]:
    try:
        raw = orjson.loads((Path(state_dir) / POOL_FILE).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []
    return [PoolSlot(**item) for item in raw]
