"""`python -m bench.run` (`make bench`): drain the same FIFO queue into S3 with every contender.

One run, one LocalStack (started here on a free loopback port, serverless.yml deployed into it by
osls), the same messages for everyone. Each throughput contender gets a fresh stack (input queue,
DLQ and buckets cloned from the deployed ones, so they start empty) pre-filled with every message
*before* it is started:

  A  the tutorial loop (bench.contenders.naive)            one process
  B  the hand-written reference (bench.contenders.Reference)  one process
  C  Shelver, `gunicorn -c gunicorn.conf.py`, default configuration
  -  sweep: Shelver with CONSUMERS x CONSUMER_THREADS from a small grid
  D  Shelver with the sweep's best pair, measured again on its own fresh stack

Then, for Shelver with its defaults: `/health` latency while the consumers are saturated (during
one more drain in C's configuration: 20 requests a second cost Shelver's HTTP workers CPU that
C's own row must not pay), and end-to-end latency at a low offered rate. Then the second part,
AWS-like latency (bench.awslike): B, C and a consumers x threads sweep of Shelver drain again
with fault proxies adding in-region latencies to every request. Then the bill (bench.bill): A, B,
C and D drain again through proxies that add nothing but count every request, on the bench's
workload and on one without later versions. With `--profile` (the default on a full run), B and
C are run once more with py-spy attached, to show where their CPU goes.

Throughput counts from the first message taken off the queue to the queue drained with every
object listed: process start-up is reported apart (`start-up s`), not folded in. See
bench/measure.py for every definition, and docs/benchmarks.md for the results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

from bench import report
from bench.awslike import COUNTING, Endpoints, Latencies
from bench.bill import count
from bench.contenders import WAIT_SECONDS
from bench.measure import (
    DRAIN_POLL_SECONDS,
    BenchError,
    CpuSnapshot,
    HealthProbe,
    Percentiles,
    VisibilityPoller,
    group_pids,
    peak_rss_mb,
    percentile,
    wait_for,
)
from bench.profile import Profiler, ProfileSummary, py_spy
from bench.results import AwsLikeResult, DrainResult, LatencyResult, Results
from bench.workload import Workload, check, list_etags, make_workload
from scripts.emulator import FAKE_AWS_ENV, LocalStack, deploy, free_port, health
from tests.support.aws import Aws, Stack
from tests.support.shelver import Shelver
from workers.settings import Settings, is_read
from workers.status import read_pool

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 120.0
START_POLL_SECONDS = 0.05
# gunicorn's own variable, beside the ones Shelver reads (workers.settings.is_read): none may
# leak from the caller's shell into "the default configuration".
GUNICORN_VARIABLES = ("GUNICORN_CMD_ARGS",)


_DEFAULTS = Settings()
DEFAULT_CONFIG = {"CONSUMERS": str(_DEFAULTS.consumers),
                  "CONSUMER_THREADS": str(_DEFAULTS.consumer_threads)}


@dataclass(frozen=True)
class Options:
    books: int = 3000
    groups: int = 100
    update_every: int = 10  # every 10th message of a group a later version; 0: none
    reference_threads: int = 8
    sweep: tuple[tuple[int, int], ...] = tuple(itertools.product((1, 2, 3), (4, 8)))
    latency_rate: float = 20.0
    latency_seconds: float = 15.0
    # Shelver's consumers x threads with AWS-like latencies: from latency-bound to CPU-bound (C
    # is the defaults, 4 x 8; 2 x 4 the defaults before 2026-12-03).
    aws_like_sweep: tuple[tuple[int, int], ...] = ((1, 4), (2, 4), (2, 16), (3, 8), (8, 8))
    profile: bool = True
    bill: bool = True
    # One part alone ("cpu", "aws-like" or "bill"), Shelver in the sweep's shapes; printed,
    # nothing written: to compare configurations quickly.
    only: str | None = None
    out_dir: Path = REPO / "docs"
    quick: bool = False
    note: str = ""  # printed above the generated results, e.g. "noisy: a test suite ran"


class Watcher(Protocol):
    def begin(self, pids: list[int]) -> None: ...
    def end(self) -> None: ...


class Contender(Protocol):
    consumers: int  # consumer processes once it runs

    def start(self) -> None: ...
    def pids(self) -> list[int]: ...  # its consumer processes
    def support_pids(self) -> list[int]: ...  # its other processes
    def stop(self, then: Callable[[], None]) -> None: ...  # `then` once it has stopped


# A contender for a stack, given the environment that sends it through proxies (or none).
MakeContender = Callable[[Stack, dict[str, str]], Contender]


def _nothing() -> None:
    pass


@dataclass
class ProcessContender:
    """A or B: `python -m bench.contenders ...` in its own process, killed once measured."""

    command: list[str]
    env: dict[str, str]
    log_path: Path
    consumers: int = 1
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def support_pids(self) -> list[int]:
        return []

    def stop(self, then: Callable[[], None]) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        then()


@dataclass
class ShelverContender:
    """Shelver through gunicorn. Its graceful stop waits out a long poll (WAIT_TIME_SECONDS), so
    it runs in the background while the next contender goes: idle in a long poll on another
    queue, a stopping Shelver costs no CPU."""

    shelver: Shelver
    consumers: int
    stopping: list[threading.Thread]

    def start(self) -> None:
        self.shelver.start()

    def pids(self) -> list[int]:
        return [slot.pid for slot in read_pool(self.shelver.state_dir) if slot.pid]

    def support_pids(self) -> list[int]:
        consumers = set(self.pids())
        return [pid for pid in self.shelver.processes() if pid not in consumers]

    def stop(self, then: Callable[[], None]) -> None:
        def stop_then() -> None:
            try:
                self.shelver.stop()
            finally:
                then()
        thread = threading.Thread(target=stop_then, name="stop-shelver")
        thread.start()
        self.stopping.append(thread)


@dataclass
class HealthWatcher:
    probe: HealthProbe

    def begin(self, pids: list[int]) -> None:
        self.probe.start()

    def end(self) -> None:
        self.probe.stop()


class Bench:
    def __init__(self, options: Options, aws_env: dict[str, str], emulator_pgid: int,
                 run_dir: Path) -> None:
        self.options = options
        self.aws_env = aws_env
        self.emulator_pgid = emulator_pgid
        self.aws = Aws(aws_env)
        self.run_dir = run_dir
        self.workload = make_workload(options.books, options.groups, uuid.uuid4().hex[:8],
                                      options.update_every)
        self.stopping: list[threading.Thread] = []

    # -- contenders -----------------------------------------------------------------------------
    def process_contender(self, contender: str, *args: str) -> MakeContender:
        """A or B."""
        def make(stack: Stack, proxied: dict[str, str]) -> Contender:
            buckets = ",".join(f"{g}={b}" for g, b in stack.buckets.items())
            command = [sys.executable, "-m", "bench.contenders", contender,
                       "--queue-url", stack.input_url, "--buckets", buckets, *args]
            return ProcessContender(command, {**_clean_env(), **self.aws_env, **proxied},
                                    self.run_dir / "contenders.log")
        return make

    def shelver(self, overrides: dict[str, str], port: int | None = None) -> MakeContender:
        """Shelver with its own defaults, but for `overrides`."""
        def make(stack: Stack, proxied: dict[str, str]) -> Contender:
            env = {**self.aws_env, **stack.shelver_env(), **overrides, **proxied}
            shelver = Shelver(env=env, run_dir=self.run_dir, defaults={},
                              port=port or free_port())
            consumers = int(overrides.get("CONSUMERS", _DEFAULTS.consumers))
            return ShelverContender(shelver, consumers, self.stopping)
        return make

    # -- one drain ------------------------------------------------------------------------------
    def drain(self, name: str, label: str, config: dict[str, str], make: MakeContender,
              watchers: Sequence[Watcher] = (), workload: Workload | None = None,
              latencies: Latencies | None = None) -> DrainResult:
        """One contender drains a fresh stack filled with `workload` (the bench's by default);
        with `latencies`, through proxies of its own that hold its requests that long and
        count them."""
        workload = workload or self.workload
        stack = self.aws.clone_stack()
        self.aws.send(stack.input_url, workload.pairs())
        total = len(workload.messages)
        proxies = (Endpoints.start(self.aws_env["AWS_ENDPOINT_URL"], latencies)
                   if latencies is not None else None)
        try:
            contender = make(stack, proxies.env if proxies else {})
        except BaseException:
            if proxies is not None:
                proxies.stop()
            raise
        launched = time.monotonic()
        try:
            contender.start()
            started = wait_for(lambda: self._taken(stack, total), START_TIMEOUT_SECONDS,
                               START_POLL_SECONDS, f"{label} to take a message")
            pids = wait_for_pids(contender)
            support, emulator = contender.support_pids(), group_pids(self.emulator_pgid)
            before = CpuSnapshot.take([*pids, *support, *emulator])
            for watcher in watchers:
                watcher.begin(pids)
            try:
                finished = wait_for(lambda: self._drained(stack, workload),
                                    self._drain_timeout(), DRAIN_POLL_SECONDS,
                                    f"{label} to drain the queue")
                pids = sorted(set(pids) | set(contender.pids()))
                support = sorted(set(support) | set(contender.support_pids()))
                after = CpuSnapshot.take([*pids, *support, *emulator])
                rss = [peak_rss_mb(pid) for pid in pids]
            finally:
                for watcher in watchers:
                    watcher.end()
            # Requests still in flight now (idle long polls) are not the drain's: see bench.bill.
            requests = count(proxies.exchanges(), finished) if proxies else {}
        finally:
            # The proxies outlive the contender: a Shelver stops after this returns.
            contender.stop(proxies.stop if proxies else _nothing)
        dlq_visible, dlq_in_flight = self.aws.counts(stack.dlq_url)
        correctness = check(workload, list_etags(self.aws.s3, stack.buckets),
                            dlq_visible + dlq_in_flight)
        # Every contender meets the emulator in the same state: left in place, each drain's
        # queues and 2,700 objects made LocalStack slower for the contenders after it (its CPU
        # per message rose from 1.9 to 3.0 ms over a run, and D, measured last, paid for it).
        self.aws.delete_stack(stack)
        result = DrainResult(
            name, label, config, total, started - launched, finished - started,
            after.since(before, pids), rss, correctness, after.since(before, support),
            after.since(before, emulator), after.machine - before.machine, started, finished,
            requests)
        print(report.drain_line(result), flush=True)
        return result

    def _taken(self, stack: Stack, total: int) -> bool:
        visible, in_flight = self.aws.counts(stack.input_url)
        return visible < total or in_flight > 0

    def _drained(self, stack: Stack, workload: Workload) -> bool:
        if self.aws.counts(stack.input_url) != (0, 0):
            return False
        return len(list_etags(self.aws.s3, stack.buckets)) >= len(workload.versions)

    def _drain_timeout(self) -> float:
        return max(120.0, self.options.books / 5)  # A does ~70 msg/s here; 5 means stuck

    # -- latency at a low rate ------------------------------------------------------------------
    def latency(self) -> LatencyResult:
        """Shelver (defaults) idle on an empty queue; one book every 1/rate s; HEAD each key."""
        stack = self.aws.clone_stack()
        contender = self.shelver({})(stack, {})
        assert isinstance(contender, ShelverContender)
        contender.start()
        count = int(self.options.latency_rate * self.options.latency_seconds)
        books = make_workload(count, self.options.groups, uuid.uuid4().hex[:8], update_every=0)
        port = int(self.aws_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        poller = VisibilityPoller("127.0.0.1", port)
        try:
            wait_for(lambda: consumers_polling(contender.shelver), START_TIMEOUT_SECONDS, 0.1,
                     "Shelver's consumers to long-poll")
            time.sleep(0.5)  # from "about to poll" to inside the ReceiveMessage call
            poller.start()
            first = time.monotonic()
            for index, message in enumerate(books.messages):
                time.sleep(max(0.0, first + index / self.options.latency_rate - time.monotonic()))
                poller.expect(stack.buckets[message.genre], message.key, time.monotonic())
                self.aws.sqs.send_message(QueueUrl=stack.input_url, MessageBody=message.body,
                                          MessageGroupId=message.group,
                                          MessageDeduplicationId=uuid.uuid4().hex)
            last = time.monotonic()
            with contextlib.suppress(BenchError):
                wait_for(lambda: poller.outstanding() == 0, 30, 0.1, "every object to appear")
        finally:
            poller.stop()
            contender.stop(_nothing)
            self.aws.delete_stack(stack)
        rate = (count - 1) / (last - first) if count > 1 else 0.0
        result = LatencyResult(rate, Percentiles.of(poller.latencies()),
                               percentile(poller.gaps, 50) * 1000, poller.outstanding())
        print(report.latency_line(result), flush=True)
        return result

    # -- AWS-like latency ----------------------------------------------------------------------
    def aws_like(self, latencies: Latencies) -> AwsLikeResult:
        """B, C and Shelver's sweep again, every request held as long as on AWS."""
        print(f"  AWS-like latency: {latencies.describe()}", flush=True)
        threads = str(self.options.reference_threads)
        runs = {
            "B": self.drain("B", "B reference", {"threads": threads}, self.process_contender(
                "reference", "--threads", threads), latencies=latencies),
            "C": self.drain("C", "C Shelver, defaults", DEFAULT_CONFIG, self.shelver({}),
                            latencies=latencies),
        }
        sweep = []
        for consumers, consumer_threads in self.options.aws_like_sweep:
            config = {"CONSUMERS": str(consumers), "CONSUMER_THREADS": str(consumer_threads)}
            sweep.append(self.drain("sweep", f"sweep {consumers}x{consumer_threads}", config,
                                    self.shelver(config), latencies=latencies))
        result = AwsLikeResult(latencies, runs, sweep)
        print(report.aws_like_line(result), flush=True)
        return result

    # -- the bill -------------------------------------------------------------------------------
    def bill(self, shelvers: dict[str, tuple[str, dict[str, str]]], naive: bool = True
             ) -> dict[str, dict[str, DrainResult]]:
        """A (unless not `naive`), B, C and `shelvers` (name: label and configuration) again
        through proxies that only count their requests: on the bench's workload, on one whose
        later versions mostly come a receive after the earlier one, and on one without."""
        workloads = {workload_name(self.workload): self.workload}
        if self.workload.updates:
            for lag, update_every in ((1, self.options.update_every), (0, 0)):
                other = make_workload(self.options.books, self.options.groups,
                                      uuid.uuid4().hex[:8], update_every, lag=lag)
                if other.lagged or not other.updates:  # too few books a group: no lag
                    workloads[workload_name(other)] = other
        threads = str(self.options.reference_threads)
        contenders = {
            **({"A": ("A naive loop", {"threads": "1"}, self.process_contender("naive"))}
               if naive else {}),
            "B": ("B reference", {"threads": threads},
                  self.process_contender("reference", "--threads", threads)),
            "C": ("C Shelver, defaults", DEFAULT_CONFIG, self.shelver({})),
            **{name: (label, config, self.shelver(config))
               for name, (label, config) in shelvers.items()},
        }
        bills: dict[str, dict[str, DrainResult]] = {}
        for name, workload in workloads.items():
            print(f"  bill: {name}, requests counted", flush=True)
            bills[name] = {
                contender: self.drain(contender, label, config, make, workload=workload,
                                      latencies=COUNTING)
                for contender, (label, config, make) in contenders.items()}
            print(report.bill_line(bills[name]), flush=True)
        return bills

    # -- everything -----------------------------------------------------------------------------
    def run_all(self) -> Results:
        threads = str(self.options.reference_threads)
        reference = self.process_contender("reference", "--threads", threads)
        runs: dict[str, DrainResult] = {}
        runs["A"] = self.drain("A", "A naive loop", {"threads": "1"},
                               self.process_contender("naive"))
        runs["B"] = self.drain("B", "B reference", {"threads": threads}, reference)
        runs["C"] = self.drain("C", "C Shelver, defaults", DEFAULT_CONFIG, self.shelver({}))
        port = free_port()
        probe = HealthProbe(f"http://127.0.0.1:{port}/health")
        probed = self.drain("C", "C + /health probe", DEFAULT_CONFIG, self.shelver({}, port),
                            [HealthWatcher(probe)])
        health_latency = probe.between(probed.started_at, probed.finished_at)
        print(report.health_line(health_latency), flush=True)
        sweep = []
        for consumers, consumer_threads in self.options.sweep:
            config = {"CONSUMERS": str(consumers), "CONSUMER_THREADS": str(consumer_threads)}
            sweep.append(self.drain("sweep", f"sweep {consumers}x{consumer_threads}", config,
                                    self.shelver(config)))
        best = max(sweep, key=lambda r: r.throughput).config
        runs["D"] = self.drain("D", "D Shelver, tuned", best, self.shelver(best))
        print(report.machine_limit_line(runs), flush=True)
        latency = self.latency()
        aws_like = self.aws_like(Latencies())
        bill = self.bill({"D": ("D Shelver, tuned", best)}) if self.options.bill else {}
        profiles = self.profiles(reference) if self.options.profile else {}
        return Results(runs, sweep, latency, health_latency, probed, profiles, aws_like, bill)

    def run_part(self, part: str) -> str:
        """One part alone (`Options.only`), as a table."""
        if part == "aws-like":
            return report.aws_like_table(self.aws_like(Latencies()))
        shapes = {f"{c}x{t}": {"CONSUMERS": str(c), "CONSUMER_THREADS": str(t)}
                  for c, t in self.options.sweep}
        if part == "bill":
            # A's three requests a book need no measuring, and it is the slowest to drain.
            bills = self.bill({shape: (f"Shelver {shape}", config)
                               for shape, config in shapes.items()}, naive=False)
            idle = report.idle_table(self.options.reference_threads, WAIT_SECONDS, _DEFAULTS)
            return "\n".join([*(f"\n{workload}:\n{report.requests_table(runs)}\n"
                                 f"{report.cost_table(runs)}" for workload, runs in bills.items()),
                               f"\nidle, an hour and a month:\n{idle}"])
        threads = str(self.options.reference_threads)
        runs = [self.drain("B", "B reference", {"threads": threads},
                           self.process_contender("reference", "--threads", threads)),
                self.drain("C", "C Shelver, defaults", DEFAULT_CONFIG, self.shelver({}))]
        runs += [self.drain("sweep", f"sweep {shape}", config, self.shelver(config))
                 for shape, config in shapes.items()]
        return report.versus_b_table(runs)

    def profiles(self, reference: MakeContender) -> dict[str, ProfileSummary]:
        executable = py_spy()
        if executable is None:
            print("  py-spy not found: no profiles", flush=True)
            return {}
        out = self.run_dir / "profiles"
        spies = {"B": Profiler(out, "reference", executable),
                 "C": Profiler(out, "shelver", executable)}
        runs = {"B": self.drain("B", "B profiled", {}, reference, [spies["B"]]),
                "C": self.drain("C", "C profiled", {}, self.shelver({}), [spies["C"]])}
        return {name: dataclasses.replace(spy.summary, cpu_ms_per_message=runs[name].cpu_per_1000)
                for name, spy in spies.items() if spy.summary is not None}

    def close(self) -> None:
        for thread in self.stopping:
            thread.join()


def workload_name(workload: Workload) -> str:
    if not workload.updates:
        return "no later versions"
    share = workload.updates / len(workload.messages)
    lagged = (f", {100 * workload.lagged / workload.updates:.0f}% of them {workload.update_every} "
              "or more messages after the earlier version" if workload.lagged else "")
    return f"{100 * share:.0f}% later versions{lagged}"


def wait_for_pids(contender: Contender) -> list[int]:
    pids: list[int] = []

    def found() -> bool:
        pids[:] = contender.pids()
        return len(pids) >= contender.consumers
    wait_for(found, START_TIMEOUT_SECONDS, START_POLL_SECONDS, "the consumer processes")
    return pids


def consumers_polling(shelver: Shelver) -> bool:
    body = shelver.get("/health").body
    consumers = body.get("consumers", []) if isinstance(body, dict) else []
    return (len(consumers) == _DEFAULTS.consumers
            and all(c.get("state") == "polling" for c in consumers))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not is_read(k) and k not in GUNICORN_VARIABLES}


def machine(endpoint: str) -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/info", timeout=5) as answer:
            localstack = str(json.load(answer).get("version", "?"))
    except (OSError, ValueError):
        localstack = "?"
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(memory) / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "boto3": metadata.version("boto3"),
        "awscrt": metadata.version("awscrt"),
        "gunicorn": metadata.version("gunicorn"),
        "localstack": localstack,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@contextlib.contextmanager
def emulator(run_dir: Path) -> Iterator[tuple[dict[str, str], int]]:
    """LocalStack on a free loopback port with serverless.yml deployed: the AWS environment to
    reach it, and its process group."""
    with LocalStack(port=free_port(), data_dir=run_dir / "localstack") as localstack:
        deploy("local", localstack.port)
        if health(localstack.endpoint) is None or localstack.pid is None:
            raise BenchError(f"LocalStack at {localstack.endpoint} stopped answering")
        yield {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": localstack.endpoint}, localstack.pid


def parse_args(argv: list[str] | None) -> tuple[Options, str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, help="messages per contender (default 3000)")
    parser.add_argument("--update-every", type=int,
                        help="every Nth message of a group is a later version of a book "
                             "(default 10; 0: none)")
    parser.add_argument("--sweep", type=shapes, metavar="CxT,...",
                        help="Shelver's CONSUMERS x CONSUMER_THREADS to sweep (default "
                             "1x4,1x8,2x4,2x8,3x4,3x8)")
    parser.add_argument("--aws-like-sweep", type=shapes, metavar="CxT,...",
                        help="the same with AWS-like latency (default 1x4,2x4,2x16,3x8,8x8)")
    parser.add_argument("--only", choices=PARTS,
                        help="one part alone, printed, nothing written: cpu (B, C, the --sweep "
                             "shapes), aws-like (B, C, the --aws-like-sweep shapes) or bill "
                             "(B, C, the --sweep shapes, requests counted)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 300 books, 2-point sweeps, 5 s of latency, no profile, "
                             "results in .run/bench instead of docs/")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="profile B and C with py-spy (default: on, off with --quick)")
    parser.add_argument("--bill", action=argparse.BooleanOptionalAction, default=True,
                        help="count every contender's requests and price them (default: on)")
    parser.add_argument("--out", type=Path, help="where the JSON, PNG and markdown go")
    parser.add_argument("--note", default="", help="a remark shown above the results")
    args = parser.parse_args(argv)
    options = Options()
    if args.quick:
        options = Options(books=300, groups=30, sweep=((1, 4), (2, 8)), latency_seconds=5.0,
                          aws_like_sweep=((1, 4), (2, 8)), profile=False,
                          out_dir=REPO / ".run" / "bench", quick=True)
    changes = {"books": args.books, "update_every": args.update_every, "sweep": args.sweep,
               "aws_like_sweep": args.aws_like_sweep}
    options = dataclasses.replace(options, **{k: v for k, v in changes.items() if v is not None},
                                  bill=args.bill, only=args.only)
    if args.profile is not None:
        options = dataclasses.replace(options, profile=args.profile)
    if args.out is not None:
        options = dataclasses.replace(options, out_dir=args.out)
    options = dataclasses.replace(options, note=args.note)
    command = ["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]
    return options, shlex.join(command)


PARTS = ("cpu", "aws-like", "bill")


def shapes(text: str) -> tuple[tuple[int, int], ...]:
    """"2x4,4x8" -> ((2, 4), (4, 8)): CONSUMERS x CONSUMER_THREADS pairs."""
    pairs = []
    for pair in text.split(","):
        consumers, _, threads = pair.partition("x")
        if not (consumers.isdigit() and threads.isdigit() and int(consumers) and int(threads)):
            raise argparse.ArgumentTypeError(
                f"{pair!r} in {text!r}: expected CONSUMERSxTHREADS pairs, e.g. 2x4,4x8")
        pairs.append((int(consumers), int(threads)))
    return tuple(pairs)


def main(argv: list[str] | None = None) -> int:
    options, command = parse_args(argv)
    began = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="shelver-bench-"))
    print(f"bench: {options.books} books over {options.groups} groups; work files in {run_dir}",
          flush=True)
    with emulator(run_dir) as (aws_env, emulator_pgid):
        info = machine(aws_env["AWS_ENDPOINT_URL"])
        bench = Bench(options, aws_env, emulator_pgid, run_dir)
        try:
            if options.only is not None:
                print(bench.run_part(options.only), flush=True)
                return 0
            results = bench.run_all()
        finally:
            bench.close()
    info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = dataclasses.replace(
        results, machine=info, command=command, books=options.books,
        groups=options.groups, updates=bench.workload.updates, note=options.note,
        wall_seconds=time.monotonic() - began)
    print(report.table(results), flush=True)
    print(report.per_core_table(results), flush=True)
    for workload, runs in results.bill.items():
        print(f"\nbill, {workload}:\n{report.requests_table(runs)}\n{report.cost_table(runs)}",
              flush=True)
    report.write(results, options.out_dir)
    print(f"bench: done in {results.wall_seconds:.0f} s; wrote {options.out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
