"""`python -m bench.hot_path_cost`: a consumer's own CPU per book on its hot path, in-process.

The real code from a receive to the batch's delete, with the AWS clients replaced by answers
made in advance: `SqsTransport.receive` (parsing a ReceiveMessage answer of ten new books, each
its own group), `GroupRunner.one` (the process span's place, `BookProcessor.process`, the
store's conditional PutObject), `plan` and `settle` (one DeleteMessageBatch). No network, no
SQS, no S3: what the tracing wiring adds to the code that runs per book, and nothing else.

Run it from two checkouts to compare tracing off with the code before tracing was wired
(`PYTHONPATH=<checkout> python -m bench.hot_path_cost`): it uses only what both have. With
`--traced`, tracing is on (the default sampler, spans encoded as OTLP protobuf and dropped, as
bench/tracing_cost.py does), to put the off figure against the on one.

Prints CPU per book (best of `--repeat` rounds) and Python function calls per book.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

import orjson

from workers.aws.sqs import Message, QueueInfo, SqsTransport
from workers.backoff import Backoff
from workers.books.processor import BookProcessor
from workers.books.store import BookStore
from workers.consumer.batches import GroupRunner
from workers.lease.settle import dead_letter, plan, settle

QUEUE = QueueInfo("https://sqs.us-east-1.amazonaws.com/123456789012/InputQueue.fifo", 30,
                  "https://sqs.us-east-1.amazonaws.com/123456789012/InputQueueDLQ.fifo")
BATCH = 10


class Sqs:
    """ReceiveMessage answers of ten new books each; every delete succeeds."""

    def __init__(self, books: int) -> None:
        self.answers = [{"Messages": [self.raw(n) for n in range(start, start + BATCH)]}
                        for start in range(0, books, BATCH)]
        self.next = 0

    @staticmethod
    def raw(n: int) -> dict[str, Any]:
        body = orjson.dumps({"id": f"book-{n}", "title": f"Book {n}", "author": "John Doe",
                             "year": "1960", "genre": "scifi",
                             "summary": "Lorem ipsum dolor sit amet."}).decode()
        return {"MessageId": f"m-{n}", "ReceiptHandle": f"r-{n}", "Body": body,
                "Attributes": {"MessageGroupId": f"g-{n}", "ApproximateReceiveCount": "1",
                               "SequenceNumber": str(1000 + n), "SentTimestamp": "1700000000000"}}

    def receive_message(self, **params: Any) -> dict[str, Any]:
        answer = self.answers[self.next]
        self.next += 1
        return answer

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in params["Entries"]]}


class Objects:
    """S3: every conditional PutObject of a new key succeeds."""

    def put(self, bucket: str, key: str, body: bytes, **kwargs: Any) -> str | None:
        return '"etag"'

    def head(self, bucket: str, key: str) -> Any:
        raise AssertionError("a new book needs no HeadObject")


def drain(books: int, tracing: Any) -> None:
    sqs = Sqs(books)
    objects: Any = Objects()
    if tracing is not None:
        from workers.aws.s3 import traced_objects

        transport = SqsTransport(sqs, sqs, QUEUE, tracing)
        objects = traced_objects(objects, tracing)
        runner = GroupRunner(BookProcessor(BookStore(objects), {"scifi": "scifi"}).process,
                             lambda result: dead_letter(transport, result), lambda: False,
                             tracing, QUEUE.url)
    else:
        transport = SqsTransport(sqs, sqs, QUEUE)
        runner = GroupRunner(BookProcessor(BookStore(objects), {"scifi": "scifi"}).process,
                             lambda result: dead_letter(transport, result), lambda: False)
    backoff = Backoff(2, 300)
    for _ in range(books // BATCH):
        messages: list[Message] = transport.receive(20, 30)
        results = [runner.one(m) for m in messages]
        settle(transport, plan(results, backoff))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--traced", choices=["off", "100", "1"], default=None,
                        help="wire tracing in: off (workers.tracing.OFF), on at 100%% or 1%%")
    args = parser.parse_args(argv)
    tracing: Any = None
    if args.traced == "off":
        from workers.tracing import OFF

        tracing = OFF
    elif args.traced is not None:
        from bench.tracing_cost import traced

        env = {} if args.traced == "100" else {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                                 "OTEL_TRACES_SAMPLER_ARG": "0.01"}
        tracing, _ = traced(**env)
    drain(BATCH * 10, tracing)  # warm up: imports, caches
    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        drain(args.books, tracing)
        if tracing is not None and tracing.enabled:
            tracing.provider.force_flush()
        best = min(best, time.process_time() - started)
    profile = cProfile.Profile()
    profile.runcall(drain, args.books, tracing)
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    label = args.traced or "as the code defaults"
    print(f"tracing {label}: {best / args.books * 1e6:.1f} µs CPU per book "
          f"(best of {args.repeat} x {args.books}), {calls / args.books:.1f} Python calls per "
          "book")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
