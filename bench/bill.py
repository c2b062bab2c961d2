"""Requests per book, by kind, and what they cost per million books at AWS's list prices.

The proxies a counted drain goes through (bench.awslike) keep a journal of every request the
contender sent; `count` turns it into billed requests by operation ("SQS ReceiveMessage",
"S3 PutObject"), and `Bill` those into requests per book and dollars per million books
(bench.prices has the prices).
"""

from __future__ import annotations

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
