"""Where a consumer's CPU goes: py-spy attached to running processes, summarised.

`Profiler` attaches one `py-spy record --format raw --nonblocking` per process and stops them with
SIGINT (py-spy then writes its file). py-spy leaves out idle threads (blocked in a socket read,
a lock, a sleep), so a sample is a moment a thread was on the CPU or runnable: the shares are
shares of CPU time, not of wall time.

`summarize` folds the stacks three ways: by library of the innermost frame (self time), by
function (self time), and by function of the project's own code (inclusive: a function counts
once per sample that has it anywhere on the stack). A run with the profiler attached is slower
(py-spy reads the processes' memory 100 times a second on the same cores): its throughput is
never reported, only its shares.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100
TOP = 12
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
_OWN_CODE = ("workers/", "service/", "bench/")


def py_spy() -> str | None:
    """The py-spy executable of this venv, or one on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass(frozen=True)
class Share:
    name: str
    percent: float


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    by_library: list[Share]
    self_by_function: list[Share]
    own_code_inclusive: list[Share]
    aws_calls_percent: float  # inside botocore's BaseClient._make_api_call


def _split(frame: str) -> tuple[str, str]:
    """(function, path) of a py-spy frame 'function (path:line)'."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["path"]


def _short(path: str) -> str:
    """A path from the package or stdlib root on: site-packages/botocore/x.py -> botocore/x.py."""
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker.startswith("/lib") and "/" in rest else rest
    for own in _OWN_CODE:
        if own in path:
            return own + path.split(own, 1)[1]
    return path


def library(path: str) -> str:
    """The package a frame belongs to: botocore, urllib3, stdlib:http, workers, ..."""
    short = _short(path)
    top = short.split("/", 1)[0].removesuffix(".py")
    if "site-packages/" in path:
        return top
    if "/lib/python3" in path:
        return f"stdlib:{top}"
    return top or "?"


def summarize(stacks: Counter[tuple[str, ...]]) -> ProfileSummary:
    samples = sum(stacks.values())
    by_library: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    aws_calls = 0
    for frames, count in stacks.items():
        parsed = [_split(frame) for frame in frames]
        function, path = parsed[-1]
        by_library[library(path)] += count
        self_time[f"{function} ({_short(path)})"] += count
        own = {f"{fn} ({_short(p)})" for fn, p in parsed if any(o in p for o in _OWN_CODE)}
        for name in own:
            inclusive[name] += count
        if any(fn == "_make_api_call" and "botocore/client.py" in p for fn, p in parsed):
            aws_calls += count

    def top(counter: Counter[str]) -> list[Share]:
        return [Share(name, 100 * n / samples) for name, n in counter.most_common(TOP)]

    return ProfileSummary(samples, top(by_library), top(self_time), top(inclusive),
                          100 * aws_calls / samples if samples else 0.0)


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

    def begin(self, pids: list[int]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = self.out_dir / f"{self.name}-{pid}.txt"
            spy = subprocess.Popen(
                [self.executable, "record", "--pid", str(pid), "--rate", str(RATE),
                 "--format", "raw", "--nonblocking", "--output", str(out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._spies.append((spy, out))

    def end(self) -> None:
        for spy, _ in self._spies:
            spy.send_signal(signal.SIGINT)
        for spy, _ in self._spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        self.summary = summarize(load_raw(out for _, out in self._spies))
