"""Book records: decoding and validating a message body, and routing it to its genre's bucket.

A body must be a JSON object with no key repeated within any object, at any depth: orjson (like
Python) keeps the last of two equal keys and many readers keep the first, so such a file would
mean one thing to Shelver and another to its readers.  Keys are compared after unescaping
(``"\\u0074itle"`` is ``"title"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


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
