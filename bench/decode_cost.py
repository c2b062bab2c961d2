"""`python -m bench.decode_cost`: what decoding a book costs, and the duplicate-key check's part.

`decode_book` parses a body with orjson (which keeps the last of two equal keys without a word)
and then makes sure no object in it repeats a key (workers/books/decode.py:
`_reject_duplicate_keys`).
This times, on one CPU and in-process (no queue, no S3):

  parse      orjson.loads alone
  check      the duplicate-key check alone, on the parsed record (the cheap count; it tokenizes
             the body only when the counts differ: a duplicate, or a "\\\\u003a" in a string)
  tokenize   the exact fallback alone (`_first_duplicate_key`): what a body pays when the count
             cannot decide
  decode     decode_book in full, check included
  stdlib     for scale: json.loads with an object_pairs_hook that refuses duplicates, the
             textbook way to find them

for the benchmark's own books (bench/workload.py: about 1 KB, flat; what docs/benchmarks.md
measures) and a few others a producer may send. Each figure is the process's CPU time over the
best of `--repeat` rounds of `--number` calls (the minimum is the least disturbed by other
processes on a shared machine), in microseconds per book. Figures print as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from bench.workload import _body
from workers.books.decode import _first_duplicate_key, _reject_duplicate_keys, decode_book

GENRES = {"scifi": "scifi-books", "romance": "romance-books"}


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise ValueError("duplicate key")
    return record


def bodies() -> dict[str, bytes]:
    bench = _body("run-1", "Bench run 1", "scifi", 1, 1000).encode()
    rich = orjson.dumps({
        "id": "978-0441013593", "title": "Dune: Deluxe Edition", "genre": "scifi",
        "author": "Frank Herbert", "year": 1965,
        "summary": "Set on the desert planet Arrakis: a story of politics, religion and ecology. "
                   * 8,
        "tags": ["classic", "space opera", "ecology"],
        "meta": {"isbn10": "0441013597", "pages": 896, "publisher": "Ace",
                 "editions": [{"year": 1965, "format": "hardcover"},
                              {"year": 2005, "format": "paperback"}]},
    })
    head = orjson.dumps({"id": "b-1", "title": "Dune", "genre": "scifi"})[:-1]
    padding = b',"summary":"' + b"x" * 900 + b'"}'
    return {
        "benchmark book (1 KB, flat)": bench,
        "rich book (1 KB, nested, colons)": rich,
        "colons escaped as \\u003a": head + b',"note":"at 10\\u003a30 \\u003A"' + padding,
        # A backslash, then u003a: counted as an escape, it is not one, so the body is tokenized.
        "text \\\\u003a (tokenized)": head + b',"note":"\\\\u003a"' + padding,
        "minimal book": b'{"id":"b-1","title":"Dune","genre":"scifi"}',
    }


def per_call_us(call: Callable[[], object], number: int, repeat: int) -> float:
    # CPU time of this process: time spent waiting for a core on a shared machine is not counted.
    timer = timeit.Timer(call, timer=time.process_time)
    return min(timer.repeat(number=number, repeat=repeat)) / number * 1e6


def measure(number: int, repeat: int) -> list[list[str]]:
    rows = []
    for name, raw in bodies().items():
        decode_book(raw, GENRES)  # each is a valid book: the path a book takes is timed
        calls: list[Callable[[], object]] = [
            partial(orjson.loads, raw),
            partial(_reject_duplicate_keys, raw, orjson.loads(raw)),
            partial(_first_duplicate_key, raw),
            partial(decode_book, raw, GENRES),
            partial(json.loads, raw, object_pairs_hook=_refuse_duplicates),
        ]
        figures = [per_call_us(call, number, repeat) for call in calls]
        share = figures[1] / figures[3] * 100
        rows.append([name, str(len(raw)), *(f"{value:.2f}" for value in figures), f"{share:.0f}%"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=5_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=30, help="rounds; the best one counts")
    args = parser.parse_args(argv)
    header = ["body", "bytes", "parse", "check", "tokenize", "decode", "stdlib", "check/decode"]
    print(f"µs of CPU per book, best of {args.repeat} x {args.number} calls; Python "
          f"{platform.python_version()}, orjson {orjson.__version__}, {platform.machine()}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in measure(args.number, args.repeat):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
