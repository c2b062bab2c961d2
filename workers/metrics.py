"""Prometheus metrics shared by every Shelver process.

Writers (consumers, the pool in the gunicorn master) update these objects; prometheus_client's
multiprocess mode persists them under PROMETHEUS_MULTIPROC_DIR, and the reader side
(`service.metrics_view`) aggregates every process's files per scrape. The directory must be set in
the environment before this module is first imported in a process: gunicorn.conf.py does that.
Two series are made at scrape time instead, from what /health reads (`service.status_metrics`):
`shelver_build_info` and `shelver_consumer_failing`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From well under a second (keeping up) to a day (SQS keeps messages up to 14 days): 300 s, the
# alert rules' default objective, is a bucket boundary, so the quantile is exact there.
_AGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                3600.0, 7200.0, 21600.0, 86400.0)

MESSAGES_RECEIVED = Counter(
    "shelver_messages_received_total", "Messages received from the input queue."
)
BOOKS_STORED = Counter(
    "shelver_books_stored_total", "Books written to their genre bucket.", ["genre"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "shelver_messages_dead_lettered_total",
    "Messages moved to the dead-letter queue, by reason.",
    ["reason"],
)
MESSAGES_RETRIED = Counter(
    "shelver_messages_retried_total",
    "Messages put back on the queue with a backoff after a failure, by reason.",
    ["reason"],
)
MESSAGES_SUPERSEDED = Counter(
    "shelver_messages_superseded_total",
    "Messages not written because their book's file already holds the same or a later message "
    "of their group (a redelivery after a consumer died before deleting them).",
)
MESSAGES_RELEASED = Counter(
    "shelver_messages_released_total",
    "Messages made visible again without processing (behind a failed message, or at shutdown).",
)
MESSAGES_RECOVERED = Counter(
    "shelver_messages_recovered_total",
    "Messages a dead consumer held, handed back (made visible) by the consumer that replaced "
    "it, instead of waiting out their visibility timeout.",
)
DELETE_FAILURES = Counter(
    "shelver_delete_failures_total",
    "Processed messages whose delete failed; SQS will redeliver them and the write is idempotent.",
)
PROCESSING_SECONDS = Histogram(
    "shelver_processing_seconds",
    "Time to process one message, from decode to stored or dead-lettered.",
    buckets=_LATENCY_BUCKETS,
)
S3_PUT_SECONDS = Histogram(
    "shelver_s3_put_seconds", "Time to write one book to S3.", buckets=_LATENCY_BUCKETS
)
MESSAGE_AGE_SECONDS = Histogram(
    "shelver_message_age_seconds",
    "Time from a message's SentTimestamp to its receive by a consumer (a redelivered message "
    "counts its earlier attempts and backoffs).",
    buckets=_AGE_BUCKETS,
)
MESSAGE_LAG_SECONDS = Histogram(
    "shelver_message_lag_seconds",
    "Time from a message's SentTimestamp to its book stored in S3: how far behind Shelver is.",
    buckets=_AGE_BUCKETS,
)
RECEIVE_CALLS = Counter(
    "shelver_receive_calls_total",
    "ReceiveMessage calls by result: messages, empty or error.",
    ["result"],
)
VISIBILITY_EXTENSIONS = Counter(
    "shelver_visibility_extensions_total",
    "Visibility timeout extensions of messages held by a consumer.",
)
CONSUMERS_ALIVE = Gauge(
    "shelver_consumers_alive",
    "Consumer processes currently alive, as seen by the pool.",
    multiprocess_mode="livemax",
)
CONSUMERS_CONFIGURED = Gauge(
    "shelver_consumers_configured",
    "Consumer processes the pool is configured to run (CONSUMERS).",
    multiprocess_mode="livemax",
)
CONSUMER_RESTARTS = Counter(
    "shelver_consumer_restarts_total",
    "Consumer processes replaced after they died or stopped heartbeating.",
    ["reason"],
)
QUEUE_MESSAGES = Gauge(
    "shelver_queue_messages",
    "Approximate input queue depth, sampled periodically: visible or in_flight.",
    ["state"],
    multiprocess_mode="livemostrecent",
)
DEAD_LETTER_QUEUE_MESSAGES = Gauge(
    "shelver_dead_letter_queue_messages",
    "Approximate dead-letter queue depth, sampled with the input queue's: visible or in_flight.",
    ["state"],
    multiprocess_mode="livemostrecent",
)
INTERNAL_ERRORS = Counter(
    "shelver_internal_errors_total",
    "Exceptions nothing expected (bugs) in a consumer thread its correctness depends on, by "
    "thread: keeper, settle or main. Each ended its consumer, which the pool replaced.",
    ["thread"],
)
LAST_POLL_TIMESTAMP = Gauge(
    "shelver_last_successful_poll_timestamp_seconds",
    "Unix time of the last ReceiveMessage call that succeeded.",
    multiprocess_mode="livemax",
)


# Dead-letter reasons: the InvalidBook reasons of workers.books.decode, the store's key conflict,
# a message that kept crashing its consumer (workers.lease.crashes), and a payload offloaded by
# the Amazon SQS Extended Client that cannot be filed (workers.books.payloads.REASONS).
DEAD_LETTER_REASONS = ("not_json", "duplicate_key", "not_object", "missing_field", "wrong_type",
                       "unknown_genre", "key_conflict", "crashed_consumer",
                       "payload_pointer_invalid", "payload_bucket_not_allowed",
                       "payload_too_large", "payload_missing", "payload_unreadable")
RESTART_REASONS = ("died", "exited", "heartbeat")
# The threads of workers.consumer.internal_errors.ConsumerThread.
INTERNAL_ERROR_THREADS = ("keeper", "settle", "main")


def observe_since_sent(histogram: Histogram, sent_at: float | None, now: float) -> None:
    """Seconds from a message's SentTimestamp to `now` (Unix time). SentTimestamp comes from
    SQS's clock: a negative difference is this host's clock skew, counted as 0."""
    if sent_at is not None:
        histogram.observe(max(0.0, now - sent_at))


def init_consumer_series(genres: Iterable[str]) -> None:
    """Create every known label combination at 0, so dashboards and rate() see a series from
    the start instead of only after the first event."""
    for result in ("messages", "empty", "error"):
        RECEIVE_CALLS.labels(result=result)
    for genre in genres:
        BOOKS_STORED.labels(genre=genre)
    for reason in DEAD_LETTER_REASONS:
        MESSAGES_DEAD_LETTERED.labels(reason=reason)
    for thread in INTERNAL_ERROR_THREADS:
        INTERNAL_ERRORS.labels(thread=thread)


def init_pool_series() -> None:
    for reason in RESTART_REASONS:
        CONSUMER_RESTARTS.labels(reason=reason)
