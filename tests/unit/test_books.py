from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from workers.books.decode import Book, InvalidBook, decode_book
from workers.books.keys import MAX_KEY_BYTES, object_key
from workers.settings import parse_genre_buckets

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
    # Not plain: the rule changed the id, so the part gets the hash that keeps it unique.
    odd = "../x/y\\z\n"
    assert object_key("Dune", odd) == "Dune~___x_y_z_-" + sha16(odd) + ".json"
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


# --- duplicate keys ------------------------------------------------------------------------
# A JSON object with a repeated key means different things to different readers (orjson and
# Python keep the last one, many others the first), so Shelver refuses it rather than choose.


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"id":"b-1","title":"A","genre":"scifi","title":"B"}', "title"),
        ('{"id":"b-1","title":"A","genre":"scifi","genre":"romance"}', "genre"),
        ('{"id":"b-1","id":"b-2","title":"A","genre":"scifi"}', "id"),
        ('{"id":"b-1","title":"A","genre":"scifi","pages":1,"pages":1}', "pages"),
        # The same key spelled with escapes: JSON compares keys after unescaping.
        ('{"id":"b-1","title":"A","genre":"scifi","\\u0074itle":"B"}', "title"),
        ('{"id":"b-1","title":"A","genre":"scifi","ti\\u0074le":"B"}', "title"),
        ('{"id":"b-1","title":"A","genre":"scifi","a/b":1,"a\\/b":2}', "a/b"),
        ('{"id":"b-1","title":"A","genre":"scifi","📚":1,"\\ud83d\\udcda":2}', "📚"),
        ('{"id":"b-1","title":"A","genre":"scifi","x:y":1, "x\\u003ay" :2}', "x:y"),
        # Any depth, any value: the file keeps the whole body, so every reader meets it.
        ('{"id":"b-1","title":"A","genre":"scifi","meta":{"isbn":"1","isbn":"2"}}', "isbn"),
        ('{"id":"b-1","title":"A","genre":"scifi","tags":[{"a":1},{"b":1,"b":[]}]}', "b"),
        ('{"id":"b-1","title":"A","genre":"scifi","m":{"n":{"o":{"":1,"":2}}}}', ""),
        # Ambiguity comes first: whatever else is wrong, the reader could not know what it read.
        ('{"title":"A","title":"B"}', "title"),
        ('[{"id":1,"id":2}]', "id"),
    ],
)
def test_a_body_with_a_duplicate_key_is_rejected(body: str, key: str) -> None:
    for raw in (body, body.encode("utf-8")):
        with pytest.raises(InvalidBook) as info:
            decode_book(raw, GENRES)
        assert info.value.reason == "duplicate_key"
        assert repr(key) in info.value.detail


def test_duplicate_key_detail_names_the_object_it_is_in() -> None:
    top = reason_and_detail('{"id":"b-1","title":"A","genre":"scifi","title":"B"}')
    assert top == ("duplicate_key", "key 'title' appears more than once in one object")
    nested = reason_and_detail(
        '{"id":"b-1","title":"A","genre":"scifi","tags":[0,{"x":{"y":1,"y":2}}]}')
    assert nested == ("duplicate_key",
                      "key 'y' appears more than once in one object (at $.tags[1].x)")
    odd = reason_and_detail('{"id":"b-1","title":"A","genre":"scifi","a b":{"k":1,"k":2}}')
    assert odd[1].endswith('(at $["a b"])')


def test_duplicate_key_detail_shortens_a_huge_key() -> None:
    key = "k" * 5000
    reason, detail = reason_and_detail(f'{{"{key}":1,"{key}":2}}')
    assert reason == "duplicate_key"
    assert len(detail) < 300 and detail.startswith("key 'kkk")


@pytest.mark.parametrize(
    "extra",
    [
        '"meta":{"title":"B","genre":"romance"}',  # the same names in another object
        '"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":1}]',
        '"Title":"B","TITLE":"C"',  # keys are case-sensitive
        '"caf\\u00e9":1,"cafe\\u0301":2',  # and not normalized: two different keys
        '"x:y":"1:2","note":"\\"title\\":\\"B\\", ::","u":"\\u003a\\u003A"',
        '"esc":"\\\\u003a","\\\\u0074itle":"a backslash, then u0074itle"',
        '"deep":[[[[{"k":[{"k":{"k":1}}]}]]]]',
    ],
)
def test_a_body_without_a_duplicate_key_is_accepted(extra: str) -> None:
    body = '{"id":"b-1","title":"A","genre":"scifi",' + extra + "}"
    assert decode_book(body, GENRES).title == "A"
    assert decode_book(body.encode("utf-8"), GENRES).title == "A"


def test_deeply_nested_duplicates_are_found_without_recursion() -> None:
    # orjson accepts 1,024 levels; the exact check must not give up where Python's own
    # recursion limit (1,000) would.
    depth = 1020
    inner = '{"k":1,"k":2}'
    body = '{"id":"b-1","title":"A","genre":"scifi","n":' + "[" * depth + inner + "]" * depth + "}"
    assert reason_and_detail(body)[0] == "duplicate_key"
    clean = body.replace('"k":2', '"j":2')
    assert decode_book(clean, GENRES).title == "A"


def reason_and_detail(body: str | bytes) -> tuple[str, str]:
    with pytest.raises(InvalidBook) as info:
        decode_book(body, GENRES)
    return info.value.reason, info.value.detail


# --- noncharacters and alternate keys ------------------------------------------------------


@pytest.mark.parametrize(
    "char",
    ["\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0001ffff", "\U0010fffe",
     "\U0010ffff"],
)
def test_noncharacters_are_replaced(char: str) -> None:
    # S3 lists keys in XML, and XML 1.0 cannot carry U+FFFE/U+FFFF; all 66 noncharacters are
    # "permanently reserved for internal use": none belongs in a key.
    assert object_key(f"a{char}b") == "a_b.json"
    assert object_key(f"{char}.x") == "_.x.json"
    assert object_key("Dune", f"b{char}1").startswith("Dune~b_1-")


@pytest.mark.parametrize("char", ["\ufdcf", "\ufdf0", "\ufffd", "\U0001fffd", "\U00020000"])
def test_characters_next_to_noncharacters_are_kept(char: str) -> None:
    assert object_key(f"a{char}b") == f"a{char}b.json"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a~b", "c"), ("a", "b~c")),  # where does the title end?
        (("T", "x/1"), ("T", "x_1")),  # ids that sanitize alike
        (("T", "x\n1"), ("T", "x_1")),
        (("T", ".x"), ("T", "_x")),
        (("T/", "1"), ("T_", "1")),  # titles that sanitize alike
        (("T", "x/"), ("T", "x_-" + hashlib.sha256(b"x/").hexdigest()[:16])),  # a forged hash
        (("T", "i" * 300), ("T", "i" * 183 + "-" + hashlib.sha256(b"i" * 300).hexdigest()[:16])),
    ],
)
def test_distinct_title_and_id_pairs_never_share_an_alternate_key(
        first: tuple[str, str], second: tuple[str, str]) -> None:
    assert object_key(*first) != object_key(*second)


def test_a_plain_alternate_key_is_unchanged() -> None:
    # Nothing replaced, no '~' in the id, short enough, no hash-like ending: as before.
    assert object_key("Dune", "b-1") == "Dune~b-1.json"
    assert object_key("a~b", "c") == "a~b~c.json"
    assert object_key("Dune", "ид📚") == "Dune~ид📚.json"
