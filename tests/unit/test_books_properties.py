"""Properties of `decode_book` and `object_key`, checked with hypothesis.

The runs are derandomized (the same examples on every run, no example database), bounded, and
take a few seconds: `make test` stays quick and cannot turn red by chance. The invariants are
checked against oracles written here, independently of workers/books/. The coverage-guided
search for what these miss is `make fuzz` (bench/fuzz_books.py, outside CI).
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workers.books.decode import InvalidBook, decode_book
from workers.books.keys import object_key

GENRES = {"scifi": "scifi-books", "romance": "romance-books"}

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# JSON trees cost hypothesis about 10 ms each to make on a loaded 2-core machine.
JSON_PROPERTY = settings(PROPERTY, max_examples=100)


# --- the key rule's invariants, stated independently --------------------------------------

_KEPT_FORMAT = {"\u200c", "\u200d"} | {chr(c) for c in range(0xE0020, 0xE0080)}


def is_noncharacter(ch: str) -> bool:
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def is_unsafe(ch: str) -> bool:
    """Not allowed in a key: slashes, controls, invisible formatting, surrogates, noncharacters."""
    category = unicodedata.category(ch)
    return (ch in "/\\" or is_noncharacter(ch)
            or (category in {"Cc", "Cf", "Zl", "Zp", "Cs"} and ch not in _KEPT_FORMAT))


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# Characters the rule treats specially, and their look-alikes once replaced.
_TRICKY = [*"ab_/\\~.-0f \n\x7f\u200b\u200d\u202e\ufeff\ufdd0\ufffe\uffff",
           "\U0001fffe", "\U0010ffff", "\ud800", "📚", "é", "\U000e0041"]
_LOOK_ALIKES = ["/\\_\n\x7f\u200b\u202e\ufeff\ufdd0\ufffe\uffff\ud800", "._", "~_"]

tricky_texts = st.text(st.sampled_from(_TRICKY), min_size=1, max_size=12)
any_texts = st.text(st.characters(exclude_categories=()), min_size=1, max_size=40)
# Long enough to be cut: titles past the key's 1,024 bytes, ids past their 200.
long_texts = st.builds(
    lambda unit, count, tail: unit * count + tail,
    st.sampled_from(["x", "é", "日", "📚", "/", "~", "a~"]),
    st.integers(min_value=40, max_value=1100),
    st.text(st.sampled_from(_TRICKY), max_size=3),
)
texts = st.one_of(tricky_texts, any_texts, long_texts)
ids = st.none() | texts


@PROPERTY
@given(title=texts, book_id=ids)
def test_every_key_obeys_the_rule(title: str, book_id: str | None) -> None:
    key = object_key(title, book_id)
    encoded = key.encode("utf-8")  # valid UTF-8: raises on a lone surrogate
    assert len(encoded) <= 1024
    assert key.endswith(".json") and not key.startswith(".")
    assert [ch for ch in key if is_unsafe(ch)] == []
    assert object_key(title, book_id) == key  # deterministic


# Titles the rule must leave alone: no unsafe character (Cn, unassigned, holds the
# noncharacters), no leading dot, short enough.
safe_titles = st.text(
    st.characters(exclude_categories=["Cc", "Cf", "Zl", "Zp", "Cs", "Cn"],
                  exclude_characters="/\\", include_characters="\u200c\u200d"),
    min_size=1, max_size=200,
).map(lambda text: text.lstrip(".") or "x")


@PROPERTY
@given(title=safe_titles)
def test_a_title_key_is_the_title_when_nothing_needs_replacing(title: str) -> None:
    assert object_key(title) == title + ".json"


@st.composite
def near_pairs(draw: st.DrawFn) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two (title, id) pairs built to collide if the alternate key were not one-to-one."""
    title, book_id = draw(tricky_texts | long_texts), draw(tricky_texts | long_texts)
    how = draw(st.sampled_from(["look-alike", "re-split", "forged-hash"]))
    if how == "re-split":  # move the '~' that separates title and id
        joined = f"{title}~{book_id}"
        cut = draw(st.sampled_from([i for i, ch in enumerate(joined) if ch == "~"]))
        return (title, book_id), (joined[:cut], joined[cut + 1:])
    if how == "forged-hash":  # a plain-looking text that ends as a hashed part would
        return (title, book_id), (title, book_id.replace("/", "_") + "-" + sha16(book_id))
    # Two characters the rule replaces alike, at one place in the title or in the id.
    group = draw(st.sampled_from(_LOOK_ALIKES))
    one, other = draw(st.lists(st.sampled_from(group), min_size=2, max_size=2, unique=True))
    in_title = draw(st.booleans())
    text = title if in_title else book_id
    at = draw(st.integers(0, len(text)))
    first, second = text[:at] + one + text[at:], text[:at] + other + text[at:]
    if in_title:
        return (first, book_id), (second, book_id)
    return (title, first), (title, second)


@PROPERTY
@given(pairs=near_pairs())
def test_distinct_title_and_id_pairs_never_share_an_alternate_key(
        pairs: tuple[tuple[str, str], tuple[str, str]]) -> None:
    first, second = pairs
    assume(first != second and all(first) and all(second))
    assert object_key(*first) != object_key(*second)


@PROPERTY
@given(first=st.tuples(texts, texts), second=st.tuples(texts, texts))
def test_independent_pairs_never_share_an_alternate_key(
        first: tuple[str, str], second: tuple[str, str]) -> None:
    assume(first != second)
    assert object_key(*first) != object_key(*second)


# --- duplicate keys -----------------------------------------------------------------------
# A JSON value is generated as a tree whose objects are lists of (key, value) pairs, so that it
# can hold duplicates; it is rendered with random escapes and whitespace, so one key has many
# spellings ("title", "\u0074itle", "ti\u0074le"...).


class Obj(list[tuple[str, Any]]):
    """A JSON object as written: its members in order, duplicates and all."""


# Few, short keys: duplicates are common. ':', '"' and '\\' test the check's counting of colons.
# A backslash then "u003a" in a decoded text is written "\\u003a": a colon escape look-alike.
_PIECES = [*'ab:"\\/é📚\u2028', "\\u003a", "u003A"]
keys = st.lists(st.sampled_from(_PIECES), max_size=3).map("".join)
string_values = (st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
                 | st.lists(st.sampled_from(_PIECES), max_size=4).map("".join))
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | string_values
json_trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.lists(st.tuples(keys, children), max_size=5).map(Obj),
    max_leaves=12,
)

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f",
                  "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def render_string(rng: random.Random, text: str) -> str:
    out = ['"']
    for ch in text:
        how = rng.choice(["literal", "literal", "literal", "short", "u"])
        if how == "literal" and ch not in '"\\' and ord(ch) >= 0x20:
            out.append(ch)
        elif how == "short" and ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        else:  # \uXXXX, a surrogate pair beyond the BMP, either case of hex digits
            units = ch.encode("utf-16-be")
            for index in range(0, len(units), 2):
                code = f"{int.from_bytes(units[index:index + 2], 'big'):04x}"
                out.append("\\u" + (code.upper() if rng.random() < 0.5 else code))
    out.append('"')
    return "".join(out)


def render(rng: random.Random, value: Any) -> str:
    """JSON text for a tree, with random escapes and whitespace (hypothesis seeds `rng`)."""
    space = rng.choice(["", "", " ", "\n", "\t", "\r\n "])
    if isinstance(value, Obj):
        members = [render_string(rng, key) + space + ":" + space + render(rng, item)
                   for key, item in value]
        return "{" + space + ("," + space).join(members) + space + "}"
    if isinstance(value, list):
        return "[" + space + ("," + space).join(render(rng, item) for item in value) + "]"
    if isinstance(value, str):
        return render_string(rng, value)
    return orjson.dumps(value).decode()


def has_duplicate(value: Any) -> bool:
    if isinstance(value, Obj):
        names = [key for key, _ in value]
        return len(set(names)) < len(names) or any(has_duplicate(item) for _, item in value)
    if isinstance(value, list):
        return any(has_duplicate(item) for item in value)
    return False


def objects_in(value: Any) -> list[Obj]:
    found = [value] if isinstance(value, Obj) else []
    children = [item for _, item in value] if isinstance(value, Obj) else (
        value if isinstance(value, list) else [])
    for child in children:
        found.extend(objects_in(child))
    return found


def without_duplicates(value: Any) -> Any:
    """The tree with each object's repeated keys dropped (the first kept)."""
    if isinstance(value, Obj):
        seen: dict[str, Any] = {}
        for key, item in value:
            seen.setdefault(key, without_duplicates(item))
        return Obj(seen.items())
    if isinstance(value, list):
        return [without_duplicates(item) for item in value]
    return value


def book(extra: Obj) -> Obj:
    return Obj([("id", "b-1"), ("title", "Dune: Part One"), ("genre", "scifi"),
                *((key, value) for key, value in extra if key not in {"id", "title", "genre"})])


def verdict(body: str | bytes) -> str | None:
    """The InvalidBook reason for body, None if it decodes."""
    try:
        decode_book(body, GENRES)
    except InvalidBook as invalid:
        return invalid.reason
    return None


@st.composite
def trees_and_bodies(draw: st.DrawFn) -> tuple[Any, str]:
    tree = draw(json_trees)
    return tree, render(draw(st.randoms()), tree)


@JSON_PROPERTY
@given(case=trees_and_bodies())
def test_a_body_is_rejected_as_duplicate_key_exactly_when_it_has_one(
        case: tuple[Any, str]) -> None:
    tree, body = case
    reason = verdict(body)
    assert (reason == "duplicate_key") == has_duplicate(tree), (body, reason)
    assert verdict(body.encode("utf-8")) == reason


@st.composite
def rendered_books(draw: st.DrawFn, duplicate: bool) -> str:
    extra = draw(st.lists(st.tuples(keys, json_trees), max_size=3))
    tree = book(without_duplicates(Obj(extra)))
    if duplicate:  # repeat one key of one object, at any depth, anywhere in it
        target = draw(st.sampled_from([obj for obj in objects_in(tree) if obj]))
        key, _ = draw(st.sampled_from(target))
        target.insert(draw(st.integers(0, len(target))), (key, draw(json_trees)))
    return render(draw(st.randoms()), tree)


@JSON_PROPERTY
@given(body=rendered_books(duplicate=True))
def test_a_book_with_a_duplicate_key_is_always_rejected(body: str) -> None:
    assert verdict(body) == "duplicate_key"
    assert verdict(body.encode("utf-8")) == "duplicate_key"


@JSON_PROPERTY
@given(body=rendered_books(duplicate=False))
def test_a_book_without_a_duplicate_key_is_never_rejected(body: str) -> None:
    decoded = decode_book(body, GENRES)
    assert (decoded.id, decoded.title, decoded.bucket) == ("b-1", "Dune: Part One", "scifi-books")
    assert decoded.body == body.encode("utf-8")


@pytest.mark.parametrize("escaped", ["\\u0074itle", "\\u0074\\u0069\\u0074\\u006C\\u0065"])
def test_an_escaped_spelling_is_the_same_key(escaped: str) -> None:
    body = '{"id":"b-1","title":"A","genre":"scifi","' + escaped + '":"B"}'
    assert verdict(body) == "duplicate_key"
