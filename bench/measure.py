"""What the benchmark measures, always from outside the contender.

- CPU: utime + stime of the contender's consumer processes from /proc/<pid>/stat (all threads),
  read when the first message leaves the queue and again when the queue is drained; the
  difference is the CPU the drain cost, start-up excluded.
- Where the machine's CPU went during a drain: busy time of all cores from /proc/stat, and
  within it the emulator (LocalStack's process group) and the contender's other processes
  (Shelver's gunicorn master and HTTP workers); what is left is this harness and anything else
  running on the machine.
- Memory: VmHWM (peak resident set) from /proc/<pid>/status, read when drained.
- Drain: the queue's approximate counts, polled every `DRAIN_POLL_SECONDS`. The clock starts at
  the first poll that sees a message taken (visible below the total, or any in flight) and stops
  at the first poll that sees the queue empty, nothing in flight, and every object listed.
- Latency: `VisibilityPoller` HEADs every outstanding key with plain HTTP (keep-alive, unsigned:
  a boto3 HEAD costs about as much client CPU as the put it watches for).
- `/health`: `HealthProbe` GETs it on a new connection every `HEALTH_PROBE_SECONDS`, as a
  readiness probe would.
"""

from __future__ import annotations

import http.client
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import quote

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DRAIN_POLL_SECONDS = 0.1
HEALTH_PROBE_SECONDS = 0.05
VISIBILITY_POLL_SECONDS = 0.01


class BenchError(RuntimeError):
    """A contender did not start, did not drain, or the emulator misbehaved."""


def _stat(pid: int, tid: int | None = None) -> list[str]:
    """Fields of /proc/<pid>/stat (or of its thread `tid`) after "pid (comm)": [0] is field 3
    of proc(5), the state."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        return Path(path).read_text().rpartition(")")[2].split()
    except OSError:
        return []


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (every thread), or of one of its threads; 0 if it is gone."""
    fields = _stat(pid, tid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (LocalStack runs in its own)."""
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and (fields := _stat(int(entry))) and int(fields[2]) == pgid]


def machine_busy_seconds() -> float:
    """CPU time all cores spent on anything but idle and iowait since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far, of the machine and per process of interest."""

    machine: float
    processes: dict[int, float]

    @classmethod
    def take(cls, pids: Sequence[int]) -> CpuSnapshot:
        return cls(machine_busy_seconds(), {pid: cpu_seconds(pid) for pid in pids})

    def since(self, earlier: CpuSnapshot, pids: Sequence[int]) -> float:
        """CPU of `pids` between `earlier` and this snapshot (a pid new since counts whole)."""
        return sum(self.processes.get(pid, 0.0) - earlier.processes.get(pid, 0.0)
                   for pid in pids)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process in MiB, 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    """Poll until predicate() holds; return the monotonic time of the poll that saw it."""
    deadline = time.monotonic() + timeout
    while True:
        seen_at = time.monotonic()
        if predicate():
            return seen_at
        if seen_at > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(max(0.0, interval - (time.monotonic() - seen_at)))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Percentiles:
        return cls(len(seconds), percentile(seconds, 50) * 1000, percentile(seconds, 99) * 1000,
                   max(seconds, default=math.nan) * 1000)


@dataclass
class Background:
    """Runs `_run` in a daemon thread from `start` until `stop`."""

    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class HealthProbe(Background):
    """GETs `url` every HEALTH_PROBE_SECONDS; keeps (start, seconds, status) of each request."""

    url: str
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    answer.read()
                    status = answer.status
            except urllib.error.HTTPError as error:  # 503 while a consumer has not polled yet
                error.read()
                status = error.code
            except OSError:
                status = 0
            elapsed = time.monotonic() - started
            self.samples.append((started, elapsed, status))
            self._stop.wait(max(0.0, HEALTH_PROBE_SECONDS - elapsed))

    def between(self, start: float, end: float) -> Percentiles:
        return Percentiles.of([s for t, s, status in self.samples
                               if start <= t <= end and status])


@dataclass
class VisibilityPoller(Background):
    """Finds when objects appear: HEADs every outstanding key every VISIBILITY_POLL_SECONDS.

    An object is taken as visible at the start of the first HEAD that finds it; the previous HEAD
    of the same key, at most one poll round earlier, did not. `gaps` keeps those round lengths:
    the measurement's resolution."""

    host: str
    port: int
    expected: dict[tuple[str, str], float] = field(default_factory=dict)  # (bucket, key) -> sent
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    gaps: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def expect(self, bucket: str, key: str, sent_at: float) -> None:
        with self._lock:
            self.expected[(bucket, key)] = sent_at

    def outstanding(self) -> int:
        with self._lock:
            return len(self.expected) - len(self.seen)

    def latencies(self) -> list[float]:
        return [self.seen[k] - sent for k, sent in self.expected.items() if k in self.seen]

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        last_round = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                pending = [k for k in self.expected if k not in self.seen]
            for bucket, key in pending:
                started = time.monotonic()
                if self._exists(connection, bucket, key):
                    with self._lock:
                        self.seen[(bucket, key)] = started
            now = time.monotonic()
            if pending:
                self.gaps.append(now - last_round)
            last_round = now
            self._stop.wait(max(0.0, VISIBILITY_POLL_SECONDS - (time.monotonic() - now)))
        connection.close()

    @staticmethod
    def _exists(connection: http.client.HTTPConnection, bucket: str, key: str) -> bool:
        connection.request("HEAD", f"/{bucket}/{quote(key)}")
        response = connection.getresponse()
        response.read()
        return response.status == 200
