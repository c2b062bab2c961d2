"""The benchmark's messages, and the check that a contender filed every one of them in order.

Every contender drains the same messages: `books` records of about 1 KB spread round-robin over
`groups` message groups. Within a group, every `update_every`-th message is a new *version* of a
book sent earlier in the same group (same id and title, new content), so order matters: a
contender that reorders a group leaves an older version as the final file, which the check
reports as stale. Keys are plain ASCII titles, for which every contender's key rule gives
`<title>.json`.

The check needs no GETs: S3 answers a listing with each object's ETag, the MD5 of its body for a
single-part put, and that is compared with the MD5 of the last version sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GENRES = ("scifi", "romance")
BODY_BYTES = 1000
_FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. "

ObjectId = tuple[str, str]  # (genre, key)


@dataclass(frozen=True)
class BenchMessage:
    group: str
    body: str
    genre: str
    key: str


@dataclass(frozen=True)
class Workload:
    messages: tuple[BenchMessage, ...]
    # Per object, the MD5 of every version in the order sent; the last one must win.
    versions: Mapping[ObjectId, tuple[str, ...]] = field(default_factory=dict)
    update_every: int = 0  # make_workload's: the block of a group a later version ends
    lagged: int = 0  # later versions of a book sent in an earlier block (make_workload's lag)

    @property
    def updates(self) -> int:
        return len(self.messages) - len(self.versions)

    def pairs(self) -> list[tuple[str, str]]:
        """(group, body) in sending order, as `tests.support.aws.Aws.send` takes them."""
        return [(m.group, m.body) for m in self.messages]


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _body(book_id: str, title: str, genre: str, version: int, size: int) -> str:
    book: dict[str, Any] = {"id": book_id, "title": title, "author": "John Doe",
                            "year": str(1950 + version), "genre": genre, "version": version,
                            "summary": ""}
    room = max(0, size - len(orjson.dumps(book)))
    book["summary"] = (_FILLER * (room // len(_FILLER) + 1))[:room]
    return orjson.dumps(book).decode()


def make_workload(books: int, groups: int, run: str, update_every: int = 10,
                  size: int = BODY_BYTES, lag: int = 0) -> Workload:
    """`books` messages over `groups` groups; `update_every` 0 means no updates.

    Message k goes to group k % groups at position p = k // groups; when p % update_every is
    update_every - 1, it is the next version of the book at position
    p - (update_every - 1) - lag * update_every of the same group (without the lag where that
    is before the group's first message), else a new book. With `lag` 0 a version is of the
    first book of its own block of `update_every` messages: as SQS FIFO hands a group out ten
    messages a receive, usually in the same receive as its earlier version, hence to the same
    consumer. With `lag` 1 it is of a book of the block before, usually a receive apart, which
    may go to another consumer (what Shelver's remembered ETags cannot shorten)."""
    messages: list[BenchMessage] = []
    versions: dict[ObjectId, list[str]] = {}
    book_of: dict[int, tuple[str, str, str]] = {}  # message index -> (id, title, genre)
    lagged = 0
    for k in range(books):
        group, position = k % groups, k // groups
        if update_every and position % update_every == update_every - 1:
            back = update_every - 1 + lag * update_every
            if back > position:
                back = update_every - 1
            lagged += back >= update_every
            book_id, title, genre = book_of[k - back * groups]
        else:
            book_id, title, genre = f"{run}-{k}", f"Bench {run} {k}", GENRES[k % len(GENRES)]
        book_of[k] = (book_id, title, genre)
        key = f"{title}.json"
        history = versions.setdefault((genre, key), [])
        body = _body(book_id, title, genre, len(history) + 1, size)
        history.append(md5(body))
        messages.append(BenchMessage(f"group-{group}", body, genre, key))
    return Workload(tuple(messages), {k: tuple(v) for k, v in versions.items()}, update_every,
                    lagged)


@dataclass(frozen=True)
class Correctness:
    expected: int
    stored: int  # objects with the last version's content
    missing: int
    extra: int  # objects under keys no book maps to
    stale: int  # an earlier version won: a group was reordered
    corrupt: int  # content matching no version at all
    dead_lettered: int = 0

    @property
    def ok(self) -> bool:
        return (self.stored == self.expected and not self.missing and not self.extra
                and not self.stale and not self.corrupt and not self.dead_lettered)

    def summary(self) -> str:
        if self.ok:
            return f"ok ({self.stored}/{self.expected})"
        problems = {"missing": self.missing, "extra": self.extra, "stale": self.stale,
                    "corrupt": self.corrupt, "dead-lettered": self.dead_lettered}
        return f"FAILED {self.stored}/{self.expected}: " + ", ".join(
            f"{n} {what}" for what, n in problems.items() if n)


def check(workload: Workload, etags: Mapping[ObjectId, str], dead_lettered: int = 0
          ) -> Correctness:
    """Compare a listing {(genre, key): etag} with the last version of every book."""
    stored = missing = stale = corrupt = 0
    for object_id, history in workload.versions.items():
        etag = etags.get(object_id)
        if etag is None:
            missing += 1
        elif etag.strip('"') == history[-1]:
            stored += 1
        elif etag.strip('"') in history:
            stale += 1
        else:
            corrupt += 1
    extra = sum(1 for object_id in etags if object_id not in workload.versions)
    return Correctness(len(workload.versions), stored, missing, extra, stale, corrupt,
                       dead_lettered)


def list_etags(s3: Any, buckets: Mapping[str, str]) -> dict[ObjectId, str]:
    """{(genre, key): etag} of every object in the genre buckets."""
    etags: dict[ObjectId, str] = {}
    for genre, bucket in buckets.items():
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                etags[(genre, item["Key"])] = item["ETag"]
    return etags
