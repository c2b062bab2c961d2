"""The benchmark's own parts: the workload, the correctness check, contenders A and B draining a
queue for real (moto in-process; one worker, as moto's FIFO receive is not safe under concurrent
receivers), and the bill: requests named, counted and priced."""

from __future__ import annotations

import dataclasses
import http.client
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from bench import prices
from bench.awslike import COUNTING, Latencies
from bench.bill import Bill, Idle, count
from bench.contenders import Reference, Target, naive
from bench.measure import Percentiles
from bench.profile import Share, load_raw, summarize, thread_cpu, thread_cpu_since
from bench.report import (
    cost_table,
    idle_table,
    machine_limit_line,
    pays_for,
    per_core_table,
    targets,
)
from bench.results import AwsLikeResult, DrainResult, LatencyResult, Results
from bench.run import parse_args
from bench.slow_clients import REQUEST_LINE, Attacker, ProbeResult, figures
from bench.workload import Correctness, check, list_etags, make_workload, md5
from tests.support.aws import wait_until
from tests.support.proxy import Exchange, FaultProxy, Operation, operation
from workers.settings import Settings


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
    # With a lag, a version is of a book of the block before when there is one: of 30 messages
    # of a group, the 10th is of the 1st, the 20th of the 1st again and the 30th of the 11th.
    lagged = make_workload(60, groups=2, run="r", lag=1)
    assert (lagged.updates, lagged.lagged) == (6, 4)
    assert make_workload(20, groups=2, run="r", lag=1).lagged == 0  # no earlier block
    assert sorted(Counter(len(h) for h in lagged.versions.values()).items()) == [
        (1, 50), (2, 2), (3, 2)]
    first_group = [m.key for m in lagged.messages if m.group == "group-0"]
    assert first_group[9] == first_group[19] == first_group[0]
    assert first_group[29] == first_group[10]


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


def drain_result(name: str, throughput: float, emulator_ms: float, cpu_seconds: float = 1.0,
                 requests: dict[str, int] | None = None, **config: str) -> DrainResult:
    messages = 1000
    return DrainResult(name, name, dict(config), messages, 0.5, messages / throughput,
                       cpu_seconds, [50.0], Correctness(900, 900, 0, 0, 0, 0),
                       emulator_cpu_seconds=emulator_ms * messages / 1000,
                       requests=requests or {})


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


# -- the bill: bench/bill.py, bench/prices.py, tests/support/proxy.py's operation --------------

def test_the_journal_names_each_operation_a_client_asks_for(
        empty_moto_server: str, aws_at: Callable[[str], None]) -> None:
    with FaultProxy(empty_moto_server) as proxy:
        aws_at(proxy.url)
        sqs, s3 = boto3.client("sqs"), boto3.client("s3")
        url = sqs.create_queue(QueueName="bill.fifo",
                               Attributes={"FifoQueue": "true"})["QueueUrl"]
        s3.create_bucket(Bucket="bill-books")
        proxy.configure(journal=True)

        sqs.send_message(QueueUrl=url, MessageBody='{"title": "Dune"}', MessageGroupId="g",
                         MessageDeduplicationId="1")
        handle = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     VisibilityTimeout=30)["Messages"][0]["ReceiptHandle"]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": "0", "ReceiptHandle": handle, "VisibilityTimeout": 30}])
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": handle}])
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        # The query protocol, as SDKs before the JSON one send it: Action in the form body.
        form = urllib.parse.urlencode({"Action": "GetQueueUrl", "QueueName": "bill.fifo"})
        urllib.request.urlopen(urllib.request.Request(
            f"{proxy.url}/", data=form.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"}), timeout=10).close()
        s3.put_object(Bucket="bill-books", Key="Dune.json", Body=b"{}")
        s3.head_object(Bucket="bill-books", Key="Dune.json")
        s3.get_object(Bucket="bill-books", Key="Dune.json")["Body"].read()
        s3.head_bucket(Bucket="bill-books")
        s3.list_objects_v2(Bucket="bill-books")
        s3.delete_object(Bucket="bill-books", Key="Dune.json")

        exchanges = proxy.exchanges()
    assert [str(e.operation) for e in exchanges] == [
        "SQS SendMessage", "SQS ReceiveMessage", "SQS ChangeMessageVisibilityBatch",
        "SQS DeleteMessageBatch", "SQS GetQueueAttributes", "SQS GetQueueUrl",
        "S3 PutObject", "S3 HeadObject", "S3 GetObject", "S3 HeadBucket", "S3 ListObjectsV2",
        "S3 DeleteObject"]
    send, receive = exchanges[:2]
    assert send.request_bytes > len('{"title": "Dune"}')  # the message in its JSON envelope
    assert receive.response_bytes > len('{"title": "Dune"}')


def test_operation_reads_query_actions_in_the_url_and_buckets_in_the_host_name() -> None:
    assert operation("GET", "/123456789012/in.fifo?Action=ReceiveMessage&Version=2012-11-05",
                     {}, b"") == Operation("SQS", "ReceiveMessage")
    virtual = {"Host": "acme-books.s3.us-east-1.amazonaws.com"}
    assert operation("PUT", "/Dune.json", virtual, b"{}") == Operation("S3", "PutObject")
    assert operation("HEAD", "/", virtual, b"") == Operation("S3", "HeadBucket")
    path_style = {"Host": "s3.us-east-1.amazonaws.com"}
    assert operation("HEAD", "/acme-books/", path_style, b"") == Operation("S3", "HeadBucket")
    assert operation("HEAD", "/acme-books/a/b.json", path_style, b"") == \
        Operation("S3", "HeadObject")
    assert operation("GET", "/", path_style, b"") == Operation("S3", "ListBuckets")
    assert operation("POST", "/acme-books/Dune.json?uploads", path_style, b"") == \
        Operation("S3", "POST object")


def exchange(operation: Operation | None, status: int = 200, arrived: float = 1.0,
             request_bytes: int = 100, response_bytes: int = 100) -> Exchange:
    return Exchange("POST", "/", {}, status, arrived, arrived + 0.01, operation, request_bytes,
                    response_bytes)


def test_count_bills_sqs_by_64_kb_chunk_4xx_too_and_nothing_answered_5xx_or_late() -> None:
    receive, put = Operation("SQS", "ReceiveMessage"), Operation("S3", "PutObject")
    exchanges = [
        exchange(receive, response_bytes=64 * 1024),  # one chunk
        exchange(receive, response_bytes=64 * 1024 + 1),  # two
        exchange(Operation("SQS", "SendMessageBatch"), request_bytes=200 * 1024),  # four
        exchange(put, status=412),  # a refused conditional put is billed
        exchange(put, status=503),  # S3 bills no 5xx
        exchange(Operation("S3", "HeadObject"), arrived=2.5),  # after the drain
        exchange(None),  # not journaled with an operation
        exchange(Operation("S3", "PutObject"), response_bytes=10 ** 6),  # S3: one per request
    ]

    assert count(exchanges, until=2.0) == {"SQS ReceiveMessage": 3, "SQS SendMessageBatch": 4,
                                           "S3 PutObject": 2}


def test_prices_follow_the_price_list_lines() -> None:
    assert prices.price("SQS", "ReceiveMessage") is prices.SQS_FIFO
    assert prices.price("SQS", "ChangeMessageVisibilityBatch") is prices.SQS_FIFO
    assert prices.price("SQS", "GetQueueAttributes") is prices.SQS_STANDARD
    assert prices.price("S3", "PutObject") is prices.S3_WRITE
    assert prices.price("S3", "ListObjectsV2") is prices.S3_WRITE
    assert prices.price("S3", "POST object") is prices.S3_WRITE
    assert prices.price("S3", "HeadObject") is prices.S3_READ
    assert prices.price("S3", "HeadBucket") is prices.S3_READ
    assert prices.price("S3", "DeleteObject") is prices.S3_FREE
    assert (prices.SQS_FIFO.usd_per_million, prices.SQS_STANDARD.usd_per_million,
            prices.S3_WRITE.usd_per_million, prices.S3_READ.usd_per_million) == (
        0.50, 0.40, 5.00, 0.40)


REFERENCE = {"SQS ReceiveMessage": 100, "SQS DeleteMessageBatch": 100, "S3 PutObject": 1000}
SHELVER = {"SQS ReceiveMessage": 100, "SQS DeleteMessageBatch": 100,
           "SQS GetQueueAttributes": 10, "S3 PutObject": 1100, "S3 HeadObject": 100,
           "S3 HeadBucket": 2}


def test_a_bill_is_requests_per_book_times_the_list_price() -> None:
    b, c = Bill(REFERENCE, books=1000), Bill(SHELVER, books=1000)

    assert c.per_book("S3 PutObject") == pytest.approx(1.1)
    assert c.per_book("SQS ChangeMessageVisibilityBatch") == 0
    # 0.1 receives + 0.1 deletes a book at $0.50 per million, 0.01 samples at $0.40.
    assert c.service_usd("SQS") == pytest.approx(0.1 * 0.5 + 0.1 * 0.5 + 0.01 * 0.4)
    # 1.1 puts a book at $5 per million, 0.1 HEADs and 0.002 HeadBuckets at $0.40.
    assert c.service_usd("S3") == pytest.approx(1.1 * 5 + 0.1 * 0.4 + 0.002 * 0.4)
    assert c.total_usd == pytest.approx(c.service_usd("SQS") + c.service_usd("S3"))
    assert b.total_usd == pytest.approx(0.1 + 5.0)
    assert [(op, round(usd, 4)) for op, usd in c.more_than(b)] == [
        ("S3 PutObject", 0.5), ("S3 HeadObject", 0.04), ("SQS GetQueueAttributes", 0.004),
        ("S3 HeadBucket", 0.0008)]
    assert b.more_than(c) == []


def test_idle_consumers_pay_for_their_long_polls_and_depth_samples() -> None:
    reference = Idle(receivers=8, wait_seconds=20)
    shelver = Idle(receivers=2, wait_seconds=20, samplers=2, sample_seconds=15)

    assert reference.requests_per_hour() == {"SQS ReceiveMessage": 1440,
                                             "SQS GetQueueAttributes": 0}
    # A sample due after 15 s waits for the 20 s poll to end: two calls every 20 s.
    assert shelver.requests_per_hour() == {"SQS ReceiveMessage": 360,
                                           "SQS GetQueueAttributes": 720}
    assert Idle(1, 5, 1, 15).requests_per_hour()["SQS GetQueueAttributes"] == 480
    # 730 hours: 1,051,200 receives at $0.50 a million; 262,800 at $0.50 and 525,600 at $0.40.
    assert reference.usd_per_month() == pytest.approx(0.5256)
    assert shelver.usd_per_month() == pytest.approx(0.1314 + 0.21024)
    with pytest.raises(ValueError, match="long polls"):
        Idle(receivers=1, wait_seconds=0)
    rows = idle_table(8, 20, Settings(consumers=2, wait_time_seconds=20,
                                      queue_sample_seconds=15)).splitlines()
    assert rows[2] == "| B reference, 8 threads | 1440 | 0 | 0.53 |"
    # One consumer samples the depths, whatever CONSUMERS is.
    assert rows[3] == "| C Shelver, defaults (2 consumers) | 360 | 360 | 0.24 |"


def test_the_cost_table_says_what_shelver_pays_more_for() -> None:
    runs = {"B": drain_result("B", 300, 2.0, requests=REFERENCE),
            "C": drain_result("C", 400, 2.0, requests=SHELVER)}

    table = cost_table(runs).splitlines()

    assert table[2].startswith("| B | 0.10 | 5.00 | 5.10 | 1.00x | - |")
    assert table[3].startswith("| C | 0.10 | 5.54 | 5.64 | 1.11x | S3 PutObject +$0.500, ")
    explained = pays_for(runs).splitlines()
    assert explained[0].startswith("- `S3 PutObject` (+$0.500 per million books): a later ")
    assert len(explained) == 4 and "not explained" not in pays_for(runs)


def results(aws_c: float = 450, bill_c: dict[str, int] = SHELVER) -> Results:
    runs = {name: dataclasses.replace(drain_result(name, rate, 2.0, cpu_seconds=cpu),
                                      config=config)
            for name, rate, cpu, config in [
                ("A", 150, 3.0, {"threads": "1"}), ("B", 300, 1.8, {"threads": "8"}),
                ("C", 400, 0.8, {"CONSUMERS": "2", "CONSUMER_THREADS": "4"}),
                ("D", 380, 0.9, {"CONSUMERS": "2", "CONSUMER_THREADS": "8"})]}
    aws_like = AwsLikeResult(Latencies(), {
        "B": drain_result("B", 300, 2.0, threads="8"),
        "C": drain_result("C", aws_c, 2.0, CONSUMERS="2", CONSUMER_THREADS="4")}, [])
    bill = {"10% later versions": {"B": drain_result("B", 300, 2.0, requests=REFERENCE),
                                   "C": drain_result("C", 400, 2.0, requests=bill_c)}}
    fast = Percentiles(10, 5.0, 9.0, 10.0)
    return Results(runs, [], LatencyResult(20.0, fast, 10.0, 0), fast, aws_like=aws_like,
                   bill=bill)


def test_the_targets_are_for_real_aws_not_for_d_against_the_emulator() -> None:
    met = {t.what: t.met for t in targets(results(aws_c=450, bill_c=REFERENCE))}
    assert not any(what.startswith("D ") for what in met)
    assert met["C throughput vs B, AWS-like latency"]  # 1.5x
    assert met["C's bill per million books vs B's (10% later versions)"]

    missed = {t.what: t for t in targets(results(aws_c=449, bill_c=SHELVER))}
    assert not missed["C throughput vs B, AWS-like latency"].met
    bill = missed["C's bill per million books vs B's (10% later versions)"]
    assert (bill.met, bill.measured) == (False, "1.11x ($5.64)")


def test_per_core_is_books_over_consumer_cpu_seconds() -> None:
    rows = per_core_table(results()).splitlines()
    # C: 1000 books for 0.8 s of consumer CPU.
    assert "| C | 0.80 | 1250 | 0.80 |" in rows
    assert "| B (AWS-like latency) | 1.00 | 1000 | 1.00 |" in rows


def test_counting_proxies_add_no_latency_and_keep_a_journal() -> None:
    proxy = COUNTING.proxy("http://127.0.0.1:9", COUNTING.sqs_ms)
    assert (proxy.delay_seconds, proxy.jitter_seconds, proxy.journal) == (0, 0, True)


def test_the_proxies_answer_keep_alive_clients_without_nagles_delay(
        empty_moto_server: str) -> None:
    # The proxy writes an answer's head and body apart. With Nagle's algorithm on, the body
    # waits for the client's ACK of the head, which a keep-alive client delays (40 ms on Linux):
    # a GET took 46 ms through a proxy adding nothing, 3 ms with TCP_NODELAY, so the AWS-like
    # part's "10 ms" SQS requests (answered with a body) took about 50, and the naive loop
    # drained at 7 msg/s through proxies that were only to count its requests.
    with COUNTING.proxy(empty_moto_server, COUNTING.s3_ms) as proxy:
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        client.request("GET", "/")  # moto answers ListBuckets
        client.getresponse().read()
        with proxy._lock:
            accepted = list(proxy._connections)
        nodelay = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted]
        client.close()
    assert nodelay == [1]


def test_the_sweeps_and_the_workload_are_options() -> None:
    options, _ = parse_args(["--quick", "--update-every", "0", "--aws-like-sweep", "2x4,4x16",
                             "--no-bill", "--only", "aws-like"])
    assert (options.update_every, options.aws_like_sweep, options.bill, options.only) == (
        0, ((2, 4), (4, 16)), False, "aws-like")
    assert options.sweep == ((1, 4), (2, 8))  # --quick's
    for wrong in ("2x", "0x4", "2x4,x"):
        with pytest.raises(SystemExit):
            parse_args(["--sweep", wrong])


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
