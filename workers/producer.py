"""Send sample books to the input queue.

Usage: python -m workers.producer --count 10 --genres scifi,romance

Uses the standard AWS configuration (AWS_ENDPOINT_URL for an emulator, or real AWS credentials).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterator

import orjson

from workers.aws import make_session
from workers.transport import chunks


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


def send_books(sqs: object, queue_url: str, books: list[tuple[str, dict[str, str]]]) -> int:
    sent = 0
    for batch in chunks(books):
        response = sqs.send_message_batch(  # type: ignore[attr-defined]
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
            raise RuntimeError(f"SQS refused some messages: {response['Failed']}")
        sent += len(batch)
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10, help="how many books (default 10)")
    parser.add_argument("--genres", default="scifi,romance", help="comma-separated genres")
    parser.add_argument("--groups", type=int, default=5, help="message groups (default 5)")
    parser.add_argument("--queue", default="InputQueue.fifo", help="queue name or URL")
    args = parser.parse_args(argv)
    genres = [g.strip() for g in args.genres.split(",") if g.strip()]
    if args.count < 1 or args.groups < 1 or not genres:
        parser.error("--count and --groups must be >= 1 and --genres must name a genre")
    sqs = make_session().client("sqs")
    url = args.queue if args.queue.startswith("http") else sqs.get_queue_url(
        QueueName=args.queue)["QueueUrl"]
    books = list(sample_books(args.count, genres, args.groups, uuid.uuid4().hex[:8]))
    sent = send_books(sqs, url, books)
    print(f"sent {sent} book(s) to {url} over {min(args.groups, sent)} group(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
