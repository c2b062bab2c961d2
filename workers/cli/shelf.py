"""`shelver ls [GENRE] [--prefix TEXT]` and `shelver show TITLE`: what landed in the buckets.

Keys are found as the consumers write them: a genre's destination (workers/destinations.py: its
bucket, and its key prefix once the settings carry it), then the book's key by the key rule
(workers/books/keys.py). Objects
under the prefix `.shelver-check/` (the probes of `shelver check`) are no books, and not listed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from workers.books.keys import object_key
from workers.cli.session import CommandError, Session
from workers.destinations import Destination, destinations

PROBE_PREFIX = ".shelver-check/"
# The metadata a book's file carries (README, "Where books go"), in the order shown.
METADATA = ("book-id", "message-id", "message-group", "sequence-number")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ls = commands.add_parser(
        "ls", help="list the books stored, of every genre or one",
        description="List the book files of each genre's bucket (under its key prefix): key, "
                    "size, last modified.")
    ls.add_argument("genre", nargs="?", help="only this genre (default: every genre)")
    ls.add_argument("--prefix", default="",
                    help="only keys starting with this (after the genre's key prefix)")
    ls.set_defaults(run=list_books)
    show = commands.add_parser(
        "show", help="print a stored book and its metadata",
        description="Print the file of the book with this title (its key by the key rule), "
                    "with its metadata, from every genre that has it.")
    show.add_argument("title", help="the book's title, as in the message")
    show.add_argument("--genre", help="only this genre")
    show.add_argument("--id", dest="book_id",
                      help="the book's id: also finds a different book of the same title, "
                           "filed under the alternate key <title>~<id>.json")
    show.set_defaults(run=show_book)


def genre_destinations(session: Session, genre: str | None) -> list[Destination]:
    """The genres' destinations as the consumers use them; one genre's if named."""
    # Each genre's key prefix comes with the destinations' wiring into the settings (issue
    # 18): until then the consumers write at each bucket's root, and so this looks there.
    every = destinations(session.settings.genre_buckets)
    if genre is None:
        return list(every.values())
    found = every.get(genre.strip().lower())
    if found is None:
        raise CommandError(f"no genre {genre!r} in GENRE_BUCKETS (it has "
                           f"{', '.join(sorted(every))})")
    return [found]


def _objects(session: Session, destination: Destination, prefix: str) -> Iterator[dict[str, Any]]:
    pages = session.s3.get_paginator("list_objects_v2").paginate(
        Bucket=destination.bucket, Prefix=destination.key_prefix + prefix)
    for page in pages:
        for item in page.get("Contents", []):
            if not item["Key"][len(destination.key_prefix):].startswith(PROBE_PREFIX):
                yield item


def list_books(args: argparse.Namespace, session: Session) -> int:
    for destination in genre_destinations(session, args.genre):
        count = 0
        for item in _objects(session, destination, args.prefix):
            print(f"{destination.genre}\t{item['Key']}\t{item['Size']}\t"
                  f"{item['LastModified'].isoformat(timespec='seconds')}")
            count += 1
        print(f"{count} book(s) in s3://{destination.bucket}/{destination.key_prefix}"
              f"{args.prefix}", file=sys.stderr)
    return 0


def _get(session: Session, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        answer: dict[str, Any] = session.s3.get_object(Bucket=bucket, Key=key)
    except session.s3.exceptions.NoSuchKey:
        return None
    return answer


def show_book(args: argparse.Namespace, session: Session) -> int:
    try:
        keys = [object_key(args.title)]
        if args.book_id:
            keys.append(object_key(args.title, args.book_id))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    shown = 0
    for destination in genre_destinations(session, args.genre):
        for key in keys:
            answer = _get(session, destination.bucket, destination.key(key))
            if answer is None:
                continue
            metadata = answer.get("Metadata", {})
            if args.book_id and key == keys[0] and metadata.get("book-id") != args.book_id:
                continue  # another book of that title: its file is under the alternate key
            print(f"s3://{destination.bucket}/{destination.key(key)}  (genre "
                  f"{destination.genre}, {answer['ContentLength']} bytes, last modified "
                  f"{answer['LastModified'].isoformat(timespec='seconds')})")
            for name in METADATA:
                print(f"  {name:<16} {metadata.get(name, '-')}")
            sys.stdout.write(answer["Body"].read().decode("utf-8", "replace") + "\n")
            shown += 1
            break
    if not shown:
        where = ", ".join(f"s3://{d.bucket}/{d.key(keys[-1])}"
                          for d in genre_destinations(session, args.genre))
        raise CommandError(f"no book titled {args.title!r}"
                           f"{f' with id {args.book_id!r}' if args.book_id else ''}: "
                           f"looked for {where}")
    return 0
