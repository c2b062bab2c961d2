from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from workers.books import (
    MAX_KEY_BYTES,
    Book,
    InvalidBook,
    decode_book,
    object_key,
    parse_genre_buckets,
)

GENRES = {"scifi": "scifi-books", "romance": "romance-books"}


def body_of(**fields: Any) -> bytes:
    record: dict[str, Any] = {"id": "b-1", "title": "Dune", "genre": "scifi"}
    record.update(fields)
    return orjson.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()


def reason_of(body: str | bytes) -> str:
    with pytest.raises(InvalidBook) as info:
        decode_book(body, GENRES)
    return info.value.reason


# --- decode_book ---------------------------------------------------------------------------


def test_valid_book_is_decoded_and_routed() -> None:
    raw = body_of(author="Frank Herbert", summary="Spice.", year=1965)
    book = decode_book(raw, GENRES)
    assert book == Book(id="b-1", title="Dune", genre="scifi", bucket="scifi-books", body=raw)


def test_str_body_is_stored_as_utf8_bytes() -> None:
    text = '{"id": "ü", "title": "Ünïcode 📚", "genre": "romance"}'
    book = decode_book(text, GENRES)
    assert book.body == text.encode("utf-8")
    assert book.title == "Ünïcode 📚"
    assert book.bucket == "romance-books"


def test_genre_is_trimmed_and_case_insensitive() -> None:
    book = decode_book(body_of(genre=" SciFi "), GENRES)
    assert book.genre == "scifi"
    assert book.bucket == "scifi-books"


def test_extra_fields_are_kept_verbatim_in_body() -> None:
    raw = b'{"id":"b-1", "title":"  Dune  ", "genre":"scifi", "pages": 412, "tags": ["a"]}'
    book = decode_book(raw, GENRES)
    assert book.body == raw  # byte for byte, including spacing
    assert book.title == "  Dune  "  # the title is not normalized


def test_unknown_genre() -> None:
    with pytest.raises(InvalidBook) as info:
        decode_book(body_of(genre="horror"), GENRES)
    assert info.value.reason == "unknown_genre"
    assert "horror" in info.value.detail


@pytest.mark.parametrize(
    "body",
    [b"not json", b"", b'{"id": "1",', b"\xff\xfe{}", b'{"id": "\xc3\x28"}', "{'id': 1}"],
)
def test_not_json(body: str | bytes) -> None:
    assert reason_of(body) == "not_json"


@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"a string"', b"42", b"null", b"true"])
def test_not_object(body: bytes) -> None:
    assert reason_of(body) == "not_object"


@pytest.mark.parametrize("field", ["id", "title", "genre"])
@pytest.mark.parametrize("value", [_DROP, None, "", "   ", "\t\n"])
def test_required_field_missing_or_blank(field: str, value: object) -> None:
    with pytest.raises(InvalidBook) as info:
        decode_book(body_of(**{field: value}), GENRES)
    assert info.value.reason == "missing_field"
    assert repr(field) in info.value.detail


@pytest.mark.parametrize("field", ["id", "title", "genre", "author", "summary"])
@pytest.mark.parametrize("value", [1, 1.5, True, [], {}])
def test_string_fields_wrong_type(field: str, value: object) -> None:
    with pytest.raises(InvalidBook) as info:
        decode_book(body_of(**{field: value}), GENRES)
    assert info.value.reason == "wrong_type"
    assert repr(field) in info.value.detail


@pytest.mark.parametrize("year", [1965, "1965", "c. 1200", -300, 0])
def test_year_string_or_int_accepted(year: object) -> None:
    assert decode_book(body_of(year=year), GENRES).id == "b-1"


@pytest.mark.parametrize("year", [True, False, 1965.0, [1965], {"y": 1}])
def test_year_bool_float_and_containers_rejected(year: object) -> None:
    with pytest.raises(InvalidBook) as info:
        decode_book(body_of(year=year), GENRES)
    assert info.value.reason == "wrong_type"
    assert "'year'" in info.value.detail


@pytest.mark.parametrize("field", ["author", "summary", "year"])
def test_optional_fields_may_be_absent_or_null(field: str) -> None:
    assert decode_book(body_of(**{field: None}), GENRES).title == "Dune"


def test_invalid_book_carries_reason_and_detail() -> None:
    error = InvalidBook("missing_field", "field 'title' is missing")
    assert (error.reason, error.detail) == ("missing_field", "field 'title' is missing")
    assert "field 'title' is missing" in str(error)


# --- parse_genre_buckets -------------------------------------------------------------------


def test_parse_genre_buckets() -> None:
    assert parse_genre_buckets("scifi=scifi,romance=romance") == {
        "scifi": "scifi",
        "romance": "romance",
    }


def test_parse_genre_buckets_tolerates_whitespace_and_lowercases_genres() -> None:
    spec = "  SciFi = scifi-books ,\n Romance=romance.books-1  "
    assert parse_genre_buckets(spec) == {"scifi": "scifi-books", "romance": "romance.books-1"}


def test_parse_genre_buckets_allows_shared_bucket() -> None:
    assert parse_genre_buckets("a=shelf,b=shelf") == {"a": "shelf", "b": "shelf"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("scifi", "no '='"),
        ("scifi=abc,romance", "no '='"),
        ("=bucket", "empty genre"),
        ("scifi=", "empty bucket"),
        ("scifi=  ", "empty bucket"),
        ("scifi=abc,,romance=def", "entry 2 is empty"),
        ("scifi=abc,", "entry 2 is empty"),
        ("scifi=abc,SciFi=def", "more than once"),
        ("scifi=ab", "not a valid S3 bucket name"),
        ("scifi=" + "a" * 64, "not a valid S3 bucket name"),
        ("scifi=Upper", "not a valid S3 bucket name"),
        ("scifi=under_score", "not a valid S3 bucket name"),
        ("scifi=-abc", "not a valid S3 bucket name"),
        ("scifi=abc.", "not a valid S3 bucket name"),
        ("scifi=a..b", "not a valid S3 bucket name"),
        ("scifi=a=b", "not a valid S3 bucket name"),
    ],
)
def test_parse_genre_buckets_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_genre_buckets(spec)


def test_bucket_name_length_bounds_accepted() -> None:
    assert parse_genre_buckets("x=abc,y=" + "a" * 63) == {"x": "abc", "y": "a" * 63}


# --- object_key ----------------------------------------------------------------------------


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("Dune", "Dune.json"),
        ("Les Misérables", "Les Misérables.json"),
        ("日本語のタイトル", "日本語のタイトル.json"),
        ("Cafe\u0301", "Cafe\u0301.json"),  # decomposed é: kept, not normalized
        ("📚 Books 🐉", "📚 Books 🐉.json"),
        ("👨\u200d👩\u200d👧 family", "👨\u200d👩\u200d👧 family.json"),  # ZWJ sequence intact
        ("a/b/c", "a_b_c.json"),
        ("a\\b", "a_b.json"),
        ("..", "__.json"),
        (".", "_.json"),
        (".hidden", "_hidden.json"),
        ("../../etc/passwd", "___.._etc_passwd.json"),
        ("a.b..c.", "a.b..c..json"),  # only leading dots change
        ("tab\there\nnl\rcr\x00nul\x7fdel", "tab_here_nl_cr_nul_del.json"),
        ("bidi\u202eevil\u2028ls\u2029ps\ufeffbom", "bidi_evil_ls_ps_bom.json"),
        ("\x85next", "_next.json"),  # C1 control
        ("  spaced  ", "  spaced  .json"),
        ("tilde~ok", "tilde~ok.json"),
    ],
)
def test_object_key_rule(title: str, key: str) -> None:
    assert object_key(title) == key


def test_object_key_with_book_id_sanitizes_the_id_too() -> None:
    assert object_key("Dune", "b-1") == "Dune~b-1.json"
    assert object_key("Dune", "../x/y\\z\n") == "Dune~___x_y_z_.json"
    assert object_key("Dune", "ид📚") == "Dune~ид📚.json"


def test_object_key_rejects_empty_inputs() -> None:
    with pytest.raises(ValueError):
        object_key("")
    with pytest.raises(ValueError):
        object_key("Dune", "")


def test_long_title_is_cut_and_hashed() -> None:
    title = "x" * 2000
    key = object_key(title)
    assert len(key.encode("utf-8")) == MAX_KEY_BYTES
    assert key.endswith("-" + sha16(title) + ".json")
    assert key.startswith("x" * 1000)
    assert object_key(title) == key  # deterministic


def test_title_just_fitting_is_not_hashed() -> None:
    title = "y" * (MAX_KEY_BYTES - len(".json"))
    assert object_key(title) == title + ".json"
    longer = title + "y"
    assert object_key(longer).endswith("-" + sha16(longer) + ".json")


def test_long_titles_differing_only_at_the_end_get_different_keys() -> None:
    first, second = "z" * 1999 + "1", "z" * 1999 + "2"
    assert object_key(first) != object_key(second)
    assert object_key(first, "id") != object_key(second, "id")


def test_long_titles_differing_only_in_replaced_chars_get_different_keys() -> None:
    assert object_key("q" * 2000 + "/") != object_key("q" * 2000 + "\\")


def test_emoji_title_is_cut_on_a_character_boundary() -> None:
    title = "📚" * 2000  # 4 bytes each
    key = object_key(title)
    encoded = key.encode("utf-8")
    assert len(encoded) <= MAX_KEY_BYTES
    assert encoded.decode("utf-8") == key  # a valid string, no split character
    head = key.removesuffix("-" + sha16(title) + ".json")
    assert head != key and set(head) == {"📚"}
    # The most whole emoji that fit next to the suffix: (1024 - 5 - 17) // 4.
    assert len(head) == (MAX_KEY_BYTES - 5 - 17) // 4
    assert object_key(title) == key


@pytest.mark.parametrize("char", ["é", "日", "📚"])
def test_mixed_width_cut_never_exceeds_limit(char: str) -> None:
    for pad in range(4):
        title = "a" * pad + char * 1200
        for book_id in (None, "b-1", "i" * 300):
            key = object_key(title, book_id)
            assert len(key.encode("utf-8")) <= MAX_KEY_BYTES
            assert key.endswith(".json")


def test_long_id_is_cut_and_hashed() -> None:
    book_id = "i" * 300
    key = object_key("Dune", book_id)
    id_part = key.removeprefix("Dune~").removesuffix(".json")
    assert len(id_part.encode("utf-8")) <= 200
    assert id_part.endswith("-" + sha16(book_id))
    assert object_key("Dune", "i" * 299 + "j") != key


def test_long_title_and_long_id_fit_together() -> None:
    title, book_id = "t" * 2000, "📚" * 100
    key = object_key(title, book_id)
    assert len(key.encode("utf-8")) <= MAX_KEY_BYTES
    assert "~" in key and key.endswith("-" + sha16(book_id) + ".json")
    assert key.split("~")[0].endswith("-" + sha16(title))
    assert object_key(title, book_id) == key
    assert object_key(title) != key
