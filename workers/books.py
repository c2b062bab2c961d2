"""Book records: decoding and validating a message body, genre routing, the object-key rule.

A body must be a JSON object with no key repeated within any object, at any depth: orjson (like
Python) keeps the last of two equal keys and many readers keep the first, so such a file would
mean one thing to Shelver and another to its readers.  Keys are compared after unescaping
(``"\\u0074itle"`` is ``"title"``).

Object-key rule (``object_key``), also documented in the README:

1. Every ``/``, every ``\\``, every control or invisible format character and every
   noncharacter becomes ``_``: Unicode categories Cc (controls), Cf (format, e.g. bidi
   overrides, BOM, soft hyphen), Zl/Zp (line/paragraph separators) and Cs (lone surrogates), and
   the 66 noncharacters U+FDD0-U+FDEF and U+xFFFE/U+xFFFF in every plane (S3 lists keys in XML,
   which cannot carry U+FFFE or U+FFFF; Unicode reserves all 66 for a program's internal use).
   Exceptions, kept as they are because emoji and scripts need them: the joiners U+200C/U+200D
   and the emoji tag characters U+E0020-U+E007F.
2. Leading ``.`` characters each become ``_`` (so ``..`` -> ``__``, ``.hidden`` -> ``_hidden``).
3. Nothing else changes: no Unicode normalization, case, whitespace or emoji changes.
4. Key = ``<title part>.json``, the title part being the title after steps 1-2.  If that key is
   longer than 1024 UTF-8 bytes, the title part is cut so that, with ``-`` + the first 16 hex
   digits of sha256(original title, UTF-8) appended, the key is 1024 bytes at most.
5. Alternate key, for a different book whose title has the same key:
   ``<title part>~<id part>.json``, at most 1024 UTF-8 bytes.  Each part is the text itself when
   it is *plain*: steps 1-2 leave it unchanged, it does not end in ``-`` and 16 lowercase hex
   digits, it fits (the id in 200 bytes, the title in what the rest of the key leaves) and, for
   the id, it holds no ``~``.  Otherwise the part is the text after steps 1-2 (and, in the id,
   ``~`` -> ``_``), cut to leave room, with ``-`` + the first 16 hex digits of sha256(original
   text, UTF-8) appended.  So the id part never holds a ``~`` (the key's last ``~`` ends the
   title part), a hashed part never equals a plain one, and two different (title, id) pairs
   never share an alternate key, short of a 64-bit hash collision.
6. Cuts fall on UTF-8 character boundaries (never inside a multi-byte character); "original"
   means before step 1, so texts differing only in replaced characters still differ.
7. Deterministic: the same inputs always give the same key.
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
# Replaced whatever their category: path separators, and the 66 noncharacters (category Cn,
# like any unassigned code point, so they need naming).
_REPLACED_CHARS = frozenset(
    {"/", "\\"}
    | {chr(c) for c in range(0xFDD0, 0xFDF0)}
    | {chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF)}
)
# How a hashed part ends: a plain part must not, or it could equal one.
_HASH_ENDING = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}\Z")

# S3 bucket naming (the general-purpose subset the operators can type into GENRE_BUCKETS).
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class InvalidBook(Exception):
    """A permanent failure: the message can never become a valid book."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        # One of: not_json, duplicate_key, not_object, missing_field, wrong_type,
        # unknown_genre.
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
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    # Before anything else: what an ambiguous body holds depends on who reads it.
    _reject_duplicate_keys(raw, record)
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


def _reject_duplicate_keys(raw: bytes, record: object) -> None:
    """Raise ``InvalidBook("duplicate_key")`` if an object in ``raw`` repeats a key.

    ``record`` is orjson's parse of ``raw``, which silently kept the last of equal keys.  The
    cheap exact check counts colons.  Outside strings a colon only ever ends an object member's
    key, so ``raw`` has as many colons as members plus colons in its strings; orjson writes
    ``record`` back with one colon per member it holds and every colon in its strings, those
    spelled ``\\u003a`` in ``raw`` included.  Without duplicates ``record`` holds all of
    ``raw``'s members and strings, and the two counts agree once ``raw``'s escapes are added.
    Each duplicate drops a member (and whatever its value held) from ``record``, so its count
    falls short (``raw``'s is never short of escapes): equal counts prove there is none.  When
    they differ (a duplicate, or a
    ``\\u003a`` that is not an escape, as in ``"\\\\u003a"``), the body is tokenized to find
    and name the key.
    """
    colons = raw.count(b":")
    if b"\\" in raw:  # one memchr: most bodies spell no escape at all
        colons += raw.count(b"\\u003a") + raw.count(b"\\u003A")
    try:
        if orjson.dumps(record).count(b":") == colons:
            return
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
        pass
    duplicate = _first_duplicate_key(raw)
    if duplicate is not None:
        key, where = duplicate
        place = "" if where == "$" else f" (at {where})"
        raise InvalidBook("duplicate_key",
                          f"key {_excerpt(key)!r} appears more than once in one object{place}")


# The tokens of a JSON text that matter for its keys: strings, and the structural characters.
# Numbers and literals hold none of these, so they are skipped.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}:,]', re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class _Container:
    path: str  # where it is, as a JSONPath: $, $.meta, $.tags[2]
    keys: set[str] | None  # the keys seen so far; None for an array
    index: int = 0  # in an array: the position of the current item
    key: str = ""  # in an object: the current member's key


def _first_duplicate_key(raw: bytes) -> tuple[str, str] | None:
    """(key, path of its object) of the first key repeated within one object, or None.

    ``raw`` is valid JSON (orjson parsed it).  Iterative: orjson accepts 1,024 levels of
    nesting, more than Python's recursion limit.
    """
    containers: list[_Container] = []
    string = b""
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token[0] == 0x22:  # '"'
            string = token
        elif token == b":":
            key = string[1:-1].decode("utf-8") if b"\\" not in string else orjson.loads(string)
            top = containers[-1]
            assert top.keys is not None  # a ':' is only ever inside an object
            if key in top.keys:
                return key, top.path
            top.keys.add(key)
            top.key = key
        elif token == b",":
            containers[-1].index += 1
        elif token in (b"{", b"["):
            path = _child_path(containers[-1]) if containers else "$"
            containers.append(_Container(path, set() if token == b"{" else None))
        else:  # '}' or ']'
            containers.pop()
    return None


def _child_path(parent: _Container) -> str:
    if parent.keys is None:
        return f"{parent.path}[{parent.index}]"
    name = _excerpt(parent.key)
    if _NAME.fullmatch(name):
        return f"{parent.path}.{name}"
    return f"{parent.path}[{orjson.dumps(name).decode()}]"


def _excerpt(text: str, limit: int = 80) -> str:
    """A key as a detail shows it: a producer's key can be any length."""
    return text if len(text) <= limit else text[:limit] + "..."


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
    """Return the S3 key of a book file by the rule in the module docstring: the title key, or
    with ``book_id`` the alternate key."""
    if not title:
        raise ValueError("a book title must not be empty")
    if book_id is None:
        budget = MAX_KEY_BYTES - len(KEY_SUFFIX)
        return _fit(_sanitize(title), title, budget) + KEY_SUFFIX
    if not book_id:
        raise ValueError("a book id must not be empty")
    tail = ID_SEPARATOR + _unique_part(book_id, MAX_ID_PART_BYTES, ID_SEPARATOR) + KEY_SUFFIX
    budget = MAX_KEY_BYTES - len(tail.encode("utf-8"))
    return _unique_part(title, budget) + tail


def _sanitize(text: str) -> str:
    chars = [
        "_"
        if ch in _REPLACED_CHARS
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
    """Return ``part`` if it fits in ``limit`` UTF-8 bytes, else `_hashed` ``part``."""
    if len(part.encode("utf-8")) <= limit:
        return part
    return _hashed(part, original, limit)


def _unique_part(text: str, limit: int, reserved: str = "") -> str:
    """A part of an alternate key, one-to-one in ``text``: the text itself when it is plain (the
    rule leaves it alone, it fits, holds no ``reserved`` character and cannot be mistaken for a
    hashed part), else `_hashed`."""
    part = _sanitize(text)
    if (part == text and not any(ch in text for ch in reserved)
            and not _HASH_ENDING.search(text) and len(text.encode("utf-8")) <= limit):
        return text
    for ch in reserved:
        part = part.replace(ch, "_")
    return _hashed(part, text, limit)


def _hashed(part: str, original: str, limit: int) -> str:
    """``part``, cut to leave room, + ``-`` and a hash of ``original``: at most ``limit`` bytes.

    The hash is of the original (unsanitized) text so that two long texts that differ only
    after the cut, or only in replaced characters, still get different keys.
    """
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    suffix = "-" + digest
    # Dropping the bytes of a partial character keeps the cut on a character boundary.
    head = part.encode("utf-8")[: limit - len(suffix)].decode("utf-8", "ignore")
    return head + suffix
