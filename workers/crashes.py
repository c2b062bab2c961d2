"""Messages that crash their consumer: how often each was in processing when its consumer died.

Without this, a message that kills its consumer every time (a segfault in a parser, memory
exhausted by one body) would be received, crash a consumer, be handed back, and so on until SQS
moves it after `maxReceiveCount` receives, blocking its group all that time. The consumer that
recovers a dead one's messages records the ids it was processing here (`workers.recovery`); any
consumer of the instance that receives a message recorded `CRASH_DEAD_LETTER_AFTER` times
dead-letters it at once, reason `crashed_consumer`, and the rest of its group goes on.

The count is per instance: it lives in `<state dir>/recovery/crashes.json`, which survives a
restart of the instance but is not shared with other instances (a message crashing consumers on
several pods is counted on each). Several consumers may recover at once, so updates take an
exclusive `flock` and replace the file atomically; readers need no lock and reload only when the
file changed (one `stat` per received batch).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from workers.status import write_atomically

REGISTRY_FILE = "crashes.json"
_LOCK_FILE = "crashes.lock"
# Ids kept at most, oldest recorded first out: a message that stops crashing is forgotten
# eventually, and the file stays small enough to reload per batch.
MAX_ENTRIES = 1000


class CrashRegistry:
    def __init__(self, directory: Path, dead_letter_after: int) -> None:
        self.path = directory / REGISTRY_FILE
        self._lock_path = directory / _LOCK_FILE
        self.dead_letter_after = dead_letter_after
        self._counts: dict[str, int] = {}
        self._seen: tuple[int, int, int] | None = None

    def record(self, message_ids: Sequence[str]) -> dict[str, int]:
        """Count one more crash for each message; return their new counts."""
        with self._locked():
            counts = self._load()
            for message_id in message_ids:
                # Re-inserted, so that the ids recorded last are the last to be dropped.
                counts[message_id] = counts.pop(message_id, 0) + 1
            while len(counts) > MAX_ENTRIES:
                del counts[next(iter(counts))]
            write_atomically(self.path, counts)
            seen = self._stat()
        # What we wrote is what we hold: the next `refresh` need not read it back.
        self._counts, self._seen = counts, seen
        return {m: counts[m] for m in message_ids}

    def refresh(self) -> None:
        """Reload if the file changed since we last read it (it is replaced, never edited)."""
        seen = self._stat()
        if seen is None:
            self._counts, self._seen = {}, None
        elif seen != self._seen:
            self._counts = self._load()
            self._seen = seen

    def crashes(self, message_id: str) -> int:
        """Crashes recorded for the message as of the last refresh (or record)."""
        return self._counts.get(message_id, 0)

    def _stat(self) -> tuple[int, int, int] | None:
        """What tells one version of the file from the next (it is replaced, never edited)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, int]:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
