"""What one benchmark run measured: plain data, written to JSON and rendered by bench.report."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from bench.awslike import Latencies
from bench.bill import Bill
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
    support_cpu_seconds: float = 0.0  # the contender's other processes (Shelver's gunicorn)
    emulator_cpu_seconds: float = 0.0  # LocalStack
    machine_cpu_seconds: float = 0.0  # every core's busy time, whoever used it
    started_at: float = 0.0  # monotonic, to cut probes to the drain
    finished_at: float = 0.0
    # Billed requests by operation, from launch to drained, when counted (bench.bill).
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.messages / self.drain_seconds if self.drain_seconds > 0 else math.nan

    @property
    def cpu_per_1000(self) -> float:
        return self.per_1000(self.cpu_seconds)

    def per_1000(self, seconds: float) -> float:
        return 1000 * seconds / self.messages

    @property
    def per_core(self) -> float:
        """Books a second one core of consumer CPU files at this CPU per book."""
        return self.messages / self.cpu_seconds if self.cpu_seconds > 0 else math.nan

    @property
    def bill(self) -> Bill | None:
        return Bill(self.requests, self.messages) if self.requests else None

    @property
    def rest_cpu_seconds(self) -> float:
        """Busy time nobody above accounts for: this harness, and whatever else ran."""
        return (self.machine_cpu_seconds - self.cpu_seconds - self.support_cpu_seconds
                - self.emulator_cpu_seconds)

    @property
    def emulator_core_percent(self) -> float:
        """The emulator's CPU over the drain, in % of one core (it serves from one process)."""
        return 100 * self.emulator_cpu_seconds / self.drain_seconds

    @property
    def machine_busy_percent(self) -> float:
        return 100 * self.machine_cpu_seconds / ((os.cpu_count() or 1) * self.drain_seconds)

    @property
    def processes(self) -> int:
        return len(self.peak_rss_mb)

    @property
    def emulator_cap(self) -> float:
        """The throughput the emulator's CPU per message alone allows: LocalStack serves from one
        Python process, so it never gets more than one core (msg/s; nan if not measured)."""
        per_message = self.emulator_cpu_seconds / self.messages
        return 1 / per_message if per_message > 0 else math.nan


@dataclass(frozen=True)
class LatencyResult:
    offered_rate: float  # messages/s actually sent
    latency: Percentiles  # send -> object visible
    resolution_ms: float  # median time between two HEADs of one key
    lost: int  # sent, never seen


@dataclass(frozen=True)
class AwsLikeResult:
    """The second part: the drain again, with AWS-like latencies on every request."""

    latencies: Latencies
    runs: dict[str, DrainResult]  # "B", "C"
    sweep: list[DrainResult]

    def latency_bound(self, run: DrainResult) -> float:
        """What latency alone would allow this run's configuration (see bench.awslike)."""
        if "threads" in run.config:
            return self.latencies.reference_bound(int(run.config["threads"]))
        return self.latencies.shelver_bound(int(run.config["CONSUMERS"]),
                                            int(run.config["CONSUMER_THREADS"]))


@dataclass(frozen=True)
class Results:
    runs: dict[str, DrainResult]  # "A" .. "D"
    sweep: list[DrainResult]
    latency: LatencyResult
    health: Percentiles  # /health during health_run's drain
    health_run: DrainResult | None = None  # Shelver, defaults, probed: apart, as probes cost CPU
    profiles: dict[str, ProfileSummary] = field(default_factory=dict)  # "B", "C"
    aws_like: AwsLikeResult | None = None
    # The requests of A .. D, drained again through counting proxies, by workload.
    bill: dict[str, dict[str, DrainResult]] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    command: str = ""
    books: int = 0
    groups: int = 0
    updates: int = 0
    wall_seconds: float = 0.0
    note: str = ""

    def ratio(self, name: str, to: str) -> float:
        return self.runs[name].throughput / self.runs[to].throughput
