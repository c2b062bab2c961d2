"""The contenders Shelver is measured against, in plain boto3.

A, `naive`: the loop most tutorials show: receive one message, put it, delete it, one thread.

B, `Reference`: the best single-process consumer we could write in about sixty lines, standing
for "a competent hand-written consumer": shared, thread-safe clients with a connection pool sized
to the threads; `threads` workers, each long-polling for batches of ten, storing its batch in order
and deleting it with one batch call. That keeps every group in order across workers, because a
FIFO queue hands out none of a group's later messages while earlier ones are in flight; and the
groups of different batches are stored in parallel. On a failed put the worker stops its batch,
deletes what it stored and leaves the rest to reappear, still in order, after the visibility
timeout. No per-batch barrier: a worker never waits for another worker's slow put.
(A single receiver handing each batch's groups to a thread pool, then deleting the batch, was
measured as well while writing this: 1-18% slower in four paired runs, as every batch waits for
its slowest group.)

Both read the standard AWS configuration (AWS_ENDPOINT_URL, AWS_REGION, credentials) and run
until `stop` is set. As processes, for the benchmark, they run until killed:

    python -m bench.contenders reference --queue-url URL --buckets scifi=b1,romance=b2 --threads 8
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)


WAIT_SECONDS = 20  # long poll


@dataclass(frozen=True)
class Target:
    queue_url: str
    buckets: Mapping[str, str]  # genre -> bucket
    wait_seconds: int = WAIT_SECONDS

    def route(self, body: str) -> tuple[str, str]:
        """(bucket, key) of a book: its genre's bucket, `<title>.json`."""
        book = json.loads(body)
        return self.buckets[book["genre"].strip().lower()], f"{book['title']}.json"


def naive(target: Target, stop: threading.Event) -> int:
    """A: receive 1, put, delete 1, one thread. Returns the number of messages handled."""
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    handled = 0
    while not stop.is_set():
        response = sqs.receive_message(QueueUrl=target.queue_url, MaxNumberOfMessages=1,
                                       WaitTimeSeconds=target.wait_seconds)
        for message in response.get("Messages", []):
            bucket, key = target.route(message["Body"])
            s3.put_object(Bucket=bucket, Key=key, Body=message["Body"].encode(),
                          ContentType="application/json")
            sqs.delete_message(QueueUrl=target.queue_url, ReceiptHandle=message["ReceiptHandle"])
            handled += 1
    return handled


class Reference:
    """B: batch receive 10, workers across groups, in-group order kept, batch delete."""

    def __init__(self, target: Target, threads: int = 8) -> None:
        self.target, self.threads = target, threads
        session = boto3.session.Session()
        config = Config(max_pool_connections=threads, retries={"mode": "standard"})
        self.sqs = session.client("sqs", config=config)
        self.s3 = session.client("s3", config=config)

    def run(self, stop: threading.Event) -> int:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="reference") as pool:
            return sum(pool.map(lambda _: self._work(stop), range(self.threads)))

    def _work(self, stop: threading.Event) -> int:
        handled = 0
        while not stop.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.target.queue_url, MaxNumberOfMessages=10,
                WaitTimeSeconds=self.target.wait_seconds).get("Messages", [])
            done = self._store(messages)
            if done:
                self.sqs.delete_message_batch(QueueUrl=self.target.queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done)])
            handled += len(done)
        return handled

    def _store(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store in order up to the first failure; return the messages stored."""
        for index, message in enumerate(messages):
            try:
                bucket, key = self.target.route(message["Body"])
                self.s3.put_object(Bucket=bucket, Key=key, Body=message["Body"].encode(),
                                   ContentType="application/json")
            except (ClientError, BotoCoreError) as exc:
                log.warning("not stored, retried after the visibility timeout: %s", exc)
                return messages[:index]
        return messages


def parse_buckets(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("contender", choices=("naive", "reference"))
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--buckets", required=True, help="genre=bucket,...")
    parser.add_argument("--threads", type=int, default=8, help="reference only")
    args = parser.parse_args(argv)
    target = Target(args.queue_url, parse_buckets(args.buckets))
    stop = threading.Event()  # never set: the benchmark kills the process once it has measured
    if args.contender == "naive":
        naive(target, stop)
    else:
        Reference(target, args.threads).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
