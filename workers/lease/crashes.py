"""Messages that crash their consumer: how often each was in processing when its consumer died,
and the gate that makes that count name the message that caused the death.

Without this, a message that kills its consumer every time (a segfault in a parser, memory
exhausted by one body) would be received, crash a consumer, be handed back, and so on until SQS
moves it after `maxReceiveCount` receives, blocking its group all that time. The consumer that
hands back a dead one's messages records the ids it was processing here
(`workers.lease.handback`); any consumer of the instance that receives a message recorded
`CRASH_DEAD_LETTER_AFTER` times dead-letters it at once, reason `crashed_consumer`, and the rest
of its group goes on.

The blame is precise, so that a valid book is never dead-lettered for another's crashes:
- A death names every message in processing at the time: the one that caused it, and
  bystanders (other groups on the other processing threads). Nothing tells them apart after
  the fact, so the first death counts for each of them. From then on each is a suspect and is
  processed alone (`ProcessingGate`): no other message of its consumer is in processing while
  it is, so a death during it is its own. A bystander is then stored, alone, and never counted
  again; the message that kills reaches the limit by its own deaths. A hand-back brings the
  same groups back together, which is why counting every death for everyone in flight blamed
  the same bystanders again and again.
- Deaths the pool decides are not the messages' doing and are not counted: a consumer killed
  for a missed heartbeat (its main loop stopped beating: a hung call, a starved machine; the
  processing threads do not beat) or at its stop deadline (`workers.lease.files.absolve`). Nor
  is a stop: a consumer stopping on purpose clears its processing slots itself.
- Counts expire (`CRASH_TTL_SECONDS` after the last crash recorded for the message), so deaths
  far apart and unrelated (the kernel's OOM killer choosing us for a neighbour's memory) never
  add up to a dead-letter.

The count is per instance: it lives in `<state dir>/recovery/crash-counts.json`, which survives a
restart of the instance but is not shared with other instances (a message crashing consumers on
several pods is counted on each). Several consumers may hand back at once, so updates take an
exclusive `flock` and replace the file atomically; readers need no lock and reload only when the
file changed (one `stat` per received batch).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from workers.status import write_atomically

REGISTRY_FILE = "crash-counts.json"
# Earlier versions kept a bare count per id here, without its time. Not read: those counts may
# name bystanders, and a version rolled back to would crash on the new format, so each version
# keeps its own file. Removed at the first crash recorded.
LEGACY_REGISTRY_FILE = "crashes.json"
_LOCK_FILE = "crashes.lock"
# Ids kept at most, oldest recorded first out: the file stays small enough to reload per batch.
MAX_ENTRIES = 1000
# A message's count is forgotten this long after its last crash. A message that kills its
# consumer does so again within minutes: each death is handed back at once, by a replacement
# started within 0 to 60 s (the pool's back-off for quick crashes) that first waits out the dead
# consumer's long poll (at most WAIT_TIME_SECONDS + 1 s); a hand-back that fails costs the
# receive lease (VISIBILITY_LEASE_SECONDS, 15 s); the message is then among the oldest of the
# queue. An hour is more than ten times that worst case with the defaults, and short enough
# that two deaths that merely happened while the same message was in processing, an hour
# apart, never add up.
CRASH_TTL_SECONDS = 3600.0


@dataclass(frozen=True)
class _Entry:
    count: int
    recorded_at: float  # wall clock of the last crash recorded


class CrashRegistry:
    def __init__(self, directory: Path, dead_letter_after: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = directory / REGISTRY_FILE
        self._legacy_path = directory / LEGACY_REGISTRY_FILE
        self._lock_path = directory / _LOCK_FILE
        self.dead_letter_after = dead_letter_after
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._seen: tuple[int, int, int] | None = None

    def record(self, message_ids: Sequence[str]) -> dict[str, int]:
        """Count one more crash for each message; return their new counts."""
        with self._locked():
            now = self._clock()
            entries = {m: e for m, e in self._load().items() if not self._expired(e, now)}
            for message_id in message_ids:
                # Re-inserted, so that the ids recorded last are the last to be dropped.
                previous = entries.pop(message_id, None)
                entries[message_id] = _Entry((previous.count if previous else 0) + 1, now)
            while len(entries) > MAX_ENTRIES:
                del entries[next(iter(entries))]
            write_atomically(self.path, {m: [e.count, e.recorded_at]
                                         for m, e in entries.items()})
            self._legacy_path.unlink(missing_ok=True)
            seen = self._stat()
        # What we wrote is what we hold: the next `refresh` need not read it back.
        self._entries, self._seen = entries, seen
        return {m: entries[m].count for m in message_ids}

    def refresh(self) -> None:
        """Reload if the file changed since we last read it (it is replaced, never edited)."""
        seen = self._stat()
        if seen is None:
            self._entries, self._seen = {}, None
        elif seen != self._seen:
            self._entries = self._load()
            self._seen = seen

    def crashes(self, message_id: str) -> int:
        """Crashes recorded for the message as of the last refresh (or record), unless expired."""
        entry = self._entries.get(message_id)
        if entry is None or self._expired(entry, self._clock()):
            return 0
        return entry.count

    @staticmethod
    def _expired(entry: _Entry, now: float) -> bool:
        return now - entry.recorded_at > CRASH_TTL_SECONDS

    def _stat(self) -> tuple[int, int, int] | None:
        """What tells one version of the file from the next (it is replaced, never edited)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, _Entry]:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): _Entry(int(count), float(at)) for k, (count, at) in raw.items()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


class ProcessingGate:
    """A readers-writer gate around processing one message, per consumer: ordinary messages
    share it, a suspect (a message with a recorded crash) takes it alone. A suspect waits for the
    messages in processing to finish and holds new ones back meanwhile (so a stream of ordinary
    messages cannot starve it); suspects go one at a time.

    What it costs an ordinary message: a lock taken twice, contended only by its consumer's own
    threads (`python -m bench.recovery_cost` measures it), next to about 1 ms of CPU per book.
    What it costs a suspect: its consumer's other threads wait while it is processed, which is
    rare (a message in processing at a death) and short (one message).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sharing = 0  # ordinary messages in processing
        self._alone = False  # a suspect in processing
        self._waiting = 0  # suspects waiting for their turn
        self._held_back = 0  # ordinary messages waiting for a suspect's turn to end
        self._shared_turn = _SharedTurn(self)
        self._alone_turn = _AloneTurn(self)

    @property
    def waiting(self) -> int:
        """Messages waiting for their turn, suspects or not."""
        return self._waiting + self._held_back

    def shared(self) -> contextlib.AbstractContextManager[None]:
        """The turn of an ordinary message, with the others."""
        return self._shared_turn

    def alone(self) -> contextlib.AbstractContextManager[None]:
        """The turn of a suspect, alone."""
        return self._alone_turn

    def _enter_shared(self) -> None:
        with self._lock:
            if self._alone or self._waiting:
                self._held_back += 1
                try:
                    while self._alone or self._waiting:
                        self._changed.wait()
                finally:
                    self._held_back -= 1
            self._sharing += 1

    def _leave_shared(self) -> None:
        with self._lock:
            self._sharing -= 1
            if self._waiting and not self._sharing:
                self._changed.notify_all()

    def _enter_alone(self) -> None:
        with self._lock:
            self._waiting += 1
            try:
                while self._alone or self._sharing:
                    self._changed.wait()
            finally:
                self._waiting -= 1
            self._alone = True

    def _leave_alone(self) -> None:
        with self._lock:
            self._alone = False
            self._changed.notify_all()


# Context managers as classes, not generators: an ordinary message pays for every call.
class _SharedTurn(contextlib.AbstractContextManager[None]):
    def __init__(self, gate: ProcessingGate) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        self._gate._enter_shared()

    def __exit__(self, *exc: object) -> None:
        self._gate._leave_shared()


class _AloneTurn(contextlib.AbstractContextManager[None]):
    def __init__(self, gate: ProcessingGate) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        self._gate._enter_alone()

    def __exit__(self, *exc: object) -> None:
        self._gate._leave_alone()
