from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prometheus_client import REGISTRY

from tests.support.aws import wait_until
from tests.support.proxy import FaultProxy
from workers.aws.clients import make_s3, make_session
from workers.aws.errors import failure_reason
from workers.aws.sqs import Message, QueueInfo
from workers.books.decode import Book
from workers.books.processor import BookProcessor, crash_limit_warning, retries_exhausted_at
from workers.books.store import (
    BookStore,
    KeyConflict,
    Origin,
    StoredBook,
    StoreOutcome,
    WriteContention,
)
from workers.consumer.batches import GroupRunner
from workers.lease.crashes import CrashRegistry, ProcessingGate
from workers.lease.files import ProcessingSlots, read_processing
from workers.lease.settle import Outcome, Result, dead_letter
from workers.logs import FIELDS

GENRES = {"scifi": "scifi-books", "romance": "romance-books"}
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/in.fifo"
DLQ = "https://sqs.us-east-1.amazonaws.com/123456789012/in-dlq.fifo"


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@dataclass
class FakeStore:
    """Stores every book unless told to fail for a given book id."""

    failures: dict[str, Exception] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)  # book ids whose file is already newer
    calls: list[tuple[str, str]] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)

    def store(self, book: Book, origin: Origin) -> StoredBook:
        self.calls.append((book.id, origin.message_id))
        self.origins.append(origin)
        failure = self.failures.get(book.id)
        if failure is not None:
            raise failure
        outcome = StoreOutcome.SUPERSEDED if book.id in self.superseded else StoreOutcome.CREATED
        return StoredBook(book.bucket, f"{book.title}.json", outcome)


@dataclass
class FakeTransport:
    queue: QueueInfo
    dead_letter_error: Exception | None = None
    dead_lettered: list[tuple[Message, str, str]] = field(default_factory=list)

    def dead_letter(self, message: Message, reason: str, detail: str) -> None:
        if self.dead_letter_error is not None:
            raise self.dead_letter_error
        self.dead_lettered.append((message, reason, detail))


@dataclass
class Fixture:
    store: FakeStore
    transport: FakeTransport
    processor: BookProcessor

    def process(self, m: Message) -> Result:
        """What became of one message: the processor's decision, a dead letter sent."""
        return self.runner(lambda: False).one(m)

    def process_group(self, messages: list[Message], stopping: Callable[[], bool]
                      ) -> list[Result]:
        return self.runner(stopping).run(messages)

    def runner(self, stopping: Callable[[], bool]) -> GroupRunner:
        """As a consumer's processing thread runs a group (workers.consumer.batches)."""
        return GroupRunner(self.processor.process,
                           functools.partial(dead_letter, self.transport), stopping)


def make(dead_letter_url: str | None = DLQ, max_receive_count: int | None = None) -> Fixture:
    store = FakeStore()
    transport = FakeTransport(QueueInfo(QUEUE, 30, dead_letter_url, max_receive_count))
    processor = BookProcessor(store, GENRES, max_receive_count=max_receive_count)
    return Fixture(store, transport, processor)


@pytest.fixture
def fx() -> Fixture:
    return make()


def message(book_id: str = "b-1", *, body: str | None = None, group: str = "g",
            receive_count: int = 1, sequence: int | None = None, **fields: Any) -> Message:
    if body is None:
        record = {"id": book_id, "title": f"Title {book_id}", "genre": "SciFi", **fields}
        body = orjson.dumps(record).decode()
    return Message(f"m-{book_id}", f"rh-{book_id}", body, group, receive_count, sequence)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Change of a metric sample across a block."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = sample(name, **labels)

    @property
    def value(self) -> float:
        return sample(self.name, **self.labels) - self.before


def outcomes(results: list[Result]) -> list[tuple[str, Outcome, str]]:
    return [(r.message.message_id, r.outcome, r.reason) for r in results]


# -- one message ---------------------------------------------------------------------------------

def test_a_valid_book_is_stored_and_counted(fx: Fixture) -> None:
    stored = Delta("shelver_books_stored_total", genre="scifi")
    timed = Delta("shelver_processing_seconds_count")
    put_timed = Delta("shelver_s3_put_seconds_count")
    m = message("b-1")

    result = fx.process(m)

    assert result == Result(m, Outcome.STORED)
    assert result.outcome.done
    assert fx.store.calls == [("b-1", "m-b-1")]
    assert fx.transport.dead_lettered == []
    assert stored.value == 1
    assert timed.value == 1
    assert put_timed.value == 1


def test_a_stored_book_reports_its_lag_since_it_was_sent(fx: Fixture) -> None:
    within_minutes = Delta("shelver_message_lag_seconds_bucket", le="120.0")
    within_a_minute = Delta("shelver_message_lag_seconds_bucket", le="60.0")
    lagged = Delta("shelver_message_lag_seconds_count")
    sent_90_seconds_ago = dataclasses.replace(message("b-1"), sent_at=time.time() - 90)

    fx.process(sent_90_seconds_ago)
    fx.process(message("b-2"))  # no SentTimestamp: nothing to tell

    assert (lagged.value, within_minutes.value, within_a_minute.value) == (1, 1, 0)


def test_only_a_written_book_reports_lag(fx: Fixture) -> None:
    lagged = Delta("shelver_message_lag_seconds_count")
    fx.store.superseded.add("b-1")
    fx.store.failures["b-2"] = EndpointConnectionError(endpoint_url="https://s3")
    sent = time.time() - 5

    for m in (message("b-1"), message("b-2"), message("b-3", body="not json")):
        fx.process(dataclasses.replace(m, sent_at=sent))

    assert lagged.value == 0


def test_the_write_carries_the_message_group_sequence_number_and_receive_count(
        fx: Fixture) -> None:
    first = message("b-1", group="g-7", sequence=12345678901234567890)
    fx.process(first)
    fx.process(dataclasses.replace(first, receive_count=2))

    assert fx.store.origins == [Origin("m-b-1", "g-7", 12345678901234567890, 1),
                                Origin("m-b-1", "g-7", 12345678901234567890, 2)]
    assert [o.first_delivery for o in fx.store.origins] == [True, False]


def test_a_superseded_message_is_done_but_not_counted_as_stored(fx: Fixture) -> None:
    stored = Delta("shelver_books_stored_total", genre="scifi")
    superseded = Delta("shelver_messages_superseded_total")
    fx.store.superseded.add("b-1")
    m = message("b-1", sequence=5)

    result = fx.process(m)

    assert result == Result(m, Outcome.STORED, "superseded")
    assert result.outcome.done
    assert (stored.value, superseded.value) == (0, 1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not_json"),
        ("[1, 2]", "not_object"),
        ('{"id": "b", "genre": "scifi"}', "missing_field"),
        ('{"id": 1, "title": "T", "genre": "scifi"}', "wrong_type"),
        ('{"id": "b", "title": "T", "genre": "poetry"}', "unknown_genre"),
        ('{"id": "b", "title": "A", "genre": "scifi", "title": "B"}', "duplicate_key"),
    ],
)
def test_an_invalid_book_is_dead_lettered_with_its_reason(
    fx: Fixture, body: str, reason: str
) -> None:
    dead = Delta("shelver_messages_dead_lettered_total", reason=reason)
    timed = Delta("shelver_processing_seconds_count")
    m = message(body=body)

    result = fx.process(m)

    assert result.outcome is Outcome.DEAD_LETTERED
    assert result.outcome.done
    assert result.reason == reason
    assert len(fx.transport.dead_lettered) == 1
    sent, sent_reason, detail = fx.transport.dead_lettered[0]
    assert sent is m
    assert sent_reason == reason
    assert detail  # a human-readable explanation travels with the message
    assert fx.store.calls == []
    assert dead.value == 1
    assert timed.value == 1


def test_without_a_dead_letter_queue_an_invalid_book_stays_on_the_queue() -> None:
    fx = make(dead_letter_url=None)
    retried = Delta("shelver_messages_retried_total", reason="not_json")
    dead = Delta("shelver_messages_dead_lettered_total", reason="not_json")

    result = fx.process(message(body="{oops"))

    assert result.outcome is Outcome.RETRY
    assert not result.outcome.done  # not deleted
    assert result.reason == "not_json"
    assert fx.transport.dead_lettered == []
    assert retried.value == 1
    assert dead.value == 0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (client_error("InternalError", 500), "InternalError"),
        (client_error("SlowDown", 503), "SlowDown"),
        (client_error("ServiceUnavailable", 503), "ServiceUnavailable"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "EndpointConnectionError"),
        (ConnectionResetError("reset by peer"), "ConnectionResetError"),
        (WriteContention("changed 5 times"), "WriteContention"),
    ],
)
def test_a_transient_storage_failure_is_retried_not_deleted(
    fx: Fixture, error: Exception, reason: str
) -> None:
    fx.store.failures["b-1"] = error
    retried = Delta("shelver_messages_retried_total", reason=reason)
    stored = Delta("shelver_books_stored_total", genre="scifi")

    result = fx.process(message("b-1"))

    assert (result.outcome, result.reason) == (Outcome.RETRY, reason)
    assert not result.outcome.done
    assert fx.transport.dead_lettered == []
    assert retried.value == 1
    assert stored.value == 0


def test_a_key_conflict_is_dead_lettered_as_key_conflict(fx: Fixture) -> None:
    conflict = KeyConflict("s3://scifi-books/T.json and s3://scifi-books/T~b-1.json taken")
    fx.store.failures["b-1"] = conflict
    dead = Delta("shelver_messages_dead_lettered_total", reason="key_conflict")

    result = fx.process(message("b-1"))

    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, "key_conflict")
    assert [(m.message_id, r, d) for m, r, d in fx.transport.dead_lettered] == [
        ("m-b-1", "key_conflict", str(conflict))
    ]
    assert dead.value == 1


def test_a_failed_dead_letter_send_is_retried_not_deleted(fx: Fixture) -> None:
    fx.transport.dead_letter_error = client_error("ServiceUnavailable", 503, "SendMessage")
    retried = Delta("shelver_messages_retried_total", reason="ServiceUnavailable")
    dead = Delta("shelver_messages_dead_lettered_total", reason="not_json")

    result = fx.process(message(body="nope"))

    assert (result.outcome, result.reason) == (Outcome.RETRY, "ServiceUnavailable")
    assert retried.value == 1
    assert dead.value == 0


# -- retries exhausted: Shelver dead-letters before SQS's redrive would ---------------------------

@pytest.mark.parametrize(("max_receive_count", "at"),
                         [(None, None), (1, 1), (2, 1), (3, 2), (4, 3), (30, 29)])
def test_retries_are_exhausted_one_receive_before_the_redrive_s_last(
        max_receive_count: int | None, at: int | None) -> None:
    # The receive after it is kept for a dead-letter send that failed; with no redrive policy
    # SQS never moves a message, and there is no DLQ to send it to either.
    assert retries_exhausted_at(max_receive_count) == at


@pytest.mark.parametrize(("dead_letter_after", "max_receive_count", "warned"), [
    (3, 30, False), (3, None, False), (27, 30, False), (28, 30, False), (29, 30, True),
    (3, 5, False), (3, 4, True), (1, 2, True),
])
def test_a_crash_limit_that_leaves_no_receive_to_spare_is_warned_about(
        dead_letter_after: int, max_receive_count: int | None, warned: bool) -> None:
    # The message that kills its consumer is dead-lettered at receive dead_letter_after + 1.
    warning = crash_limit_warning(dead_letter_after, max_receive_count)

    assert (warning is not None) == warned
    if warning is not None:
        assert f"CRASH_DEAD_LETTER_AFTER={dead_letter_after}" in warning


@pytest.mark.parametrize("receive_count", [3, 4])
def test_a_failure_at_the_last_receive_kept_is_dead_lettered_as_retries_exhausted(
        receive_count: int) -> None:
    fx = make(max_receive_count=4)
    fx.store.failures["b-1"] = client_error("AccessDenied", 403)
    dead = Delta("shelver_messages_dead_lettered_total", reason="retries_exhausted")
    retried = Delta("shelver_messages_retried_total", reason="AccessDenied")
    m = message("b-1", receive_count=receive_count)

    result = fx.process(m)

    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, "retries_exhausted")
    [(sent, reason, detail)] = fx.transport.dead_lettered
    assert (sent, reason) == (m, "retries_exhausted")
    assert f"receive {receive_count} of the queue's maxReceiveCount 4" in detail
    assert "AccessDenied" in detail  # the failure itself travels with the message
    assert (dead.value, retried.value) == (1, 0)


def test_a_failure_before_the_last_receive_kept_is_retried() -> None:
    fx = make(max_receive_count=4)
    fx.store.failures["b-1"] = client_error("AccessDenied", 403)

    result = fx.process(message("b-1", receive_count=2))

    assert (result.outcome, result.reason) == (Outcome.RETRY, "AccessDenied")
    assert fx.transport.dead_lettered == []


def test_without_a_redrive_policy_a_failure_is_retried_whatever_the_count() -> None:
    fx = make(dead_letter_url=None, max_receive_count=None)
    fx.store.failures["b-1"] = client_error("SlowDown", 503)

    result = fx.process(message("b-1", receive_count=10_000))

    assert (result.outcome, result.reason) == (Outcome.RETRY, "SlowDown")


def test_an_exhausted_message_whose_dead_letter_send_fails_is_retried_at_the_receive_kept(
        ) -> None:
    fx = make(max_receive_count=4)
    fx.store.failures["b-1"] = client_error("SlowDown", 503)
    fx.transport.dead_letter_error = client_error("ServiceUnavailable", 503, "SendMessage")

    result = fx.process(message("b-1", receive_count=3))

    assert (result.outcome, result.reason) == (Outcome.RETRY, "ServiceUnavailable")


def test_the_followers_of_an_exhausted_head_are_processed_at_once() -> None:
    # Received with their head every time, they have its receive count: SQS's redrive would
    # take them with it at the next receive.
    fx = make(max_receive_count=4)
    fx.store.failures["head"] = client_error("AccessDenied", 403)
    group = [message("head", receive_count=3), message("f-1", receive_count=3),
             message("f-2", receive_count=3)]

    results = fx.process_group(group, never)

    assert outcomes(results) == [("m-head", Outcome.DEAD_LETTERED, "retries_exhausted"),
                                 ("m-f-1", Outcome.STORED, ""), ("m-f-2", Outcome.STORED, "")]


def test_a_follower_received_with_its_head_every_time_has_no_retry_left_of_its_own() -> None:
    # The price of receives spent behind a failing head: dead-lettered at its first failure,
    # with a reason, rather than moved by SQS with none at its next receive.
    fx = make(max_receive_count=4)
    fx.store.failures["head"] = client_error("AccessDenied", 403)
    fx.store.failures["f-2"] = client_error("SlowDown", 503)
    group = [message("head", receive_count=3), message("f-1", receive_count=3),
             message("f-2", receive_count=3), message("f-3", receive_count=3)]

    results = fx.process_group(group, never)

    assert outcomes(results) == [("m-head", Outcome.DEAD_LETTERED, "retries_exhausted"),
                                 ("m-f-1", Outcome.STORED, ""),
                                 ("m-f-2", Outcome.DEAD_LETTERED, "retries_exhausted"),
                                 ("m-f-3", Outcome.STORED, "")]


def crash_registry(tmp_path: Path, crashed: dict[str, int]) -> CrashRegistry:
    registry = CrashRegistry(tmp_path, dead_letter_after=3)
    for message_id, times in crashed.items():
        for _ in range(times):
            registry.record([message_id])
    return registry


def test_a_message_that_crashed_its_consumers_too_often_is_dead_lettered(tmp_path: Path) -> None:
    fx = make()
    fx.processor = BookProcessor(fx.store, GENRES,
                                 crashes=crash_registry(tmp_path, {"m-b-1": 3, "m-b-2": 2}))
    dead = Delta("shelver_messages_dead_lettered_total", reason="crashed_consumer")

    results = fx.process_group([message("b-1"), message("b-2")], lambda: False)

    assert outcomes(results) == [("m-b-1", Outcome.DEAD_LETTERED, "crashed_consumer"),
                                 ("m-b-2", Outcome.STORED, "")]
    assert fx.store.calls == [("b-2", "m-b-2")]  # not processed again: it would crash us
    [(sent, reason, detail)] = fx.transport.dead_lettered
    assert (sent.message_id, reason) == ("m-b-1", "crashed_consumer")
    assert "died 3 time(s)" in detail
    assert dead.value == 1


def test_without_a_dead_letter_queue_a_crashing_message_is_backed_off_unprocessed(
        tmp_path: Path) -> None:
    fx = make(dead_letter_url=None)
    fx.processor = BookProcessor(fx.store, GENRES, crashes=crash_registry(tmp_path, {"m-b-1": 5}))

    result = fx.process(message("b-1"))

    assert (result.outcome, result.reason) == (Outcome.RETRY, "crashed_consumer")
    assert fx.store.calls == []


def test_a_message_with_a_recorded_crash_is_processed_alone(tmp_path: Path) -> None:
    # A bystander in processing when the suspect kills the consumer would be blamed with it.
    fx = make()
    slots = ProcessingSlots(tmp_path, "tok", threads=2)
    gate = ProcessingGate()
    fx.processor = BookProcessor(fx.store, GENRES,
                                 crashes=crash_registry(tmp_path, {"m-suspect": 1}),
                                 slots=slots, gate=gate)
    in_processing: dict[str, list[str]] = {}
    ordinary_may_finish = threading.Event()
    original = fx.store.store

    def store(book: Book, origin: Origin) -> StoredBook:
        in_processing[book.id] = read_processing(slots.path).in_processing
        if book.id == "ordinary":
            ordinary_may_finish.wait(30)
        return original(book, origin)

    fx.store.store = store  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as threads:
        ordinary = threads.submit(fx.process, message("ordinary"))
        wait_until(lambda: "ordinary" in in_processing, 30, 0.001, "the ordinary one stored")
        suspect = threads.submit(fx.process, message("suspect"))
        # Until the suspect waits its turn, or (without the gate) is being stored already.
        wait_until(lambda: gate.waiting or "suspect" in in_processing, 30, 0.001,
                   "the suspect to wait or be stored")
        ordinary_may_finish.set()
        results = [ordinary.result(30), suspect.result(30)]

    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    assert in_processing == {"ordinary": ["m-ordinary"], "suspect": ["m-suspect"]}


def test_the_processing_slot_names_the_message_while_it_is_processed(tmp_path: Path) -> None:
    fx = make()
    slots = ProcessingSlots(tmp_path, "tok", threads=1)
    fx.processor = BookProcessor(fx.store, GENRES, slots=slots)
    during: list[list[str]] = []
    original = fx.store.store

    def store(book: Book, origin: Origin) -> StoredBook:
        during.append(read_processing(slots.path).in_processing)
        return original(book, origin)

    fx.store.store = store  # type: ignore[method-assign]
    fx.store.failures["b-2"] = RuntimeError("bug")

    fx.process(message("b-1"))
    with pytest.raises(RuntimeError):
        fx.process(message("b-2"))

    assert during == [["m-b-1"], ["m-b-2"]]
    assert read_processing(slots.path).in_processing == []  # blank after each, error or not


def test_an_unexpected_error_propagates_instead_of_becoming_an_outcome(fx: Fixture) -> None:
    # The consumer turns it into an internal_error retry of the whole group.
    fx.store.failures["b-1"] = RuntimeError("bug")
    with pytest.raises(RuntimeError, match="bug"):
        fx.process(message("b-1"))


# -- structured log fields (LOG_FORMAT=json) ------------------------------------------------------

def logged(caplog: pytest.LogCaptureFixture, fx: Fixture, m: Message) -> dict[str, object]:
    """The structured fields of the one line processing `m` logs (the processor's, or the
    dead-letter send's)."""
    loggers = ("workers.books.processor", "workers.lease.settle")
    for logger in loggers:
        caplog.set_level(logging.DEBUG, logger=logger)
    fx.process(m)
    [record] = [r for r in caplog.records if r.name in loggers]
    return {name: record.__dict__[name] for name in FIELDS if name in record.__dict__}


def test_a_stored_book_logs_where_it_went(fx: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    assert logged(caplog, fx, message("b-1", group="g-1")) == {
        "message_id": "m-b-1", "group_id": "g-1", "outcome": "stored", "reason": "created",
        "book_id": "b-1", "bucket": "scifi-books", "key": "Title b-1.json"}


def test_a_superseded_book_logs_the_file_that_holds_a_later_message(
        fx: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    fx.store.superseded.add("b-1")
    fields = logged(caplog, fx, message("b-1"))
    assert (fields["outcome"], fields["reason"], fields["key"]) == (
        "stored", "superseded", "Title b-1.json")


def test_a_dead_lettered_message_logs_its_reason_and_detail(
        fx: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    fields = logged(caplog, fx, message(body='{"id": "b", "title": "T", "genre": "poetry"}'))
    assert fields == {
        "message_id": "m-b-1", "group_id": "g", "outcome": "dead_lettered",
        "reason": "unknown_genre", "detail": fields["detail"], "book_id": None}
    assert "poetry" in str(fields["detail"])


def test_a_key_conflict_logs_the_book_id(fx: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    fx.store.failures["b-1"] = KeyConflict("both keys taken")
    fields = logged(caplog, fx, message("b-1"))
    assert (fields["outcome"], fields["reason"], fields["book_id"]) == (
        "dead_lettered", "key_conflict", "b-1")


def test_a_retry_logs_the_error_code_and_text(fx: Fixture,
                                             caplog: pytest.LogCaptureFixture) -> None:
    fx.store.failures["b-1"] = client_error("SlowDown", 503)
    fields = logged(caplog, fx, message("b-1"))
    assert fields == {
        "message_id": "m-b-1", "group_id": "g", "outcome": "retry", "reason": "SlowDown",
        "error": str(fx.store.failures["b-1"]), "book_id": "b-1", "bucket": "scifi-books"}


def test_a_failed_dead_letter_send_logs_the_error_code_as_reason(
        fx: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    fx.transport.dead_letter_error = client_error("ServiceUnavailable", 503, "SendMessage")
    fields = logged(caplog, fx, message(body="nope"))
    assert (fields["outcome"], fields["reason"]) == ("retry", "ServiceUnavailable")
    assert "not valid JSON" in str(fields["detail"])


def test_an_invalid_book_without_dlq_logs_retry(caplog: pytest.LogCaptureFixture) -> None:
    fields = logged(caplog, make(dead_letter_url=None), message(body="{oops"))
    assert (fields["outcome"], fields["reason"]) == ("retry", "not_json")


def test_failure_reason_labels() -> None:
    assert failure_reason(client_error("SlowDown", 503)) == "SlowDown"
    assert failure_reason(ClientError({}, "PutObject")) == "client_error"
    assert failure_reason(TimeoutError()) == "TimeoutError"


# -- a message group -----------------------------------------------------------------------------

def never() -> bool:
    return False


def test_a_group_is_processed_in_order(fx: Fixture) -> None:
    group = [message("a"), message(body="bad"), message("c")]

    results = fx.process_group(group, never)

    # A dead-lettered message is finished with: it does not hold the group up.
    assert [r.message for r in results] == group
    assert [r.outcome for r in results] == [
        Outcome.STORED, Outcome.DEAD_LETTERED, Outcome.STORED
    ]
    assert [book_id for book_id, _ in fx.store.calls] == ["a", "c"]


def test_a_retry_stops_the_group_and_releases_the_rest_in_order(fx: Fixture) -> None:
    fx.store.failures["b"] = client_error("SlowDown", 503)
    group = [message("a"), message("b"), message("c"), message("d")]

    results = fx.process_group(group, never)

    assert outcomes(results) == [
        ("m-a", Outcome.STORED, ""),
        ("m-b", Outcome.RETRY, "SlowDown"),
        ("m-c", Outcome.RELEASED, "behind_retry"),
        ("m-d", Outcome.RELEASED, "behind_retry"),
    ]
    # Nothing after the failed message was written: the group's order holds.
    assert [book_id for book_id, _ in fx.store.calls] == ["a", "b"]


def test_an_invalid_message_without_dlq_stops_the_group() -> None:
    fx = make(dead_letter_url=None)
    group = [message(body="bad"), message("b")]

    results = fx.process_group(group, never)

    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RELEASED]
    assert fx.store.calls == []


def test_stopping_releases_the_rest_of_the_group(fx: Fixture) -> None:
    group = [message("a"), message("b"), message("c")]

    def after_first_store() -> bool:
        return len(fx.store.calls) >= 1

    results = fx.process_group(group, after_first_store)

    assert outcomes(results) == [
        ("m-a", Outcome.STORED, ""),
        ("m-b", Outcome.RELEASED, "shutdown"),
        ("m-c", Outcome.RELEASED, "shutdown"),
    ]
    assert [book_id for book_id, _ in fx.store.calls] == ["a"]


def test_stopping_before_the_first_message_processes_nothing(fx: Fixture) -> None:
    group = [message("a"), message("b")]

    results = fx.process_group(group, lambda: True)

    assert [(r.message, r.outcome) for r in results] == [
        (group[0], Outcome.RELEASED), (group[1], Outcome.RELEASED)
    ]
    assert fx.store.calls == []


def test_an_empty_group_gives_no_results(fx: Fixture) -> None:
    assert fx.process_group([], never) == []


# -- with the real BookStore, each S3_CLIENT, over HTTP -------------------------------------------

@pytest.fixture
def s3(empty_moto_server: str, aws_at: Callable[[str], None]) -> Any:
    aws_at(empty_moto_server)
    client = boto3.client("s3")
    client.create_bucket(Bucket="scifi-books")
    return client


def real_processor(s3_client: str) -> BookProcessor:
    # The faults below are counted per write: no HeadBucket for the CRT's region lookup.
    store = BookStore(make_s3(make_session(), threads=1, s3_client=s3_client,
                              bucket_regions=False))
    return BookProcessor(store, GENRES)


def test_the_body_is_stored_verbatim_in_the_genre_bucket(s3: Any, s3_client: str) -> None:
    processor = real_processor(s3_client)
    m = message("b-9", title="Dune", genre=" SCIFI ")

    result = processor.process(m)

    assert result.outcome is Outcome.STORED
    stored = s3.get_object(Bucket="scifi-books", Key="Dune.json")
    assert stored["Body"].read().decode() == m.body


def test_a_missing_bucket_is_retried_not_dead_lettered(s3: Any, s3_client: str) -> None:
    # romance-books was never created: an operator error, not the message's fault.
    processor = real_processor(s3_client)

    result = processor.process(message("b-1", genre="romance"))

    assert (result.outcome, result.reason) == (Outcome.RETRY, "NoSuchBucket")


@pytest.mark.parametrize(("fault", "reason"), [
    ({"error_rate": 1.0, "error_statuses": (500,)}, "InternalError"),
    ({"throttle_rate": 1.0}, "SlowDown"),
    ({"reset_rate": 1.0}, "ConnectionClosedError"),
    ({"outage_until": math.inf}, "ConnectionClosedError"),  # the chaos suite's S3 outage
], ids=["500", "throttled", "reset", "outage"])
def test_s3_faults_are_retried_with_the_same_reason_whichever_client(
        empty_moto_server: str, aws_at: Callable[[str], None], s3_client: str,
        fault: dict[str, Any], reason: str) -> None:
    # The reason is the metric label and /health's `failing`: S3_CLIENT must not change it.
    with FaultProxy(empty_moto_server) as proxy:
        proxy.configure(**fault)
        aws_at(proxy.url)
        processor = real_processor(s3_client)

        result = processor.process(message("b-1"))

        assert (result.outcome, result.reason) == (Outcome.RETRY, reason)
        assert proxy.counters()["requests"] == 3  # the same attempts, too
