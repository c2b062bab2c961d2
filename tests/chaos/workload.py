"""The chaos workload: books in several versions over many message groups, poison interleaved.

Each message group is a sequence sent in order. A group carries a few books at a time, and each
book comes in several versions (same id and title, a higher ``version`` and new content each
time) interleaved with the group's other books, so only the group's order decides which version
ends up as the file. A share of the messages is poison: one of the invalid forms Shelver must
dead-letter, each with the reason it must carry.

Every message has its own body, so the ETag of an S3 object version (the MD5 of its body) names
the one message that wrote it: the checks read S3's version listing and never GET an object.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import orjson

from workers.books import object_key

GENRES = ("scifi", "romance")
# A book gets a new version until it has this many; then the group starts another book.
MAX_VERSIONS = 4
# Books of a group that are "open" (may still get versions) at any time: they interleave.
OPEN_BOOKS = 3

# The invalid forms, each with the dead-letter reason Shelver must give it.
_POISON: tuple[tuple[str, Callable[[str], bytes]], ...] = (
    ("not_json", lambda tag: f"chaos poison {tag}: {{not json".encode()),
    ("not_object", lambda tag: orjson.dumps(["chaos poison", tag])),
    ("missing_field", lambda tag: orjson.dumps({"id": tag, "genre": "scifi"})),
    ("wrong_type", lambda tag: orjson.dumps({"id": tag, "title": 42, "genre": "romance"})),
    ("unknown_genre", lambda tag: orjson.dumps({"id": tag, "title": f"Poison {tag}",
                                                "genre": "horror"})),
)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Record:
    """One message of the workload. Valid books have a key; poison has a reason instead."""

    group: str
    body: bytes
    genre: str = ""
    key: str = ""
    version: int = 0  # 1, 2, ... within its book (0 for poison)
    reason: str = ""  # poison only: the shelver-reason the DLQ copy must carry

    @property
    def poison(self) -> bool:
        return bool(self.reason)

    @cached_property
    def etag(self) -> str:
        return md5_hex(self.body)


ObjectId = tuple[str, str]  # (genre, key)


@dataclass(frozen=True)
class Workload:
    records: tuple[Record, ...]  # in sending order; each group's records in its own order
    groups: int

    @cached_property
    def valid(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if not r.poison)

    @cached_property
    def poison(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.poison)

    @cached_property
    def final(self) -> dict[ObjectId, Record]:
        """The last version of every book: what each file must hold in the end."""
        last: dict[ObjectId, Record] = {}
        for r in self.valid:
            last[(r.genre, r.key)] = r
        return last

    @cached_property
    def by_etag(self) -> dict[str, Record]:
        return {r.etag: r for r in self.valid}

    def pairs(self) -> list[tuple[str, bytes]]:
        """(group, body) in sending order, as `Aws.send` takes them."""
        return [(r.group, r.body) for r in self.records]


@dataclass
class _OpenBook:
    book_id: str
    title: str
    genre: str
    versions: int = 0


def build_workload(messages: int, groups: int, poison_share: float, run: str,
                   seed: int = 0) -> Workload:
    """`messages` records spread evenly over `groups` groups, sent interleaved round-robin."""
    rng = random.Random(seed)
    per_group: list[list[Record]] = [[] for _ in range(groups)]
    opened = 0
    for g in range(groups):
        group = f"chaos-{g}"
        books: list[_OpenBook] = []
        for position in range(messages // groups + (g < messages % groups)):
            tag = f"{run}-{g}-{position}"
            if rng.random() < poison_share:
                reason, make = rng.choice(_POISON)
                per_group[g].append(Record(group, make(tag), reason=reason))
                continue
            if len(books) < OPEN_BOOKS and (not books or rng.random() < 0.4):
                opened += 1
                # No spaces: LocalStack's ListObjectVersions restarts from the first page when
                # its key marker holds one, so a large versioned bucket could not be listed.
                books.append(_OpenBook(f"{run}-book-{opened}", f"Chaos-{run}-{opened}",
                                       GENRES[opened % len(GENRES)]))
            book = rng.choice(books)
            book.versions += 1
            body = orjson.dumps({
                "id": book.book_id, "title": book.title, "author": "John Doe", "year": "1984",
                "genre": book.genre, "version": book.versions, "group": group,
                "summary": f"Version {book.versions} of {book.title}, message {tag}.",
            })
            per_group[g].append(Record(group, body, book.genre, object_key(book.title),
                                       book.versions))
            if book.versions == MAX_VERSIONS:
                books.remove(book)
    # Round-robin across groups: each batch mixes groups, as independent producers would.
    longest = max((len(records) for records in per_group), default=0)
    ordered = [records[i] for i in range(longest) for records in per_group if i < len(records)]
    return Workload(tuple(ordered), groups)
