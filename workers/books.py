"""Book records: decoding and validating a message body, genre routing, the object-key rule.

Object-key rule (``object_key``), also documented in the README:

1. Every ``/``, every ``\\`` and every control or invisible format character becomes ``_``:
   Unicode categories Cc (controls), Cf (format, e.g. bidi overrides, BOM, soft hyphen),
   Zl/Zp (line/paragraph separators) and Cs (lone surrogates).  Exceptions, kept as they are
   because emoji and scripts need them: the joiners U+200C/U+200D and the emoji tag characters
   U+E0020-U+E007F.
2. Leading ``.`` characters each become ``_`` (so ``..`` -> ``__``, ``.hidden`` -> ``_hidden``).
3. Nothing else changes: no Unicode normalization, case, whitespace or emoji changes.
4. Key = ``<title part>.json``; for a different book with the same title (``book_id`` given)
   key = ``<title part>~<id part>.json``, the id part sanitized by steps 1-2 as well.
5. Length: the whole key is at most 1024 UTF-8 bytes.  An id part longer than 200 bytes is cut
   to at most 183 bytes and gets ``-`` + the first 16 hex digits of sha256(original id, UTF-8).
   If the key is then longer than 1024 bytes, the title part is cut so that, with ``-`` + the
   first 16 hex digits of sha256(original title, UTF-8) appended, the key is at most 1024 bytes.
   Cuts fall on UTF-8 character boundaries (never inside a multi-byte character); "original"
   means before step 1, so titles differing only in replaced characters still differ.
6. Deterministic: the same inputs always give the same key.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MAX_KEY_BYTES = 1024
MAX_ID_PART_BYTES = 200
KEY_SUFFIX = ".json"
ID_SEPARATOR = "~"
_HASH_CHARS = 16

# Categories that are unsafe or invisible in a key: controls break S3's XML listings and
# terminals; format/separator characters make two different-looking keys look the same.
_REPLACED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Cf characters that are part of ordinary text: emoji ZWJ sequences (family, professions),
# ZWNJ in Persian/Indic words, and tag sequences of subdivision flags.
_KEPT_FORMAT = frozenset({"\u200c", "\u200d"} | {chr(c) for c in range(0xE0020, 0xE0080)})

# S3 bucket naming (the general-purpose subset the operators can type into GENRE_BUCKETS).
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class InvalidBook(Exception):
    """A permanent failure: the message can never become a valid book."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        # One of: not_json, not_object, missing_field, wrong_type, unknown_genre.
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Book:
    id: str
    title: str  # the original title, untouched
    genre: str  # normalized: stripped and lower-cased
    bucket: str  # chosen from the genre mapping
    body: bytes  # the original message body, stored verbatim as the file


def decode_book(body: str | bytes, genre_buckets: Mapping[str, str]) -> Book:
    """Parse and validate one message body; raise ``InvalidBook`` if it can never be stored.

    A JSON ``null`` counts as an absent field: a required field that is null is missing, an
    optional one that is null is accepted.
    """
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson also rejects invalid UTF-8 here, which is what we want: S3 files are UTF-8 JSON.
        raise InvalidBook("not_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InvalidBook("not_object", f"body is a JSON {_json_type(record)}, not an object")

    book_id = _required_string(record, "id")
    title = _required_string(record, "title")
    raw_genre = _required_string(record, "genre")
    for name in ("author", "summary"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidBook(
                "wrong_type", f"field {name!r} must be a string, got {_json_type(value)}"
            )
    year = record.get("year")
    # bool is a subclass of int in Python, but `true` is not a year.
    if year is not None and (isinstance(year, bool) or not isinstance(year, (str, int))):
        raise InvalidBook(
            "wrong_type", f"field 'year' must be a string or an integer, got {_json_type(year)}"
        )

    genre = raw_genre.strip().lower()
    bucket = genre_buckets.get(genre)
    if bucket is None:
        raise InvalidBook("unknown_genre", f"genre {raw_genre!r} has no bucket")
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    return Book(id=book_id, title=title, genre=genre, bucket=bucket, body=raw)


def _required_string(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        raise InvalidBook("missing_field", f"field {name!r} is missing")
    if not isinstance(value, str):
        raise InvalidBook("wrong_type", f"field {name!r} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidBook("missing_field", f"field {name!r} is empty")
    return value


def _json_type(value: object) -> str:
    """Name a parsed value by its JSON type, so details speak the producer's language."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_genre_buckets(spec: str) -> dict[str, str]:
    """Parse ``"scifi=scifi-books, romance=romance-books"`` into ``{genre: bucket}``.

    Genres are stripped and lower-cased (lookups are case-insensitive); bucket names are taken
    as written and must be valid S3 bucket names.
    """
    if not spec.strip():
        raise ValueError("genre mapping is empty: expected genre=bucket pairs separated by commas")
    mapping: dict[str, str] = {}
    for position, entry in enumerate(spec.split(","), start=1):
        item = entry.strip()
        if not item:
            raise ValueError(f"entry {position} is empty (stray comma?)")
        genre_text, sep, bucket_text = item.partition("=")
        if not sep:
            raise ValueError(f"entry {position} {item!r} has no '=': expected genre=bucket")
        genre = genre_text.strip().lower()
        bucket = bucket_text.strip()
        if not genre:
            raise ValueError(f"entry {position} {item!r} has an empty genre")
        if not bucket:
            raise ValueError(f"entry {position} {item!r} has an empty bucket")
        if genre in mapping:
            raise ValueError(f"entry {position}: genre {genre!r} is given more than once")
        if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"entry {position}: {bucket!r} is not a valid S3 bucket name "
                "(3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter "
                "or digit, no '..')"
            )
        mapping[genre] = bucket
    return mapping


def object_key(title: str, book_id: str | None = None) -> str:
    """Return the S3 key of a book file by the rule in the module docstring."""
    if not title:
        raise ValueError("a book title must not be empty")
    title_part = _sanitize(title)
    tail = KEY_SUFFIX
    if book_id is not None:
        if not book_id:
            raise ValueError("a book id must not be empty")
        id_part = _fit(_sanitize(book_id), book_id, MAX_ID_PART_BYTES)
        tail = ID_SEPARATOR + id_part + KEY_SUFFIX
    budget = MAX_KEY_BYTES - len(tail.encode("utf-8"))
    return _fit(title_part, title, budget) + tail


def _sanitize(text: str) -> str:
    chars = [
        "_"
        if ch in "/\\"
        or (unicodedata.category(ch) in _REPLACED_CATEGORIES and ch not in _KEPT_FORMAT)
        else ch
        for ch in text
    ]
    # Leading dots would make "." / ".." path segments or hidden files in synced copies.
    for index, ch in enumerate(chars):
        if ch != ".":
            break
        chars[index] = "_"
    return "".join(chars)


def _fit(part: str, original: str, limit: int) -> str:
    """Return ``part`` if it fits in ``limit`` UTF-8 bytes, else a cut + hash of ``original``.

    The hash is of the original (unsanitized) text so that two long texts that differ only
    after the cut, or only in replaced characters, still get different keys.
    """
    encoded = part.encode("utf-8")
    if len(encoded) <= limit:
        return part
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    suffix = "-" + digest
    # Dropping the bytes of a partial character keeps the cut on a character boundary.
    head = encoded[: limit - len(suffix)].decode("utf-8", "ignore")
    return head + suffix
