"""What a consumer holds, kept in the state dir for whoever comes after it.

A consumer that dies (SIGKILL, out of memory, a segfault, killed for a missed heartbeat) cannot
hand back what it holds: those messages would stay invisible for the queue's visibility timeout,
and their groups blocked with them. So each consumer keeps two files in `<state dir>/recovery/`
(which survives a restart of the instance, see gunicorn.conf.py), and its successor hands the
messages back (`workers.lease.handback`):

- `held-<token>.json`: the messages it holds (received, not settled yet) in
  receive order, each with its group, receipt handle and `visible_until`, the wall-clock time
  until which SQS keeps it invisible at least. Rewritten whole at each receive, settle and
  visibility extension (a few times per batch), in place: one `pwrite` of a header (CRC-32 and
  length of the JSON) and the JSON. A process killed in the middle of that write leaves a file
  whose checksum fails, read as unusable (its messages then wait out their visibility timeout),
  never as a mix of two states. A new file and a rename would be atomic too, but on ext4 a
  rename over an existing file forces its data to disk (auto_da_alloc): 0.5 ms against 6 us.
  No fsync: a process that dies loses nothing it wrote, and the machine's death takes the tmpfs
  (or the pod) with it.
- `processing-<token>`: fixed-size slots written in place (one `pwrite` each, no allocation): one
  per processing thread, holding the id of the message it is processing or zeros, written at a
  message's start and end, so the recovery knows which message was in processing when the
  consumer died (`workers.lease.crashes`); and a first slot saying until when a receive call of the
  consumer may still be answered. SQS answers a long poll whose client died all the same, and
  the messages of that answer stay invisible for their visibility timeout: a message handed
  back before the dead consumer's last long poll ended could be swallowed by it. A death the
  messages did not cause is absolved: its processing slots are blanked (`absolve`,
  `ProcessingSlots.absolve`), or the file removed for a stop (`ConsumerRecord.close`), so that it
  counts for none of them.

Files are named by a token the pool gives each consumer, not by pid: pids start again at 1 in the
new pid namespace of a restarted container, and a new consumer could be given a dead one's pid.
A consumer holds an exclusive `flock` on its held file for as long as it lives (the kernel drops
it when the process dies, however it dies): `owner_alive` tells a dead consumer's files from a
live one's without trusting pids or the pool's bookkeeping, so nothing can hand back messages a
live consumer holds, not even an instance started by mistake on the same state dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from workers.aws.sqs import Message

RECOVERY_DIR = "recovery"
_HELD = "held-"
_HELD_SUFFIX = ".json"
_PROCESSING = "processing-"
# SQS message ids are UUIDs (36 characters); a slot has room to spare.
SLOT_BYTES = 128
_BLANK = bytes(SLOT_BYTES)


def recovery_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / RECOVERY_DIR


def held_path(directory: Path, token: str) -> Path:
    return directory / f"{_HELD}{token}{_HELD_SUFFIX}"


def processing_path(directory: Path, token: str) -> Path:
    return directory / f"{_PROCESSING}{token}"


def tokens(directory: Path) -> set[str]:
    """Every consumer token with a file in the directory, live or dead."""
    found: set[str] = set()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        if name.startswith(_HELD) and name.endswith(_HELD_SUFFIX):
            found.add(name[len(_HELD):-len(_HELD_SUFFIX)])
        elif name.startswith(_PROCESSING):
            found.add(name[len(_PROCESSING):])
    return found


@dataclass(frozen=True)
class HeldEntry:
    message_id: str
    group_id: str
    receipt_handle: str
    visible_until: float  # wall clock


@dataclass(frozen=True)
class HeldRecord:
    queue_url: str
    entries: list[HeldEntry]


class TornFile(ValueError):
    """The writer was killed while writing the file: its content cannot be trusted."""


# "<crc32 of the JSON, 8 hex digits> <length of the JSON, 10 digits>\n", then the JSON.
_HEADER_BYTES = 20


class HeldFile:
    """The held-file writer of one consumer."""

    def __init__(self, directory: Path, token: str, queue_url: str) -> None:
        self.path = held_path(directory, token)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until the process ends
        self._size = 0
        self._queue_url = queue_url
        self.empty = True

    def write(self, held: Iterable[tuple[Message, float]]) -> None:
        """Replace the content with these (message, visible_until) pairs, in receive order."""
        rows = [(m.message_id, m.group_id, m.receipt_handle, until) for m, until in held]
        payload = orjson.dumps({"queue": self._queue_url, "held": rows})
        data = b"%08x %010d\n" % (zlib.crc32(payload), len(payload)) + payload
        os.pwrite(self._fd, data, 0)
        if len(data) < self._size:
            # Tidiness only: the header's length already tells where the content ends.
            os.ftruncate(self._fd, len(data))
        self._size = len(data)
        self.empty = not rows


def owner_alive(directory: Path, token: str) -> bool:
    """True while the consumer that wrote this held file lives (it holds the file's lock)."""
    try:
        fd = os.open(held_path(directory, token), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases our lock, if we got it
    return False


def read_held(path: Path) -> HeldRecord:
    """FileNotFoundError if there is none, TornFile if its writer died while writing it."""
    data = path.read_bytes()
    try:
        crc, length = int(data[:8], 16), int(data[9:_HEADER_BYTES - 1])
    except ValueError:
        raise TornFile(f"{path}: no header") from None
    payload = data[_HEADER_BYTES:_HEADER_BYTES + length]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise TornFile(f"{path}: checksum mismatch")
    raw = orjson.loads(payload)
    return HeldRecord(raw["queue"], [HeldEntry(*row) for row in raw["held"]])


class ProcessingSlots:
    """What a consumer is doing, in slots written in place: slot 0 its receive call, then one
    slot per processing thread. A thread takes the next free slot on its first message; the
    file grows if more threads come than it was made for."""

    def __init__(self, directory: Path, token: str, threads: int,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = processing_path(directory, token)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(self._fd, _BLANK * (1 + threads), 0)
        self._wall = wall
        self._local = threading.local()
        self._next = 1
        self._lock = threading.Lock()
        self._absolved = False

    def _write(self, text: str, offset: int) -> None:
        os.pwrite(self._fd, text.encode()[:SLOT_BYTES].ljust(SLOT_BYTES, b"\0"), offset)

    def _offset(self) -> int:
        offset: int | None = getattr(self._local, "offset", None)
        if offset is None:
            with self._lock:
                offset = self._next * SLOT_BYTES
                self._next += 1
            self._local.offset = offset
        return offset

    def begin(self, message_id: str) -> None:
        offset = self._offset()
        with self._lock:  # never after `absolve`
            if not self._absolved:
                self._write(message_id, offset)

    def end(self) -> None:
        os.pwrite(self._fd, _BLANK, self._offset())

    @contextlib.contextmanager
    def receiving(self, wait_seconds: float) -> Iterator[None]:
        """Mark a receive call with a long poll of `wait_seconds` in progress. A call abandoned
        at a stop (a BaseException) stays marked: SQS may still answer it."""
        self._write(f"{self._wall() + wait_seconds:.3f}", 0)
        try:
            yield
        except Exception:
            os.pwrite(self._fd, _BLANK, 0)
            raise
        os.pwrite(self._fd, _BLANK, 0)

    def absolve(self) -> None:
        """Blank every processing slot, for good: the process is about to die of an internal
        error (`workers.consumer.internal_errors`), which is no message's fault, so the
        recovery must count no crash against any (as `absolve` does for a dead consumer)."""
        with self._lock:
            self._absolved = True
            _blank_processing_slots(self._fd)

    def remove(self) -> None:
        """No message of ours counts as crashed: we stop on purpose. The descriptor stays open,
        so a thread finishing a message meanwhile writes into the unlinked file, harmlessly."""
        self.path.unlink(missing_ok=True)


def absolve(directory: Path, token: str) -> None:
    """What this dead consumer was processing does not count as crashed: the pool decided its
    death (a kill for a missed heartbeat, or at its stop deadline), not its messages. Only for a
    consumer known dead: a live one would write its slots again (`ProcessingSlots.absolve` is a
    live consumer's own)."""
    try:
        fd = os.open(processing_path(directory, token), os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        _blank_processing_slots(fd)
    finally:
        os.close(fd)


def _blank_processing_slots(fd: int) -> None:
    """Blank a processing file's slots in place, and keep its receive slot: SQS may still answer
    a receive call in progress, and the successor must wait it out before handing back."""
    size = os.fstat(fd).st_size
    if size > SLOT_BYTES:
        os.pwrite(fd, bytes(size - SLOT_BYTES), SLOT_BYTES)


@dataclass(frozen=True)
class Activity:
    """What a processing file says: until when SQS may answer a receive call (wall clock; None:
    no call in progress), and the messages in processing."""

    receive_until: float | None = None
    in_processing: list[str] = field(default_factory=list)


def read_processing(path: Path) -> Activity:
    """An empty `Activity` if there is no file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Activity()
    slots = [data[start:start + SLOT_BYTES].rstrip(b"\0").decode(errors="replace")
             for start in range(0, len(data), SLOT_BYTES)]
    receive = slots[0] if slots else ""
    return Activity(float(receive) if receive else None, [s for s in slots[1:] if s])


class ConsumerRecord:
    """Both files of one consumer."""

    def __init__(self, directory: Path, token: str, queue_url: str, threads: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.held = HeldFile(directory, token, queue_url)
        self.held.write([])
        self.processing = ProcessingSlots(directory, token, threads)

    def close(self) -> None:
        """The consumer stops on purpose (a stop, a deploy, orphaned): nothing counts as a
        crash; the held file stays only if it still lists messages (threads abandoned at the
        stop deadline), for the next consumer to hand back."""
        self.processing.remove()
        if self.held.empty:
            self.held.path.unlink(missing_ok=True)
