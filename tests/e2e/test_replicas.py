"""Two replicas (separate gunicorn masters) on one queue write the same S3 key at the same moment.

Each replica talks to S3 through its own `FaultProxy`, which adds latency to every S3 call and
keeps a journal of the requests: the latency holds each write open long enough for the other
replica's write of the same key to start meanwhile, and the journals show which replica sent
what, when, and what S3 answered. The two messages of a pair go out together, in different
message groups, so nothing orders them: whichever write reaches S3 first wins the conditional
put, and the other takes the protocol's slow path.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import Exchange, FaultProxy
from workers.books.keys import object_key

# Every S3 call of either replica waits this long in its proxy before it reaches S3.
S3_LATENCY_SECONDS = 0.5
GENRE = "scifi"
# Pairs per round: one SendMessageBatch of first members, then one of their partners. Which
# consumer takes which batch is up to SQS, so a round may go to one replica only; rounds go on
# until both replicas have written one key at the same moment.
ROUND = 10
MIN_ROUNDS = 3
MAX_ROUNDS = 20


@dataclass(frozen=True)
class Pair:
    title: str
    first: bytes
    second: bytes


@dataclass
class Replicas:
    stack: Stack
    proxies: list[FaultProxy]  # one per replica: its journal is that replica's S3 traffic

    def writes(self, key: str) -> list[tuple[int, Exchange]]:
        """(replica, request) for every PutObject of `key` that S3 answered."""
        path = f"/{self.stack.buckets[GENRE]}/{quote(key)}"
        return [(replica, exchange) for replica, proxy in enumerate(self.proxies)
                for exchange in proxy.exchanges()
                if exchange.method == "PUT" and exchange.path == path]

    def raced(self, key: str) -> bool:
        """Both replicas had a write of `key` in flight at the same moment."""
        writes = self.writes(key)
        return any(ra != rb and a.arrived < b.answered and b.arrived < a.answered
                   for ra, a in writes for rb, b in writes)

    def answered(self, method: str, status: int, condition: str = "") -> int:
        """Object requests of both replicas with this method, S3 status and conditional header
        (not the HeadBucket each consumer's CRT client makes once, to learn the bucket's
        region)."""
        return sum(1 for proxy in self.proxies for e in proxy.exchanges()
                   if e.method == method and e.status == status and "/" in e.path.strip("/")
                   and (not condition or condition in e.headers))


@pytest.fixture
def replicas(aws: Aws, aws_env: dict[str, str],
             shelver_factory: ShelverFactory) -> Iterator[Replicas]:
    stack = aws.clone_stack(versioned=True)  # every write of a key stays listed, in order
    proxies: list[FaultProxy] = []
    try:
        for _ in range(2):
            proxies.append(FaultProxy(aws_env["AWS_ENDPOINT_URL"], journal=True,
                                      delay_seconds=S3_LATENCY_SECONDS).start())
        # Ten threads: a consumer writes all ten groups of a received batch at once.
        shelvers = [shelver_factory(stack, AWS_ENDPOINT_URL_S3=proxy.url, CONSUMER_THREADS="10")
                    for proxy in proxies]
        for shelver in shelvers:
            shelver.wait_healthy()
        yield Replicas(stack, proxies)
        for shelver in shelvers:  # before their queue and buckets go
            shelver.stop()
    finally:
        for proxy in proxies:
            proxy.stop()
        aws.delete_stack(stack)


def race(aws: Aws, replicas: Replicas, make: Callable[[int], Pair]) -> tuple[list[Pair], int]:
    """Send rounds of pairs, each message in a group of its own, and let them drain; return
    the pairs and how many of their keys both replicas wrote at the same moment."""
    pairs: list[Pair] = []
    raced = 0
    while len(pairs) < MIN_ROUNDS * ROUND or (not raced and len(pairs) < MAX_ROUNDS * ROUND):
        batch = [make(len(pairs) + i) for i in range(ROUND)]
        aws.send(replicas.stack.input_url,
                 [(f"first-{p.title}", p.first) for p in batch]
                 + [(f"second-{p.title}", p.second) for p in batch])
        wait_until(lambda: aws.drained(replicas.stack.input_url), 60, 0.2,
                   "the input queue to drain")
        pairs += batch
        raced += sum(1 for p in batch if replicas.raced(object_key(p.title)))
    print(f"{raced} of {len(pairs)} keys written by both replicas at the same moment; "
          f"{replicas.answered('PUT', 412)} conditional put(s) refused")
    return pairs, raced


def md5_hex(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def test_one_title_under_two_ids_from_two_replicas_at_once_keeps_both_books(
        aws: Aws, replicas: Replicas) -> None:
    run = uuid.uuid4().hex[:6]

    def make(n: int) -> Pair:
        title = f"Race-{run}-{n}"
        return Pair(title, orjson.dumps(book(f"{run}-{n}-a", title, GENRE, by="a")),
                    orjson.dumps(book(f"{run}-{n}-b", title, GENRE, by="b")))

    pairs, raced = race(aws, replicas, make)

    files = aws.objects(replicas.stack)
    for pair in pairs:
        at_title = files.pop((GENRE, object_key(pair.title)))
        assert at_title in (pair.first, pair.second), f"{pair.title}.json holds neither"
        # Whichever book lost the race is at its alternate key, byte for byte its message.
        other = pair.second if at_title == pair.first else pair.first
        assert files.pop((GENRE, object_key(pair.title, orjson.loads(other)["id"]))) == other
    assert files == {}, f"files nobody expects: {sorted(files)}"
    assert aws.counts(replicas.stack.dlq_url) == (0, 0)
    # The path every pair took: one conditional put on the title refused (412), one HEAD of
    # it naming the other book as owner, one put at the alternate key.
    assert replicas.answered("PUT", 412, "if-none-match") == len(pairs)
    assert replicas.answered("HEAD", 200) == len(pairs)
    assert replicas.answered("PUT", 200, "if-none-match") == 2 * len(pairs)
    assert raced, f"in {len(pairs)} pairs no title was written by both replicas at once"


def test_two_versions_of_one_book_from_two_replicas_at_once_end_as_one_file(
        aws: Aws, replicas: Replicas) -> None:
    """Two versions of one book (same id and title) sent in different message groups.

    SQS FIFO orders messages within a group only: two groups are handed to different
    consumers, here in different replicas, which write concurrently, and whichever write
    reaches S3 last is the file. So the file may end as the older version: cross-group order
    is not promised, by SQS or by Shelver. A producer that wants the last version to win sends
    a book's versions in one group (keyed by its id), as the chaos suite's workload does.
    What is promised: one file at the title key, holding one of the versions, never moved to
    an alternate key (it is the same book) and never dead-lettered as a key conflict; and
    every write S3 kept came from one of the two messages.
    """
    run = uuid.uuid4().hex[:6]

    def make(n: int) -> Pair:
        title = f"Twice-{run}-{n}"
        return Pair(title, orjson.dumps(book(f"{run}-{n}", title, GENRE, version=1)),
                    orjson.dumps(book(f"{run}-{n}", title, GENRE, version=2)))

    pairs, raced = race(aws, replicas, make)

    files = aws.objects(replicas.stack)
    history = aws.object_versions(replicas.stack.buckets[GENRE])
    assert sorted(key for _, key in files) == sorted(object_key(p.title) for p in pairs), \
        "a version was stored under another key"
    for pair in pairs:
        key = object_key(pair.title)
        assert files[(GENRE, key)] in (pair.first, pair.second)
        assert {etag for _, etag in history[key]} == {md5_hex(pair.first), md5_hex(pair.second)}
    assert aws.counts(replicas.stack.dlq_url) == (0, 0)
    # Each title was created once; the other version replaced it with If-Match on the ETag
    # of the file it had found to hold its own book.
    assert replicas.answered("PUT", 200, "if-none-match") == len(pairs)
    assert replicas.answered("PUT", 200, "if-match") == len(pairs)
    assert raced, f"in {len(pairs)} pairs no book was written by both replicas at once"
