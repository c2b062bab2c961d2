"""`make fuzz` (`python -m bench.fuzz_books [libFuzzer options]`): coverage-guided fuzzing of
the decoder and the key rule with atheris (libFuzzer for Python), outside CI.

Each input is either a message body or a (title, id) pair, chosen by its first byte:

  body    ``decode_book(body)`` must return a Book or raise InvalidBook, nothing else; its verdict
          on duplicate keys must be the stdlib's (``json.loads`` with an ``object_pairs_hook``
          that sees every member) wherever the stdlib reads the body; a decoded book's keys
          must obey the rule.
  key     ``object_key(title)`` and ``object_key(title, id)`` must obey the rule (valid UTF-8, at
          most 1,024 bytes, no slash, backslash, control, invisible format character or
          noncharacter, no leading dot, deterministic), and no two different (title, id) pairs
          met in the run may share an alternate key.

A broken invariant stops the run with a traceback and the input saved as
``.run/fuzz/crash-<sha1>`` (replay: ``python -m bench.fuzz_books .run/fuzz/crash-...``). Defaults
(each overridable on the command line): ``-max_total_time=600``, the corpus in
``.run/fuzz/corpus`` (seeded here, kept between runs), a dictionary of JSON tokens and the
books' field names, ``-max_len=4096``. libFuzzer prints ``cov:`` (code edges covered),
``ft:`` (features: edges with hit counts) and ``exec/s`` as it goes, and a summary at the end.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["workers.books.decode", "workers.books.keys"]):
    from workers.books.decode import InvalidBook, decode_book
    from workers.books.keys import object_key

from bench.workload import _body

GENRES = {"scifi": "scifi-books", "romance": "romance-books"}
RUN_DIR = Path(".run/fuzz")
DEFAULTS = {"-max_total_time": "600", "-max_len": "4096", "-artifact_prefix": f"{RUN_DIR}/",
            "-dict": f"{RUN_DIR}/json.dict", "-print_final_stats": "1"}

# libFuzzer dictionary entries: JSON's punctuation and escapes, the fields the decoder reads,
# and characters the key rule replaces (U+FFFE, U+FDD0, U+202E) or keeps (U+200D, an emoji).
TOKENS = [b"{", b"}", b"[", b"]", b":", b",", b'"', b'\\"', b"\\\\", b"\\/", b"\\u",
          b"\\u003a", b"\\u0074", b"\\ud83d\\udcda", b"null", b"true", b"false", b"-0.5e+3",
          b'"id"', b'"title"', b'"genre"', b'"author"', b'"summary"', b'"year"', b'"scifi"',
          b'" SciFi "', b'"romance"', b"~", b"/", b"..",
          *(char.encode() for char in "\ufffe\ufdd0\u202e\u200d📚")]
SEEDS = [
    _body("seed-1", "Seed book", "scifi", 1, 300),
    '{"id":"b-1","title":"Dune: Part One","genre":"scifi","year":1965,"tags":["a",{"k":[1]}]}',
    '{"id":"b-1","title":"A","genre":"scifi","\\u0074itle":"B"}',
    '{"id":"b~1","title":"../a/b\\u0000\\ufffe","genre":" ROMANCE ","meta":{"x:y":"1\\u003a2"}}',
    '{"id":"\\ud83d\\udcda","title":"\\u200d\\u202e.x","genre":"scifi","author":null}',
    # Long enough to be cut and hashed; nested deeper than orjson writes back (254 levels).
    '{"id":"' + "i/" * 130 + '","title":"' + "t~" * 550 + '","genre":"scifi"}',
    '{"id":"b","title":"T","genre":"scifi","n":' + "[" * 300 + '{"k":1,"k":2}' + "]" * 300 + "}",
]

_KEPT_FORMAT = {"\u200c", "\u200d"} | {chr(c) for c in range(0xE0020, 0xE0080)}
_alternates: dict[str, tuple[str, str]] = {}  # alternate key -> the (title, id) that made it
_MAX_REMEMBERED = 500_000


def _unsafe(ch: str) -> bool:
    code = ord(ch)
    return (ch in "/\\" or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE
            or (unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"}
                and ch not in _KEPT_FORMAT))


def check_key(title: str, book_id: str | None) -> str:
    key = object_key(title, book_id)
    assert len(key.encode("utf-8")) <= 1024, (title, book_id, key)
    assert key.endswith(".json") and not key.startswith("."), (title, book_id, key)
    assert not any(_unsafe(ch) for ch in key), (title, book_id, key)
    assert object_key(title, book_id) == key
    return key


def check_alternate(title: str, book_id: str) -> None:
    key = check_key(title, book_id)
    first = _alternates.setdefault(key, (title, book_id))
    assert first == (title, book_id), f"{first} and {(title, book_id)} share {key!r}"
    if len(_alternates) > _MAX_REMEMBERED:
        _alternates.clear()


class _Duplicate(Exception):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise _Duplicate
    return record


def stdlib_sees_duplicate(body: bytes) -> bool | None:
    """The stdlib's verdict, None where it cannot read the body as orjson did."""
    try:
        json.loads(body.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except _Duplicate:
        return True
    except (ValueError, RecursionError):  # nesting past Python's recursion limit
        return None
    return False


def check_body(body: bytes) -> None:
    try:
        book = decode_book(body, GENRES)
    except InvalidBook as invalid:
        if invalid.reason == "not_json":
            return
        expected = stdlib_sees_duplicate(body)
        if expected is not None:
            assert (invalid.reason == "duplicate_key") == expected, (body, invalid)
        return
    assert stdlib_sees_duplicate(body) in (False, None), body
    check_key(book.title, None)
    check_alternate(book.title, book.id)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        check_body(data[1:])
        return
    provider = atheris.FuzzedDataProvider(data[1:])
    title = provider.ConsumeUnicode(provider.ConsumeIntInRange(0, 1200))
    book_id = provider.ConsumeUnicode(provider.ConsumeIntInRange(0, 300))
    if title:
        check_key(title, None)
        if book_id:
            check_alternate(title, book_id)


def _dict_entry(token: bytes) -> str:
    """A token as libFuzzer's dictionary format spells it: printable ASCII, else \\xNN."""
    return "".join(chr(byte) if 0x20 <= byte < 0x7F and byte not in b'"\\' else f"\\x{byte:02x}"
                   for byte in token)


def main(argv: list[str]) -> None:
    corpus = RUN_DIR / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(SEEDS):
        (corpus / f"seed-{number}").write_bytes(b"\x01" + seed.encode("utf-8"))
    (RUN_DIR / "json.dict").write_text("".join(f'"{_dict_entry(token)}"\n' for token in TOKENS))
    given = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("-")}
    options = [f"{name}={value}" for name, value in DEFAULTS.items() if name not in given]
    positional = [arg for arg in argv[1:] if not arg.startswith("-")]
    args = [argv[0], *options, *[arg for arg in argv[1:] if arg.startswith("-")],
            *(positional or [str(corpus)])]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
