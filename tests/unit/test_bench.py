"""The benchmark's own parts: the workload, the correctness check, and contenders A and B
draining a queue for real (moto in-process; one worker, as moto's FIFO receive is not safe
under concurrent receivers)."""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from bench.awslike import Latencies
from bench.contenders import Reference, Target, naive
from bench.profile import Share, load_raw, summarize, thread_cpu, thread_cpu_since
from bench.report import machine_limit_line
from bench.results import AwsLikeResult, DrainResult
from bench.slow_clients import REQUEST_LINE, Attacker, ProbeResult, figures
from bench.workload import Correctness, check, list_etags, make_workload, md5
from tests.support.aws import wait_until


@dataclass
class Fifo:
    sqs: Any
    s3: Any
    url: str
    buckets: dict[str, str]

    def send(self, pairs: list[tuple[str, str]]) -> None:
        for n, (group, body) in enumerate(pairs):
            self.sqs.send_message(QueueUrl=self.url, MessageBody=body, MessageGroupId=group,
                                  MessageDeduplicationId=str(n))

    def drained(self) -> bool:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return bool(attributes == {"ApproximateNumberOfMessages": "0",
                                    "ApproximateNumberOfMessagesNotVisible": "0"})


@pytest.fixture
def fifo(moto: None) -> Fifo:
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    url = sqs.create_queue(QueueName="bench.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    buckets = {genre: f"bench-{genre}" for genre in ("scifi", "romance")}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    return Fifo(sqs, s3, url, buckets)


def test_workload_has_later_versions_in_the_same_group() -> None:
    workload = make_workload(200, groups=10, run="r")
    assert len(workload.messages) == 200
    assert workload.updates == 20  # every tenth message of each group
    assert all(900 <= len(m.body.encode()) <= 1000 for m in workload.messages)
    groups_of: dict[tuple[str, str], set[str]] = {}
    for m in workload.messages:
        groups_of.setdefault((m.genre, m.key), set()).add(m.group)
        assert m.key == f"{orjson.loads(m.body)['title']}.json"
    assert all(len(groups) == 1 for groups in groups_of.values())
    versions = Counter(len(history) for history in workload.versions.values())
    assert versions == {1: 160, 2: 20}
    last = {(m.genre, m.key): md5(m.body) for m in workload.messages}  # last write wins
    assert {k: h[-1] for k, h in workload.versions.items()} == last
    assert make_workload(50, 5, "r", update_every=0).updates == 0


def test_check_names_every_kind_of_wrong_listing() -> None:
    workload = make_workload(40, groups=2, run="r", update_every=4)
    right = {object_id: f'"{history[-1]}"' for object_id, history in workload.versions.items()}
    assert check(workload, right).ok

    updated = next(k for k, h in workload.versions.items() if len(h) > 1)
    first_key = next(k for k, h in workload.versions.items() if len(h) == 1)
    wrong = dict(right)
    wrong[updated] = f'"{workload.versions[updated][0]}"'  # the older version won
    del wrong[first_key]
    wrong[("scifi", "stray.json")] = '"00"'
    result = check(workload, wrong, dead_lettered=1)
    assert (result.missing, result.stale, result.extra, result.dead_lettered) == (1, 1, 1, 1)
    assert not result.ok and "1 stale" in result.summary()
    other = next(k for k in workload.versions if k not in (updated, first_key))
    assert check(workload, {**right, other: '"not-a-version"'}).corrupt == 1


def _drain(fifo: Fifo, run: Callable[[threading.Event], int]) -> int:
    stop = threading.Event()
    handled: list[int] = []
    worker = threading.Thread(target=lambda: handled.append(run(stop)))
    worker.start()
    try:
        wait_until(fifo.drained, timeout=60, what="the queue to drain")
    finally:
        stop.set()
        worker.join(timeout=30)
    return handled[0]


@pytest.mark.parametrize("contender", ["naive", "reference"])
def test_contender_stores_the_last_version_of_every_book(fifo: Fifo, contender: str) -> None:
    workload = make_workload(60, groups=6, run="r", update_every=3)
    fifo.send(workload.pairs())
    target = Target(fifo.url, fifo.buckets, wait_seconds=0)

    def run(stop: threading.Event) -> int:
        if contender == "naive":
            return naive(target, stop)
        return Reference(target, threads=1).run(stop)

    assert _drain(fifo, run) == 60
    result = check(workload, list_etags(fifo.s3, fifo.buckets))
    assert result.ok, result.summary()
    assert result.expected == 42  # 60 messages, of which 18 later versions


def test_profile_summary_splits_aws_calls_by_caller(tmp_path: Path) -> None:
    thread = "Thread.run (threading.py:982)"
    api = ("BaseClient._make_api_call (botocore/client.py:1076);"
           "SigV4Auth.add_auth (botocore/auth.py:420)")
    raw = tmp_path / "shelver-1.txt"
    raw.write_text("\n".join([
        f"{thread};BookStore.store (workers/books/store.py:79);"
        "BookStore._put (workers/books/store.py:134);"
        f"{api} 6",
        f"{thread};Consumer._consume (workers/consumer/loop.py:201);"
        f"SqsTransport.receive (workers/aws/sqs.py:79);{api} 2",
        f"{thread};Consumer._update (workers/consumer/loop.py:120);"
        "write_atomically (workers/status.py:50);Path.write_bytes (pathlib.py:1066) 1",
        f"{thread} 1",
    ]) + "\n")
    summary = summarize(load_raw([raw, tmp_path / "gone.txt"]))
    assert summary.samples == 10
    assert summary.aws_calls_percent == 80
    assert [(s.name, s.percent) for s in summary.aws_by_caller] == [
        ("BookStore._put (workers/books/store.py)", 60),
        ("SqsTransport.receive (workers/aws/sqs.py)", 20)]
    assert summary.outside_aws[0] == Share("write_atomically (workers/status.py)", 10)
    assert summary.by_library[0] == Share("botocore", 80)


def test_profile_summary_counts_the_crt_client_as_an_aws_call(tmp_path: Path) -> None:
    thread = "Thread.run (threading.py:982)"
    raw = tmp_path / "shelver-2.txt"
    raw.write_text("\n".join([
        f"{thread};BookStore._put (workers/books/store.py:134);"
        "CrtObjects.put (workers/aws/s3crt.py:300);"
        "HttpRequest.__init__ (awscrt/http.py:780) 3",
        # The CRT calls back into Python on its own thread: no project code called it.
        "_S3RequestCore._on_headers (awscrt/s3.py:960);"
        "_Answer.on_headers (workers/aws/s3crt.py:90) 1",
    ]) + "\n")
    summary = summarize(load_raw([raw]))
    assert summary.aws_calls_percent == 100
    assert [(s.name, s.percent) for s in summary.aws_by_caller] == [
        ("BookStore._put (workers/books/store.py)", 75),
        ("(no caller: the CRT's callbacks)", 25)]


def test_thread_cpu_tells_the_crts_c_threads_from_python_threads() -> None:
    from awscrt.io import EventLoopGroup  # starts C threads named AwsEventLoop...

    loops = EventLoopGroup(1)
    def with_crt_thread() -> dict[str, float] | None:
        spent = thread_cpu_since({}, thread_cpu([os.getpid()]))
        return spent if "CRT C threads" in spent else None

    spent = wait_until(with_crt_thread, timeout=10, what="the C thread to name itself")
    assert set(spent) == {"Python threads", "CRT C threads"}
    assert spent["Python threads"] > 0  # this test's own interpreter
    del loops


def drain_result(name: str, throughput: float, emulator_ms: float, **config: str
                 ) -> DrainResult:
    messages = 1000
    return DrainResult(name, name, dict(config), messages, 0.5, messages / throughput, 1.0,
                       [50.0], Correctness(900, 900, 0, 0, 0, 0),
                       emulator_cpu_seconds=emulator_ms * messages / 1000)


def test_the_machine_limit_is_one_emulator_core_over_its_cpu_per_message() -> None:
    run = drain_result("C", throughput=400, emulator_ms=2.0)
    assert run.emulator_cap == pytest.approx(500)  # 1 s of one core / 2 ms per message
    line = machine_limit_line({"C": run})
    assert "C 500 msg/s (80% reached)" in line


def test_aws_like_bounds_follow_each_designs_concurrency() -> None:
    latencies = Latencies(sqs_ms=10, s3_ms=20)
    result = AwsLikeResult(latencies, {
        "B": drain_result("B", 300, 2.0, threads="8"),
        "C": drain_result("C", 350, 2.0, CONSUMERS="2", CONSUMER_THREADS="4")}, [])
    # B: 8 workers x 10 messages per (receive + 10 puts + delete) = 80 / 0.22 s.
    assert result.latency_bound(result.runs["B"]) == pytest.approx(363.6, abs=0.1)
    # Shelver: 8 threads each storing one message per 20 ms.
    assert result.latency_bound(result.runs["C"]) == pytest.approx(400)
    proxy = latencies.proxy("http://127.0.0.1:9", 20)
    assert (proxy.delay_seconds, proxy.jitter_seconds) == pytest.approx((0.015, 0.010))


# -- bench/slow_clients.py -----------------------------------------------------------------------

def test_slow_client_figures_count_unanswered_probes_as_failures() -> None:
    results = [ProbeResult("/health", 0.004, 200), ProbeResult("/health", 5.0, 0),
               ProbeResult("/health/live", 0.002, 503)]

    by_path = figures(results)

    assert (by_path["/health"].probes, by_path["/health"].failures) == (2, 1)
    assert by_path["/health"].latency.max_ms == pytest.approx(4.0)  # of the answered only
    assert by_path["/health"].statuses == {"200": 1, "none": 1}
    assert by_path["/health/live"].statuses == {"503": 1}


def test_the_attacker_holds_each_kind_and_reopens_what_the_server_closes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        attacker = Attacker(server.getsockname()[1], count=6, trickle_seconds=0.2).start()
        try:
            accepted = [server.accept()[0] for _ in range(6)]
            received = []
            for conn in accepted:
                conn.settimeout(0.5)
                try:
                    received.append(conn.recv(1024))
                except TimeoutError:
                    received.append(b"")  # idle: sends nothing
            assert sorted(received).count(b"") == 2  # idle, partial, trickle in turn
            assert all(data.startswith(REQUEST_LINE) for data in received if data)
            assert all(not data.endswith(b"\r\n\r\n") for data in received)  # never complete
            accepted[0].close()
            reopened, _ = server.accept()  # the count stays up
            reopened.close()
            wait_until(lambda: sum(attacker.closed_by_server.values()) >= 1, 30, 0.05,
                       "the attacker to count the closed connection")
        finally:
            attacker.stop()
            for conn in accepted:
                conn.close()
        assert attacker.error is None
