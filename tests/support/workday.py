"""An operator's day, compressed into a minute or two, so that every dashboard panel has
something to show: an S3 outage (retries, a consumer failing), its end, a drain with poison
messages (dead letters), a consumer killed mid-drain (a restart, redeliveries).

Run against a Shelver whose S3 endpoint is `s3_proxy` and a Prometheus scraping it; used by the
dashboard test (tests/e2e/test_dashboard.py) and by `make dashboard-picture`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.prometheus import Prometheus
from tests.support.proxy import FaultProxy
from tests.support.shelver import Endpoint

# A short visibility timeout: the killed consumer's messages come back within the day.
VISIBILITY_TIMEOUT = 10
# The day goes on this long after Prometheus has seen its last event. A graph's rate window
# (4 s at a 1 s scrape, 2 s steps) must fit between that event and the day's end: when the drain
# lands in the last scrape, the last step of a range query would otherwise come before it, and a
# quantile of rates that are all 0 is no data (seen on a loaded machine, 1 run in 14).
TAIL_SECONDS = 6.0
POISON: list[bytes | dict[str, Any]] = [
    b"not a book",
    book("poison-genre", "A Book Of Verse", "poetry"),
    {"id": "poison-untitled", "genre": "scifi"},
]


@dataclass(frozen=True)
class Day:
    start: float  # Unix time
    end: float
    books: int
    poison: int


def _books(prefix: str, count: int, groups: int) -> list[tuple[str, bytes | dict[str, Any]]]:
    genres = ("scifi", "romance")
    return [(f"{prefix}-{n % groups}",
             book(f"{prefix}-{n}", f"{prefix.title()} {n}", genres[n % len(genres)]))
            for n in range(count)]


def live_through(aws: Aws, stack: Stack, shelver: Endpoint, s3_proxy: FaultProxy,
                 prometheus: Prometheus, outage_books: int = 20, books: int = 60,
                 quiet_seconds: float = 0) -> Day:
    """The day, as short as it can be; `quiet_seconds` of idling before, between the outage and
    the drain, and after it make the graphs of a longer day easier to read (the picture)."""
    prometheus.wait_for_scrape()
    start = time.time()
    query = prometheus.query
    time.sleep(quiet_seconds)

    # S3 refuses every write: whole batches fail, consumers pause and report why.
    s3_proxy.configure(error_rate=1.0)
    aws.send(stack.input_url, _books("outage", outage_books, groups=4))
    # Seen in several scrapes, so that a graph of the day shows it whatever its step.
    wait_until(lambda: (query("sum(count_over_time(shelver_consumer_failing[5m]))") or 0) >= 5,
               90, 0.5, "Prometheus to see a consumer failing")
    time.sleep(quiet_seconds)
    s3_proxy.heal()

    # A drain with poison in it, and a consumer killed in the middle of it.
    aws.send(stack.input_url, _books("drain", books, groups=8)
             + [("poison", body) for body in POISON])
    wait_until(lambda: (query("sum(shelver_books_stored_total)") or 0) > outage_books / 2, 90,
               0.5, "the drain to be under way")
    os.kill(shelver.consumer_pids()[0], signal.SIGKILL)
    wait_until(lambda: query('sum(shelver_consumer_restarts_total{reason="died"})') == 1, 60,
               0.5, "Prometheus to see the consumer restarted")

    total = outage_books + books
    wait_until(lambda: aws.drained(stack.input_url), 180, 0.5, "the input queue to drain")
    # Superseded: redeliveries of what the killed consumer wrote but had not deleted yet.
    finished = "sum(shelver_books_stored_total) + sum(shelver_messages_superseded_total)"
    wait_until(lambda: (query(finished) or 0) >= total, 60, 0.5,
               f"Prometheus to see {total} books stored")
    wait_until(lambda: query("job:shelver_dead_letter_queue_messages:max") == len(POISON), 60,
               0.5, "the dead letters in the sampled DLQ depth")
    time.sleep(quiet_seconds)
    prometheus.wait_for_scrape(after=time.time() + TAIL_SECONDS)
    return Day(start=start, end=time.time(), books=total, poison=len(POISON))
