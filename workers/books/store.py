"""Writing a book into its genre bucket with S3 conditional writes.

The common case (a new title) is one PutObject with ``If-None-Match: *``.  When the key is
taken, the ``book-id`` metadata of the existing file decides: the same book is replaced with
``If-Match: <etag>`` (an update or a redelivery), a different book goes to its alternate key
``object_key(title, id)``.  Conditional writes make this safe against concurrent writers: no
write ever lands on a file that was checked to belong to another book.

A file never goes back to an older version of its book. Each write records its message's group
and SQS sequence number (which only grows within a group) in the file's metadata; a message whose
file already holds this book from the same or a later message of its group is not written again
("superseded"). That is what a redelivery after a crash is: a consumer killed before its batch
delete wrote versions 1 to 4, SQS hands all four out again, and rewriting version 1 would show
readers an old book until version 4 came round again. Across groups SQS promises no order, and
none is imposed.

Decided by group and sequence, never by ETag alone. An ETag names bytes, not a write: with
SSE-S3 (S3's default) it is the MD5 of the body, so two versions of a book with the same bytes (a
record sent again unchanged, or A, B, A) share one, whichever message wrote them, and
``If-Match`` compares nothing else. So an ``If-Match`` put may rest only on a state of the file
that cannot be newer, within this message's group, than this message:

- The full protocol reads the state first: a refused ``If-None-Match`` put, HeadObject, the
  group and sequence compared, then ``If-Match`` on the ETag that HeadObject showed.
- The remembered-owner shortcut (``If-Match`` on the ETag this process's own last write of the
  key answered, one request instead of three) reads nothing, so it is taken only on a message's
  first delivery (``ApproximateReceiveCount`` 1). SQS FIFO hands out a group's messages in
  order, a later one only with or after an earlier one; before message *s* was first received,
  no later message of its group had been received by anyone, and those received with it are
  processed after it, by this consumer. So whatever state of the key has the remembered ETag now
  was written by another group (no order to keep) or by this group at or before *s*: replacing
  it keeps the group's order. A redelivered message was out before, and a later one of its group
  may have been written since with the bytes we remember: consumer P1 wrote seq 5 (body A), P2
  wrote seq 6 (B) and seq 7 (A) and died before its delete, seq 6 comes back to P1, and an
  ``If-Match`` on md5(A) would put seq 6 over seq 7. It takes the full protocol, which finds
  seq 7 and leaves the file alone.

Who else can write the key between our HeadObject and our ``If-Match`` put? Another group: any
order is allowed across groups. Our group only through a request that outlives its sender's hold on
its message, as SQS hands a group with a message in flight to no one else: a consumer stalled past
its visibility lease between two requests (a frozen container, say: its keeper stalls too) while
its message went to another consumer, or a dead consumer's put that reaches S3 late (TCP
retransmits after the process is gone), after its messages were handed back and written again. Such
a late put is refused unless the file holds the very bytes its sender saw. That is the residual: a
late put meeting repeated bytes lands an older message of the group over a newer one (the
shortcut's argument has the same exception: a consumer stalled past its lease still holds a first
delivery). It needs a request delayed by seconds and the same bytes written again within that
delay; no S3 precondition can close it, as PutObject compares only the ETag (not a version id, not
metadata).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import string
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from botocore.exceptions import ClientError

from workers.aws.s3 import S3Objects
from workers.books.decode import Book
from workers.books.keys import MAX_KEY_BYTES, object_key
from workers.destinations import Destination, S3Request, request_headers

MAX_ATTEMPTS = 5
CONTENT_TYPE = "application/json"
# S3 caps all user metadata at 2 KB; an id encoded longer than this is stored as its hash.
MAX_META_ID_CHARS = 1024

# Printable ASCII except '%' (the escape) and space (HTTP trims it at the ends) stays readable.
_META_SAFE = "".join(ch for ch in string.printable if "!" <= ch <= "~" and ch != "%")
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


class KeyConflict(Exception):
    """A permanent failure: both the title key and the alternate key hold other books.

    Alternate keys of different books never coincide (`object_key`), so only a title containing
    '~' that spells another book's alternate key (or a file put there by hand) leads here;
    retrying cannot help, the message needs a human.
    """


class WriteContention(Exception):
    """A transient failure: the key kept changing under us for ``MAX_ATTEMPTS`` rounds."""


class StoreOutcome(enum.Enum):
    """How `BookStore.store` filed a book."""

    CREATED = "created"  # the key was free
    REPLACED = "replaced"  # the key held this book: it now holds this message's version
    # Not written: the key holds this book from the same or a later message of the group.
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class StoredBook:
    bucket: str
    key: str
    outcome: StoreOutcome
    alternate: bool = False  # the key is the book's alternate key, `object_key(title, id)`

    @property
    def written(self) -> bool:
        return self.outcome is not StoreOutcome.SUPERSEDED

    @property
    def reason(self) -> str:
        """How it was filed, as the log field `reason` says it: created, replaced_alternate..."""
        return f"{self.outcome.value}_alternate" if self.alternate else self.outcome.value


@dataclass(frozen=True)
class Origin:
    """The message a write comes from: its group and sequence number order writes of a book."""

    message_id: str
    group: str | None = None
    sequence: int | None = None  # SQS FIFO SequenceNumber
    # SQS's ApproximateReceiveCount of this delivery; None: not known, taken as a redelivery.
    receive_count: int | None = None

    @property
    def first_delivery(self) -> bool:
        """No later message of the group can have been written (the module docstring says why),
        so an ETag this process remembers cannot stand for a newer state of the group."""
        return self.receive_count == 1

    # Cached: a write takes up to three requests (and two keys), each needing these.
    @functools.cached_property
    def encoded_group(self) -> str | None:
        """The group as file metadata holds it (`metadata_id`)."""
        return metadata_id(self.group) if self.group is not None else None

    @functools.cached_property
    def metadata(self) -> dict[str, str]:
        meta = {"message-id": metadata_id(self.message_id)}
        if self.encoded_group is not None and self.sequence is not None:
            meta["message-group"] = self.encoded_group
            meta["sequence-number"] = str(self.sequence)
        return meta


@dataclass(frozen=True)
class _Existing:
    book_id: str | None  # as stored in metadata (encoded form); None if absent
    etag: str
    group: str | None = None  # encoded form, as in metadata
    sequence: int | None = None

    def supersedes(self, origin: Origin) -> bool:
        """Holds its book from the same or a later message of `origin`'s group."""
        return (origin.group is not None and origin.sequence is not None
                and self.sequence is not None and self.group == origin.encoded_group
                and self.sequence >= origin.sequence)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], etag: str) -> _Existing:
        sequence = metadata.get("sequence-number", "")
        return cls(book_id=metadata.get("book-id"), etag=etag,
                   group=metadata.get("message-group"),
                   sequence=int(sequence) if sequence.isdigit() else None)


def metadata_id(value: str) -> str:
    """Encode a value for S3 user metadata, which must be ASCII.

    ASCII stays as it is except '%', space and controls; anything else is percent-encoded
    (decode with ``urllib.parse.unquote``).  Comparisons are made on this encoded form, which is
    deterministic, so over-long ids can be replaced by their hash without ambiguity.
    """
    encoded = quote(value.encode("utf-8", "surrogatepass"), safe=_META_SAFE)
    if len(encoded) > MAX_META_ID_CHARS:
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return encoded


class _NotOurs(enum.Enum):
    """Why `_write_if_ours` did not write a key, unless it was superseded."""

    TAKEN = "taken"  # another book owns it
    CHANGED = "changed"  # it changed between our requests: start the round over


class _Owners:
    """The owner (book id) and ETag of keys this process wrote last, most recent first.

    A later version of a book, on its first delivery, then costs one request (a put with
    If-Match on the remembered ETag) instead of three (a put refused with 412, a HeadObject, the
    If-Match put). A hint, never a decision: stale is harmless (when the bytes changed meanwhile
    the If-Match put fails and the full protocol runs), and a remembered ETag is never used
    where it could stand for a newer write of the message's group (a redelivery), so the hint
    cannot rewind a file.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], _Existing] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str) -> _Existing | None:
        with self._lock:
            return self._entries.get((bucket, key))

    def remember(self, bucket: str, key: str, owner: _Existing) -> None:
        with self._lock:
            self._entries[(bucket, key)] = owner
            self._entries.move_to_end((bucket, key))
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def forget(self, bucket: str, key: str) -> None:
        with self._lock:
            self._entries.pop((bucket, key), None)


@dataclass(frozen=True)
class _Route:
    """A destination as the store uses it: the headers of each request, made once per genre,
    and the bytes the key rule may use after the key prefix."""

    destination: Destination
    put_headers: Mapping[str, str]
    head_headers: Mapping[str, str]

    @classmethod
    def to(cls, destination: Destination) -> _Route:
        return cls(destination, request_headers(destination, S3Request.PUT_OBJECT),
                   request_headers(destination, S3Request.HEAD_OBJECT))

    def key(self, title: str, book_id: str | None = None) -> str:
        """The full key: the prefix, then the key rule's key within what the prefix leaves."""
        prefix = self.destination.key_prefix
        budget = MAX_KEY_BYTES - len(prefix.encode("utf-8"))
        return self.destination.key(object_key(title, book_id, max_bytes=budget))


class BookStore:
    """Files books into S3; safe to share between threads (both `S3Objects` are thread-safe).

    `destinations` (`Settings.destinations`) say, per genre, the key prefix and the headers of
    every request (encryption, storage class, expected owner); a genre without one is written
    at its bucket's root with no extra header."""

    def __init__(self, s3: S3Objects, destinations: Mapping[str, Destination] | None = None,
                 remembered_keys: int = 10_000) -> None:
        self._s3 = s3
        self._routes = {genre: _Route.to(destination)
                        for genre, destination in (destinations or {}).items()}
        self._owners = _Owners(remembered_keys)

    def store(self, book: Book, origin: Origin) -> StoredBook:
        """Write ``book`` and say how; any S3 or network error propagates unchanged."""
        route = self._routes.get(book.genre) or _Route.to(Destination(book.genre, book.bucket))
        for _ in range(MAX_ATTEMPTS):
            stored = self._attempt(book, origin, route)
            if stored is not None:
                return stored
        raise WriteContention(
            f"s3://{book.bucket}/{route.key(book.title)} changed concurrently "
            f"{MAX_ATTEMPTS} times while storing book {book.id!r}"
        )

    def _attempt(self, book: Book, origin: Origin, route: _Route) -> StoredBook | None:
        """One round; None means the key changed between our requests, so start over."""
        key = route.key(book.title)
        own_id = metadata_id(book.id)
        # Only a first delivery may rest on what this process remembers (module docstring). A
        # remembered file that would supersede this message is checked with the full protocol:
        # the remembered state may be gone, and an unwritten book must not rest on a guess.
        known = self._owners.get(book.bucket, key) if origin.first_delivery else None
        if known is not None and known.book_id == own_id and not known.supersedes(origin):
            if self._put(book, key, origin, own_id, route, if_match=known.etag):
                return StoredBook(book.bucket, key, StoreOutcome.REPLACED)
            self._owners.forget(book.bucket, key)  # changed since: take the full protocol
        outcome = self._write_if_ours(book, key, origin, own_id, route)
        if outcome is _NotOurs.CHANGED:
            return None
        if outcome is not _NotOurs.TAKEN:
            return StoredBook(book.bucket, key, outcome)
        # The alternate key is written conditionally too: a title containing '~' could make it
        # another book's file, and we never overwrite those.
        alternate = route.key(book.title, book.id)
        outcome = self._write_if_ours(book, alternate, origin, own_id, route)
        if outcome is _NotOurs.CHANGED:
            return None
        if outcome is _NotOurs.TAKEN:
            raise KeyConflict(
                f"s3://{book.bucket}/{key} and s3://{book.bucket}/{alternate} both belong "
                f"to other books; book {book.id!r} was not stored"
            )
        return StoredBook(book.bucket, alternate, outcome, alternate=True)

    def _write_if_ours(self, book: Book, key: str, origin: Origin, own_id: str, route: _Route
                       ) -> StoreOutcome | _NotOurs:
        """Write `key` if it is free (CREATED) or holds this book (REPLACED), unless it holds
        this book from the same or a later message of the group (SUPERSEDED, nothing written);
        TAKEN if another book owns it; CHANGED if it changed between our requests."""
        if self._put(book, key, origin, own_id, route, if_none_match=True):
            return StoreOutcome.CREATED
        existing = self._head(book.bucket, key, route)
        if existing is None:
            return _NotOurs.CHANGED
        if existing.book_id != own_id:
            return _NotOurs.TAKEN
        if existing.supersedes(origin):
            return StoreOutcome.SUPERSEDED
        if self._put(book, key, origin, own_id, route, if_match=existing.etag):
            return StoreOutcome.REPLACED
        return _NotOurs.CHANGED

    def _put(
        self,
        book: Book,
        key: str,
        origin: Origin,
        own_id: str,
        route: _Route,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> bool:
        """PutObject; False if the precondition failed (the key changed), True on success."""
        try:
            etag = self._s3.put(
                book.bucket, key, book.body, content_type=CONTENT_TYPE,
                metadata={"book-id": own_id, **origin.metadata},
                if_none_match=if_none_match, if_match=if_match, headers=route.put_headers,
            )
        except ClientError as exc:
            if _is_precondition_failure(exc):
                return False
            # If-Match on a key deleted since our HeadObject answers 404 NoSuchKey.
            if if_match is not None and _error_code(exc) == "NoSuchKey":
                return False
            raise
        if etag:
            self._owners.remember(book.bucket, key, _Existing(
                book_id=own_id, etag=etag, group=origin.encoded_group, sequence=origin.sequence))
        return True

    def _head(self, bucket: str, key: str, route: _Route) -> _Existing | None:
        """Owner and ETag of an existing file; None if it was deleted since our put failed."""
        try:
            head = self._s3.head(bucket, key, headers=route.head_headers)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return _Existing.from_metadata(head.metadata, head.etag)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _is_precondition_failure(exc: ClientError) -> bool:
    # 409 alone is not enough: other 409s (e.g. OperationAborted) are real errors.
    return _error_code(exc) in _CONFLICT_CODES or _status(exc) == 412
