"""`python -m bench.footprint`: what one Shelver needs from its pod, measured.

The figures behind deploy/kubernetes/deployment.yaml: a real Shelver with its defaults
(CONSUMERS=4, CONSUMER_THREADS=8, WEB_CONCURRENCY=2) on its own LocalStack (started here on a free
loopback port, serverless.yml deployed into it by osls), and three runs:

  drain   `--books` books pre-sent over `--groups` groups, drained while /health and /metrics
          are fetched every second (a probe and a scraper would): the memory of every process
          of the Shelver (gunicorn master, HTTP workers, consumers, multiprocessing's resource
          tracker), sampled every half second, and the disk its working directories use, which
          live on the pod's /tmp emptyDir. Then SIGTERM while idle in a long poll.
  busy    the same books, SIGTERM once a third of them are stored: time to exit, and nothing
          may be left in flight.
  frozen  the worst stop: one HTTP worker and one consumer SIGSTOPped, then SIGTERM. gunicorn
          KILLs the worker after its graceful_timeout, then the pool KILLs the consumer at its
          deadline: the time to exit against workers.pool.stop_deadline, which the pod's grace
          period must exceed.

`--book-bytes 1048576 --steps drain` measures the same with books of SQS's largest message (the
figures behind the memory request and limit since books reach 1 MiB: issue 18); `--steps payloads`
sends every book through the Amazon SQS Extended Client instead, as a payload offloaded to S3
(`--book-bytes 10000000`: 10 MB payloads at the default PAYLOAD_MAX_BYTES).

Memory is reported two ways: the sum of every process's RSS (pages shared between the forked
HTTP workers and the master count once per process, so it overstates) and the sum of their PSS
(shared pages split between their users: what the container's cgroup is charged, give or take
the page cache).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.measure import Background, wait_for
from bench.run import emulator
from bench.workload import BODY_BYTES, list_etags, make_workload
from tests.support.aws import Aws, Stack
from tests.support.extended_client import producer
from tests.support.shelver import Shelver
from workers.pool import stop_deadline
from workers.settings import Settings

SAMPLE_SECONDS = 0.5
PROBE_SECONDS = 1.0
MIB = 1024 * 1024
SEND_BATCH_BYTES = MIB


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def disk_usage_bytes(path: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes under `path`: the Prometheus files are sparse, and an
    emptyDir's sizeLimit is enforced on what is allocated."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            allocated += stat.st_blocks * 512
            apparent += stat.st_size
    return allocated, apparent


@dataclass
class Footprint:
    """Peaks over a run, in MiB, by process role."""

    rss_sum_peak: float = 0.0
    pss_sum_peak: float = 0.0
    processes: int = 0
    # role -> summed VmHWM (each process's own peak RSS) of the processes in that role
    peak_rss_by_role: dict[str, float] = field(default_factory=dict)
    disk_allocated_peak: float = 0.0
    disk_apparent_peak: float = 0.0


@dataclass
class Sampler(Background):
    """Samples the memory of every process of a Shelver, and its working directories' disk."""

    shelver: Shelver
    dirs: list[Path]
    result: Footprint = field(default_factory=Footprint)
    # pid -> (role, largest VmHWM seen in KiB)
    hwm: dict[int, tuple[str, int]] = field(default_factory=dict)

    def sample(self) -> None:
        found = self.shelver.roles()
        rss = sum(_status_kib(pid, "VmRSS") for pid in found) / 1024
        pss = sum(_pss_kib(pid) for pid in found) / 1024
        for pid, role in found.items():
            self.hwm[pid] = (role, max(self.hwm.get(pid, (role, 0))[1], _status_kib(pid, "VmHWM")))
        allocated, apparent = (sum(x) for x in zip(*(disk_usage_bytes(d) for d in self.dirs),
                                                    strict=True))
        r = self.result
        r.rss_sum_peak = max(r.rss_sum_peak, round(rss, 1))
        r.pss_sum_peak = max(r.pss_sum_peak, round(pss, 1))
        r.processes = max(r.processes, len(found))
        r.disk_allocated_peak = max(r.disk_allocated_peak, round(allocated / MIB, 2))
        r.disk_apparent_peak = max(r.disk_apparent_peak, round(apparent / MIB, 2))
        by_role: dict[str, float] = {}
        for role, kib in self.hwm.values():
            by_role[role] = by_role.get(role, 0.0) + kib / 1024
        r.peak_rss_by_role = {k: round(v, 1) for k, v in sorted(by_role.items())}

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()


@dataclass
class Prober(Background):
    """GET /health and /metrics every second, as a kubelet and a Prometheus would (faster)."""

    shelver: Shelver

    def _run(self) -> None:
        while not self._stop.wait(PROBE_SECONDS):
            for path in ("/health", "/metrics"):
                try:
                    with urllib.request.urlopen(self.shelver.url + path, timeout=5) as answer:
                        answer.read()
                except OSError:
                    pass  # a 503 /health (starting) is an HTTPError, an OSError: still a probe


@dataclass
class Run:
    aws: Aws
    aws_env: dict[str, str]
    run_dir: Path
    books: int
    groups: int
    book_bytes: int = BODY_BYTES

    def shelver(self, stack: Stack) -> Shelver:
        """Shelver with its own defaults: nothing set but the queue, buckets and endpoint."""
        return Shelver(env={**self.aws_env, **stack.shelver_env()}, run_dir=self.run_dir,
                       defaults={})

    def filled_stack(self) -> tuple[Stack, int]:
        stack = self.aws.clone_stack()
        workload = make_workload(self.books, self.groups, uuid.uuid4().hex[:8],
                                 size=self.book_bytes)
        pairs = workload.pairs()
        # A batch's bodies together are bound by the queue's largest message: large books go
        # one SendMessageBatch each.
        per_call = 10 if self.book_bytes * 10 <= SEND_BATCH_BYTES else 1
        for start in range(0, len(pairs), per_call):
            self.aws.send(stack.input_url, pairs[start:start + per_call])
        return stack, len(workload.versions)

    def timed_stop(self, shelver: Shelver) -> tuple[float, int]:
        began = time.monotonic()
        shelver.signal(signal.SIGTERM)
        code = shelver.wait_exit(timeout=stop_deadline(Settings()) + 60)
        return time.monotonic() - began, code

    def drain(self) -> dict[str, object]:
        stack, objects = self.filled_stack()
        shelver = self.shelver(stack).start()
        dirs = [shelver.state_dir, self.run_dir / f"metrics-{shelver.port}"]
        try:
            sampler, prober = Sampler(shelver, dirs).start(), Prober(shelver).start()
            try:
                began = time.monotonic()
                wait_for(lambda: self.aws.drained(stack.input_url)
                         and len(list_etags(self.aws.s3, stack.buckets)) >= objects,
                         600, 0.5, "the queue to drain")
                drained_in = time.monotonic() - began
                time.sleep(10)  # idle: long polls, probes and scrapes go on
            finally:
                prober.stop()
                sampler.stop()
            idle_stop, code = self.timed_stop(shelver)
        finally:
            shelver.stop()
            self.aws.delete_stack(stack)
        return {"footprint": asdict(sampler.result), "drained_seconds": round(drained_in, 1),
                "idle_stop_seconds": round(idle_stop, 2), "idle_stop_exit": code}

    def payloads(self) -> dict[str, object]:
        """`drain` with every book a payload of `book_bytes` offloaded to S3 by the Amazon SQS
        Extended Client (the real library), filed and deleted (PAYLOAD_DELETE)."""
        stack = self.aws.clone_stack()
        bucket = self.aws.create_bucket(f"payloads-{uuid.uuid4().hex[:10]}")
        library = producer(bucket, endpoint_url=self.aws_env["AWS_ENDPOINT_URL"],
                           aws_access_key_id=self.aws_env["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=self.aws_env["AWS_SECRET_ACCESS_KEY"])
        workload = make_workload(self.books, self.groups, uuid.uuid4().hex[:8],
                                 size=self.book_bytes)
        for group, body in workload.pairs():
            library.send_message(QueueUrl=stack.input_url, MessageBody=body,
                                 MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex)
        shelver = Shelver(env={**self.aws_env, **stack.shelver_env(), "PAYLOAD_BUCKETS": bucket,
                               "PAYLOAD_DELETE": "true"},
                          run_dir=self.run_dir, defaults={}).start()
        try:
            sampler = Sampler(shelver, [shelver.state_dir]).start()
            try:
                began = time.monotonic()
                wait_for(lambda: self.aws.drained(stack.input_url)
                         and self.aws.keys(bucket) == [], 900, 0.5, "the payloads to be filed")
                drained_in = time.monotonic() - began
            finally:
                sampler.stop()
        finally:
            shelver.stop()
            self.aws.delete_stack(stack)
            self.aws.delete_bucket(bucket)
        return {"payloads_footprint": asdict(sampler.result),
                "payloads_drained_seconds": round(drained_in, 1)}

    def busy_stop(self) -> dict[str, object]:
        stack, objects = self.filled_stack()
        shelver = self.shelver(stack).start()
        try:
            wait_for(lambda: len(list_etags(self.aws.s3, stack.buckets)) >= objects // 3,
                     600, 0.2, "a third of the books to be stored")
            seconds, code = self.timed_stop(shelver)
            visible, in_flight = self.aws.counts(stack.input_url)
        finally:
            shelver.stop()
            self.aws.delete_stack(stack)
        return {"busy_stop_seconds": round(seconds, 2), "busy_stop_exit": code,
                "left_visible": visible, "left_in_flight": in_flight}

    def frozen_stop(self) -> dict[str, object]:
        stack = self.aws.clone_stack()
        shelver = self.shelver(stack).start()
        try:
            shelver.wait_healthy(120)
            found = shelver.roles()
            for role in ("http worker", "consumer"):
                os.kill(next(pid for pid, r in found.items() if r == role), signal.SIGSTOP)
            seconds, code = self.timed_stop(shelver)
        finally:
            shelver.stop()
            self.aws.delete_stack(stack)
        return {"frozen_stop_seconds": round(seconds, 2), "frozen_stop_exit": code,
                "stop_deadline_seconds": stop_deadline(Settings())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--book-bytes", type=int, default=BODY_BYTES,
                        help="each book's size (1048576: SQS's largest message)")
    parser.add_argument("--steps", nargs="+",
                        choices=("drain", "payloads", "busy_stop", "frozen_stop"),
                        default=["drain", "busy_stop", "frozen_stop"])
    args = parser.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="shelver-footprint-"))
    print(f"footprint: work files in {run_dir}", flush=True)
    results: dict[str, object] = {"books": args.books, "groups": args.groups,
                                  "book_bytes": args.book_bytes}
    with emulator(run_dir) as (aws_env, _):
        run = Run(Aws(aws_env), aws_env, run_dir, args.books, args.groups, args.book_bytes)
        for step in args.steps:
            results.update(getattr(run, step)())
            print(json.dumps(results), flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"footprint: a Shelver did not stop: {exc}") from None
