"""The chaos workload: books in several versions over many message groups, poison interleaved.

Each message group is a sequence sent in order. A group carries a few books at a time, and each
book comes in several versions (same id and title, mostly a higher ``version`` and new content)
interleaved with the group's other books, so only the group's order decides which version ends
up as the file. A share of the messages is poison: one of the invalid forms Shelver must
dead-letter, each with the reason it must carry.

Some later versions repeat an earlier version's exact bytes (A, B, A; or A, A: a record sent
again unchanged), as producers do, so an ETag (the MD5 of the body) may stand for several
messages: S3's conditional writes compare only ETags, and a consumer that trusted one could put
an older message of a group over a newer one with the same bytes. The checks
(`tests.chaos.engine.StorageCheck`) name each object version by its ETag where that is one
message's, and by the `message-id` metadata Shelver wrote with it where it is not.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import orjson

from workers.books.keys import object_key

GENRES = ("scifi", "romance")
# A book gets a new version until it has this many; then the group starts another book.
MAX_VERSIONS = 4
# Books of a group that are "open" (may still get versions) at any time: they interleave.
OPEN_BOOKS = 3
# Share of later versions that repeat an earlier version's bytes: the one before the previous
# (A, B, A) when there is one, else the previous (A, A).
REPEAT_SHARE = 0.25

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
    version: int = 0  # its place among its book's messages, 1, 2, ... (0 for poison)
    reason: str = ""  # poison only: the shelver-reason the DLQ copy must carry
    repeats: int = 0  # the version whose exact bytes this one repeats (0: new bytes)

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
    def by_etag(self) -> dict[str, tuple[Record, ...]]:
        """The valid messages with each body's ETag: one, or a book's versions that repeat
        the same bytes, in sending order."""
        found: dict[str, tuple[Record, ...]] = {}
        for r in self.valid:
            found[r.etag] = (*found.get(r.etag, ()), r)
        return found

    def pairs(self) -> list[tuple[str, bytes]]:
        """(group, body) in sending order, as `Aws.send` takes them."""
        return [(r.group, r.body) for r in self.records]


@dataclass
class _OpenBook:
    book_id: str
    title: str
    genre: str
    bodies: list[bytes] = field(default_factory=list)  # of its versions so far, in order

    @property
    def versions(self) -> int:
        return len(self.bodies)


def build_workload(messages: int, groups: int, poison_share: float, run: str,
                   seed: int = 0) -> Workload:
    """`messages` records spread evenly over `groups` groups, sent interleaved round-robin."""
    rng = random.Random(seed)
    # Its own generator: which versions repeat bytes leaves the books, versions and poison as
    # they were for a seed, so runs before and after repeats came in have the same shape.
    repeats_rng = random.Random(seed + 1)
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
            version = book.versions + 1
            repeats = 0
            if book.versions and repeats_rng.random() < REPEAT_SHARE:
                repeats = max(version - 2, 1)
                body = book.bodies[repeats - 1]
            else:
                body = orjson.dumps({
                    "id": book.book_id, "title": book.title, "author": "John Doe",
                    "year": "1984", "genre": book.genre, "version": version, "group": group,
                    "summary": f"Version {version} of {book.title}, message {tag}.",
                })
            book.bodies.append(body)
            per_group[g].append(Record(group, body, book.genre, object_key(book.title),
                                       version, repeats=repeats))
            if book.versions == MAX_VERSIONS:
                books.remove(book)
    # Round-robin across groups: each batch mixes groups, as independent producers would.
    longest = max((len(records) for records in per_group), default=0)
    ordered = [records[i] for i in range(longest) for records in per_group if i < len(records)]
    return Workload(tuple(ordered), groups)
