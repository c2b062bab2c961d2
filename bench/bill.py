"""Requests per book, by kind, and what they cost per million books at AWS's list prices.

The proxies a counted drain goes through (bench.awslike) keep a journal of every request the
contender sent; `count` turns it into billed requests by operation ("SQS ReceiveMessage",
"S3 PutObject"), and `Bill` those into requests per book and dollars per million books
(bench.prices has the prices). `Idle` is the other part of a bill: what a consumer asks for an
hour when there is nothing to receive.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bench.prices import billed_requests, price
from tests.support.proxy import Exchange


def count(exchanges: Iterable[Exchange], until: float) -> dict[str, int]:
    """Billed requests by operation ("SQS ReceiveMessage") among the `exchanges` that arrived
    by `until` (monotonic): an SQS call as many requests as its payload has 64 KB chunks (the
    larger of its request's and its answer's body: the messages plus their envelope, so never
    fewer than SQS counts), and no request answered 5xx (S3 bills none; SQS is taken to do the
    same)."""
    counts: Counter[str] = Counter()
    for exchange in exchanges:
        if exchange.operation is None or exchange.arrived > until or exchange.status >= 500:
            continue
        payload = max(exchange.request_bytes, exchange.response_bytes)
        counts[str(exchange.operation)] += billed_requests(exchange.operation.service, payload)
    return dict(counts)


def split(operation: str) -> tuple[str, str]:
    """("SQS", "ReceiveMessage") of "SQS ReceiveMessage"."""
    service, _, name = operation.partition(" ")
    return service, name


@dataclass(frozen=True)
class Bill:
    """The billed requests of a drain of `books` books, and their price."""

    requests: Mapping[str, int]  # by operation, as `count` gives them
    books: int

    def per_book(self, operation: str) -> float:
        return self.requests.get(operation, 0) / self.books

    def usd_per_million_books(self, operation: str) -> float:
        # A million books make per_book million requests, each costing usd_per_million / million.
        return self.per_book(operation) * price(*split(operation)).usd_per_million

    def service_usd(self, service: str) -> float:
        """Per million books, for one service's requests."""
        return sum(self.usd_per_million_books(op) for op in self.requests
                   if split(op)[0] == service)

    @property
    def total_usd(self) -> float:
        """Per million books, every request."""
        return sum(self.usd_per_million_books(op) for op in self.requests)

    def more_than(self, other: Bill) -> list[tuple[str, float]]:
        """The operations this bill pays more for than `other`, and how much more (dollars per
        million books), largest first."""
        extra = [(op, self.usd_per_million_books(op) - other.usd_per_million_books(op))
                 for op in set(self.requests) | set(other.requests)]
        return sorted(((op, usd) for op, usd in extra if usd > 0), key=lambda e: -e[1])


HOURS_A_MONTH = 730  # as AWS prices a month


@dataclass(frozen=True)
class Idle:
    """The requests of a consumer with nothing to receive: one long poll after another in each
    receive loop, and, for Shelver, the queue-depth samples its sampling consumer (one a replica)
    takes before a receive once `sample_seconds` have passed (two calls: the input queue and its
    DLQ)."""

    receivers: int  # receive loops (B: its threads; Shelver: CONSUMERS)
    wait_seconds: int  # the long poll (WAIT_TIME_SECONDS), at least 1
    samplers: int = 0  # consumers sampling the queues (Shelver: 1)
    sample_seconds: float = 15.0  # QUEUE_SAMPLE_SECONDS

    def __post_init__(self) -> None:
        if self.wait_seconds < 1:
            raise ValueError(f"wait_seconds={self.wait_seconds}: an idle consumer's requests "
                             "have a rate only with long polls (at least 1 s)")

    def requests_per_hour(self) -> dict[str, float]:
        # A sample falls due during a long poll and is taken before the next receive.
        every = math.ceil(self.sample_seconds / self.wait_seconds) * self.wait_seconds
        return {"SQS ReceiveMessage": self.receivers * 3600 / self.wait_seconds,
                "SQS GetQueueAttributes": self.samplers * 2 * 3600 / every}

    def usd_per_month(self) -> float:
        return sum(n * HOURS_A_MONTH * price(*split(op)).usd_per_million / 1_000_000
                   for op, n in self.requests_per_hour().items())
