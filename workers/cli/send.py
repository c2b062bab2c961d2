"""`shelver send`: put sample books on the input queue (development, demos, smoke tests)."""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from workers import tracing
from workers.aws.sqs import chunks, queue_url
from workers.cli.arguments import int_between
from workers.cli.progress import Progress
from workers.cli.session import CommandError, Session

# How long `send` waits at its end for its spans to be exported.
SPAN_FLUSH_SECONDS = 10.0


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
               on_batch: Callable[[int], None] | None = None,
               traces: tracing.Tracing = tracing.OFF) -> tuple[int, list[str]]:
    """Send (group, book) pairs in order, ten per request; `on_batch` gets the count so far.
    With tracing on, each book is the root of a trace of its own (a create span, whose context
    it carries) and each request a send span linked to its books'. The count sent, and the
    books' trace ids (none when off)."""
    sent = 0
    trace_ids: list[str] = []
    for batch in chunks(books):
        created = [traces.create(queue_url) for _ in batch]
        entries = [
            created[i].outgoing().apply({
                "Id": str(i),
                "MessageBody": orjson.dumps(book).decode(),
                "MessageGroupId": group,
                "MessageDeduplicationId": uuid.uuid4().hex,
            })
            for i, (group, book) in enumerate(batch)
        ]
        carriers = [book_span.carrier() for book_span in created]
        trace_ids += [c.traceparent.split("-")[1] for c in carriers if c and c.traceparent]
        with traces.send(queue_url, carriers, len(batch)) as span:
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if response.get("Failed"):
                span.failed(CommandError(f"{len(response['Failed'])} message(s) refused"))
        if response.get("Failed"):
            raise CommandError(f"SQS refused {len(response['Failed'])} message(s) after sending "
                               f"{sent}: {response['Failed'][0]}")
        sent += len(batch)
        if on_batch is not None:
            on_batch(sent)
    return sent, trace_ids


def send_command(args: argparse.Namespace, session: Session) -> int:
    genres = args.genres or list(session.settings.genre_buckets)
    queue = args.queue or session.settings.input_queue
    url = queue_url(session.sqs, queue)
    books = list(sample_books(args.count, genres, args.groups, uuid.uuid4().hex[:8]))
    # The standard OTEL_ variables: with an endpoint, each book's trace starts here.
    traces = tracing.start(tracing.read_config(os.environ), **{"shelver.command": "send"})
    progress = Progress()
    try:
        sent, trace_ids = send_books(session.sqs, url, books,
                                     lambda n: progress.update(f"sent {n} of {len(books)}"),
                                     traces)
    finally:
        progress.clear()
        traces.shutdown(SPAN_FLUSH_SECONDS)
    print(f"sent {sent} book(s) to {url} over {min(args.groups, sent)} group(s)")
    if trace_ids:
        print(f"traced: the first book's trace id is {trace_ids[0]}")
    return 0
