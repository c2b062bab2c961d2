"""A pointer message's payload read and filed as its book (issue 18): the processor decides,
`PayloadReader` reads from S3 (moto's server over HTTP) only what the rules admit, and each way
a payload cannot be filed is a dead-letter reason; a transient failure is retried."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from workers import metrics
from workers.aws.clients import make_session
from workers.aws.s3 import Boto3Payloads, ObjectTooLarge
from workers.aws.sqs import Message
from workers.books.decode import Book
from workers.books.payloads import (
    BUCKET_NOT_ALLOWED,
    MISSING,
    POINTER_CLASS,
    REASONS,
    SIZE_ATTRIBUTE,
    TOO_LARGE,
    UNREADABLE,
    InvalidPointer,
    PayloadPointer,
    PayloadReader,
    PayloadRules,
)
from workers.books.processor import BookProcessor
from workers.books.store import Origin, StoredBook, StoreOutcome
from workers.lease.settle import Outcome

PAYLOADS = "acme-payloads"
GENRES = {"scifi": "scifi-books"}


def pointer_body(key: str, bucket: str = PAYLOADS) -> str:
    return orjson.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}]).decode()


def pointer_message(key: str, size: int | None = None, bucket: str = PAYLOADS) -> Message:
    attributes = None if size is None else {
        SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(size)}}
    return Message("m-1", "rh", pointer_body(key, bucket), "g", 1, sequence=7,
                   attributes=attributes)


def book_bytes(book_id: str = "b-1", size: int = 0) -> bytes:
    return orjson.dumps({"id": book_id, "title": "Dune", "genre": "scifi",
                         "summary": "x" * size})


@dataclass
class FakeStore:
    books: list[Book] = field(default_factory=list)

    def store(self, book: Book, origin: Origin) -> StoredBook:
        self.books.append(book)
        return StoredBook(book.bucket, "Dune.json", StoreOutcome.CREATED)


@pytest.fixture
def s3(empty_moto_server: str, aws_at: Callable[[str], None]) -> Any:
    aws_at(empty_moto_server)
    client = boto3.client("s3")
    client.create_bucket(Bucket=PAYLOADS)
    return client


def reader(max_bytes: int = 1_000_000, buckets: frozenset[str] = frozenset({PAYLOADS})
           ) -> PayloadReader:
    return PayloadReader(Boto3Payloads(make_session().client("s3")),
                         PayloadRules(buckets, max_bytes))


def test_a_payload_is_filed_as_the_book_byte_for_byte(s3: Any) -> None:
    payload = book_bytes(size=300_000)
    s3.put_object(Bucket=PAYLOADS, Key="k1", Body=payload)
    store = FakeStore()

    result = BookProcessor(store, GENRES, payloads=reader()).process(
        pointer_message("k1", len(payload)))

    assert (result.outcome, result.offloaded) == (Outcome.STORED, None)
    assert [book.body for book in store.books] == [payload]
    assert store.books[0].id == "b-1"


def test_with_payload_delete_the_result_names_the_object_to_delete_after_the_message(
        s3: Any) -> None:
    s3.put_object(Bucket=PAYLOADS, Key="k1", Body=book_bytes())
    result = BookProcessor(FakeStore(), GENRES, payloads=reader(),
                           delete_payloads=True).process(pointer_message("k1"))

    assert (result.outcome, result.offloaded) == (Outcome.STORED, (PAYLOADS, "k1"))
    # The processor never deletes: the consumer does, once the message is deleted.
    assert s3.get_object(Bucket=PAYLOADS, Key="k1")["Body"].read() == book_bytes()


@pytest.mark.parametrize(("arrange", "message", "reason"), [
    (lambda s3: None, pointer_message("gone"), MISSING),
    (lambda s3: None, pointer_message("k", bucket="other-bucket"), BUCKET_NOT_ALLOWED),
    (lambda s3: s3.put_object(Bucket=PAYLOADS, Key="big", Body=book_bytes(size=2000)),
     pointer_message("big"), TOO_LARGE),
    (lambda s3: None, pointer_message("k", size=1001), TOO_LARGE),  # declared: nothing read
])
def test_a_payload_that_cannot_be_filed_is_dead_lettered_with_its_reason(
        s3: Any, arrange: Callable[[Any], None], message: Message, reason: str) -> None:
    arrange(s3)
    store = FakeStore()
    result = BookProcessor(store, GENRES, payloads=reader(max_bytes=1000)).process(message)

    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, reason)
    assert store.books == []
    assert reason in metrics.DEAD_LETTER_REASONS


def test_without_payload_buckets_a_pointer_is_not_allowed() -> None:
    result = BookProcessor(FakeStore(), GENRES).process(pointer_message("k1"))

    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, BUCKET_NOT_ALLOWED)
    assert "PAYLOAD_BUCKETS allows none" in result.detail


def test_a_payload_that_is_no_book_gets_the_book_s_reason(s3: Any) -> None:
    s3.put_object(Bucket=PAYLOADS, Key="k1", Body=b"[1, 2]")
    result = BookProcessor(FakeStore(), GENRES, payloads=reader()).process(pointer_message("k1"))

    assert (result.outcome, result.reason) == (Outcome.DEAD_LETTERED, "not_object")


@dataclass
class Refusing:
    """Payload objects answering every GetObject with one error."""

    error: Exception

    def get(self, bucket: str, key: str, max_bytes: int) -> bytes:
        raise self.error

    def delete_object(self, bucket: str, key: str) -> None:
        raise AssertionError("not called")


def s3_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("error", "reason"), [
    (s3_error("AccessDenied", 403), UNREADABLE),
    (s3_error("KMS.DisabledException", 400), UNREADABLE),
    (s3_error("NoSuchBucket", 404), MISSING),
])
def test_a_refusal_for_good_is_a_dead_letter_reason(error: Exception, reason: str) -> None:
    rules = PayloadRules(frozenset({PAYLOADS}), 1000)
    with pytest.raises(InvalidPointer) as invalid:
        PayloadReader(Refusing(error), rules).read(PayloadPointer(PAYLOADS, "k"))

    assert invalid.value.reason == reason
    assert f"s3://{PAYLOADS}/k" in invalid.value.detail


@pytest.mark.parametrize("error", [
    s3_error("SlowDown", 503), s3_error("InternalError", 500), s3_error("RequestTimeout", 400),
    EndpointConnectionError(endpoint_url="http://s3"),
])
def test_a_transient_read_failure_is_retried(error: Exception) -> None:
    rules = PayloadRules(frozenset({PAYLOADS}), 1000)
    processor = BookProcessor(FakeStore(), GENRES,
                              payloads=PayloadReader(Refusing(error), rules))

    result = processor.process(pointer_message("k"))

    assert result.outcome is Outcome.RETRY


def test_a_read_stops_past_max_bytes_even_if_the_length_lied() -> None:
    class Stream:
        def __init__(self) -> None:
            self.read_bytes = 0

        def read(self, size: int) -> bytes:
            self.read_bytes += size
            return b"x" * size

        def close(self) -> None:
            pass

    stream = Stream()

    class Client:
        def get_object(self, **_: Any) -> dict[str, Any]:
            return {"Body": stream, "ContentLength": 10}

    with pytest.raises(ObjectTooLarge):
        Boto3Payloads(Client()).get(PAYLOADS, "k", max_bytes=5_000_000)
    assert stream.read_bytes == 5_000_001


def test_every_payload_reason_is_a_bounded_metric_label() -> None:
    assert set(REASONS) <= set(metrics.DEAD_LETTER_REASONS)
