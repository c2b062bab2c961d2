"""Where a consumer's CPU goes: py-spy attached to running processes, summarised.

`Profiler` attaches one `py-spy record --gil --format raw --nonblocking` per process and stops
them with SIGINT (py-spy then writes its file). `--gil` keeps only the thread holding the GIL at
each sample: in these GIL-bound processes that is the Python CPU time, while threads waiting on a
socket (most of them, most of the time) are left out, so the shares are shares of CPU, not of
wall time. Sampling a process with no thread holding the GIL records nothing.

`summarize` splits the samples into those inside an AWS call (a boto3 API call,
`BaseClient._make_api_call`, or a call of Shelver's CRT clients, `workers/aws/s3crt.py`,
`workers/aws/sqscrt.py`, `awscrt`), attributed to the project's function that made the call
(`BookStore._put`, `SqsTransport.receive`, ...), and those outside, attributed to the innermost
function of the project's own code on the stack; and it folds them by library and by function of
the innermost frame (self time). With the CPU the profiled run measured, a share becomes
milliseconds of CPU per message.

py-spy sees Python only: the CRT's C threads (its event loop, its DNS resolver), which never hold
the GIL but to call back into Python, are invisible to it. So `Profiler` also reads the CPU of
every thread of the profiled processes from /proc (`/proc/<pid>/task/<tid>/stat`, named by its
`comm`) at the start and the end: the split of all the CPU between the Python threads (what the
samples describe) and those C threads.

A run with the profiler attached is slower (py-spy reads the processes' memory on the same cores):
its throughput is never reported, only where the CPU goes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import cpu_seconds

RATE = 200
TOP = 12
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
_OWN_CODE = ("workers/", "service/", "bench/")
_API_CALL = ("._make_api_call", "botocore/client.py")
_CRT_CALL = ("workers/aws/s3crt.py", "workers/aws/sqscrt.py", "awscrt/")
# Python threads have the process's name; the CRT names its own C threads (AwsEventLoop 1, ...).
_CRT_THREADS = "Aws"


def py_spy() -> str | None:
    """The py-spy executable of this venv, or one on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass(frozen=True)
class Share:
    name: str
    percent: float  # of all samples


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    aws_calls_percent: float  # inside botocore's BaseClient._make_api_call
    aws_by_caller: list[Share]  # inside an API call, by the project's function that made it
    outside_aws: list[Share]  # outside, by the innermost function of the project's own code
    by_library: list[Share]  # innermost frame's library
    self_by_function: list[Share]  # innermost frame
    cpu_ms_per_message: float = 0.0  # of the profiled run, to turn shares into milliseconds
    # CPU seconds of the profiled processes' threads over the run, by kind (from /proc).
    thread_cpu_seconds: dict[str, float] = field(default_factory=dict)


def _split(frame: str) -> tuple[str, str]:
    """(function, path) of a py-spy frame 'function (path:line)'."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["path"]


def library(path: str) -> str:
    """The package of a frame: py-spy gives paths relative to sys.path (botocore/client.py,
    socket.py, workers/status.py), so it is the first component."""
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def _own(path: str) -> bool:
    return path.startswith(_OWN_CODE)


def _aws_call(function: str, path: str) -> bool:
    """The outermost frame of a call to AWS: boto3's, or Shelver's CRT client's."""
    return (function.endswith(_API_CALL[0]) and path == _API_CALL[1]) or \
        path.startswith(_CRT_CALL)


def thread_cpu(pids: Iterable[int]) -> dict[tuple[int, int], tuple[str, float]]:
    """{(pid, tid): (kind, CPU seconds)} of every thread of `pids` now."""
    threads: dict[tuple[int, int], tuple[str, float]] = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text()
            except OSError:
                continue  # ended meanwhile
            kind = "CRT C threads" if comm.startswith(_CRT_THREADS) else "Python threads"
            threads[(pid, tid)] = (kind, cpu_seconds(pid, tid))
    return threads


def thread_cpu_since(before: dict[tuple[int, int], tuple[str, float]],
                     after: dict[tuple[int, int], tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by kind between two `thread_cpu` readings (a thread new since counts whole;
    one gone since is lost, as its CPU is no longer readable per thread)."""
    spent: dict[str, float] = {}
    for key, (kind, seconds) in after.items():
        spent[kind] = spent.get(kind, 0.0) + seconds - before.get(key, (kind, 0.0))[1]
    return spent


def summarize(stacks: Counter[tuple[str, ...]]) -> ProfileSummary:
    samples = sum(stacks.values())
    by_library: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    aws_by_caller: Counter[str] = Counter()
    outside_aws: Counter[str] = Counter()
    for frames, count in stacks.items():
        parsed = [_split(frame) for frame in frames]
        function, path = parsed[-1]
        by_library[library(path)] += count
        self_time[f"{function} ({path})"] += count
        call = next((i for i, (fn, p) in enumerate(parsed) if _aws_call(fn, p)), None)
        own = [f"{fn} ({p})" for fn, p in parsed[:call] if _own(p)]
        if call is not None:
            # A CRT callback runs on the CRT's event-loop thread, called by no project code.
            aws_by_caller[own[-1] if own else "(no caller: the CRT's callbacks)"] += count
        else:
            outside_aws[own[-1] if own else "(no frame of the project: threads, imports)"] += count

    def top(counter: Counter[str], most: int | None = TOP) -> list[Share]:
        return [Share(name, 100 * n / samples) for name, n in counter.most_common(most)]

    return ProfileSummary(samples, 100 * sum(aws_by_caller.values()) / samples if samples else 0,
                          top(aws_by_caller, None), top(outside_aws), top(by_library),
                          top(self_time))


def load_raw(paths: Iterable[Path]) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) format: 'frame;frame;... count' per line, outermost first."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";"))] += int(count)
    return stacks


@dataclass
class Profiler:
    """py-spy on every pid given to `begin`; `end` stops them and keeps the summary."""

    out_dir: Path
    name: str
    executable: str
    summary: ProfileSummary | None = None
    _spies: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    _pids: list[int] = field(default_factory=list)
    _threads: dict[tuple[int, int], tuple[str, float]] = field(default_factory=dict)

    def begin(self, pids: list[int]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._pids, self._threads = list(pids), thread_cpu(pids)
        for pid in pids:
            out = self.out_dir / f"{self.name}-{pid}.txt"
            spy = subprocess.Popen(
                [self.executable, "record", "--pid", str(pid), "--rate", str(RATE), "--gil",
                 "--format", "raw", "--nonblocking", "--output", str(out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._spies.append((spy, out))

    def end(self) -> None:
        threads = thread_cpu_since(self._threads, thread_cpu(self._pids))
        for spy, _ in self._spies:
            spy.send_signal(signal.SIGINT)
        for spy, _ in self._spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        self.summary = dataclasses.replace(summarize(load_raw(out for _, out in self._spies)),
                                           thread_cpu_seconds=threads)
