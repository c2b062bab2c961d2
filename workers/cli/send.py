"""`shelver send`: put sample books on the input queue (development, demos, smoke tests)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from workers.aws.sqs import chunks, queue_url
from workers.cli.arguments import int_between
from workers.cli.progress import Progress
from workers.cli.session import CommandError, Session


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send", help="put sample books on the input queue",
        description="Put sample books on the input queue (INPUT_QUEUE unless --queue), spread "
                    "round-robin over genres and message groups.")
    send.add_argument("--count", type=int_between(1), default=10,
                      help="how many books (default 10)")
    send.add_argument("--genres", type=_genre_list, default=None,
                      help="comma-separated genres (default: those of GENRE_BUCKETS)")
    send.add_argument("--groups", type=int_between(1), default=5,
                      help="message groups (default 5)")
    send.add_argument("--queue", default=None, help="queue name or URL (default: INPUT_QUEUE)")
    send.set_defaults(run=send_command)


def _genre_list(raw: str) -> list[str]:
    genres = [genre.strip() for genre in raw.split(",") if genre.strip()]
    if not genres:
        raise argparse.ArgumentTypeError(f"names no genre: {raw!r}")
    return genres


def sample_books(
    count: int, genres: list[str], groups: int, run: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """(group id, book) pairs: books spread round-robin over genres and groups."""
    for n in range(count):
        genre = genres[n % len(genres)]
        yield f"group-{n % groups}", {
            "id": f"{run}-{n}",
            "title": f"Book {run} {n}",
            "author": "John Doe",
            "year": str(1950 + n % 70),
            "genre": genre,
            "summary": "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
        }


def send_books(sqs: Any, queue_url: str, books: list[tuple[str, dict[str, str]]],
               on_batch: Callable[[int], None] | None = None) -> int:
    """Send (group, book) pairs in order, ten per request; `on_batch` gets the count so far."""
    sent = 0
    for batch in chunks(books):
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": orjson.dumps(book).decode(),
                    "MessageGroupId": group,
                    "MessageDeduplicationId": uuid.uuid4().hex,
                }
                for i, (group, book) in enumerate(batch)
            ],
        )
        if response.get("Failed"):
            raise CommandError(f"SQS refused {len(response['Failed'])} message(s) after sending "
                               f"{sent}: {response['Failed'][0]}")
        sent += len(batch)
        if on_batch is not None:
            on_batch(sent)
    return sent


def send_command(args: argparse.Namespace, session: Session) -> int:
    genres = args.genres or list(session.settings.genre_buckets)
    queue = args.queue or session.settings.input_queue
    url = queue_url(session.sqs, queue)
    books = list(sample_books(args.count, genres, args.groups, uuid.uuid4().hex[:8]))
    progress = Progress()
    try:
        sent = send_books(session.sqs, url, books,
                          lambda n: progress.update(f"sent {n} of {len(books)}"))
    finally:
        progress.clear()
    print(f"sent {sent} book(s) to {url} over {min(args.groups, sent)} group(s)")
    return 0
