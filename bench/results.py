"""What one benchmark run measured: plain data, written to JSON and rendered by bench.report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.measure import Percentiles
from bench.profile import ProfileSummary
from bench.workload import Correctness


@dataclass(frozen=True)
class DrainResult:
    """One contender draining the pre-filled queue."""

    contender: str  # "A", "B", "C", "D" or "sweep"
    label: str
    config: dict[str, str]
    messages: int
    startup_seconds: float  # launch until the first message is taken
    drain_seconds: float  # first message taken until drained and every object listed
    cpu_seconds: float  # consumer processes, over the drain
    peak_rss_mb: list[float]  # per consumer process
    correctness: Correctness
    started_at: float = 0.0  # monotonic, to cut probes to the drain
    finished_at: float = 0.0

    @property
    def throughput(self) -> float:
        return self.messages / self.drain_seconds if self.drain_seconds > 0 else math.nan

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_seconds / self.messages

    @property
    def processes(self) -> int:
        return len(self.peak_rss_mb)


@dataclass(frozen=True)
class LatencyResult:
    offered_rate: float  # messages/s actually sent
    latency: Percentiles  # send -> object visible
    resolution_ms: float  # median time between two HEADs of one key
    lost: int  # sent, never seen


@dataclass(frozen=True)
class Results:
    runs: dict[str, DrainResult]  # "A" .. "D"
    sweep: list[DrainResult]
    latency: LatencyResult
    health: Percentiles  # /health during C's drain
    profiles: dict[str, ProfileSummary] = field(default_factory=dict)  # "B", "C"
    machine: dict[str, str] = field(default_factory=dict)
    command: str = ""
    books: int = 0
    groups: int = 0
    updates: int = 0
    wall_seconds: float = 0.0
    note: str = ""

    def ratio(self, name: str, to: str) -> float:
        return self.runs[name].throughput / self.runs[to].throughput
