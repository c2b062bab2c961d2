"""BookStore's protocol (conditional puts, the owner check, alternate keys, races), run for each
S3_CLIENT against S3 over real HTTP: moto's server for the S3 semantics, a scripted server for
the answers moto cannot be made to give."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from scripts.emulator import free_port
from tests.support.http_stub import Answer, HttpStub, s3_error
from workers.aws.clients import make_s3, make_session
from workers.aws.s3 import NO_HEADERS, ObjectHead, S3Objects
from workers.books.decode import Book
from workers.books.keys import object_key
from workers.books.store import (
    MAX_ATTEMPTS,
    BookStore,
    KeyConflict,
    Origin,
    StoredBook,
    StoreOutcome,
    WriteContention,
)
from workers.destinations import Destination, Encryption, Sse

BUCKET = "scifi-books"


@pytest.fixture
def s3(empty_moto_server: str, aws_at: Callable[[str], None]) -> Any:
    """A boto3 client on an empty S3 with the bucket: to arrange and inspect."""
    aws_at(empty_moto_server)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def objects(s3: Any, s3_client: str) -> S3Objects:
    """The S3_CLIENT under test, made as a consumer makes it, on the same S3."""
    return make_s3(make_session(), threads=4, s3_client=s3_client)


def make_book(book_id: str = "b-1", title: str = "Dune", **extra: Any) -> Book:
    body = orjson.dumps({"id": book_id, "title": title, "genre": "scifi", **extra})
    return Book(id=book_id, title=title, genre="scifi", bucket=BUCKET, body=body)


def read(s3: Any, key: str) -> tuple[bytes, dict[str, Any]]:
    response = s3.get_object(Bucket=BUCKET, Key=key)
    return response["Body"].read(), response


class Spy:
    """Passes calls on to `S3Objects` and records them: "put", "put_if_match", "head".

    `before_head` runs once just before the next HeadObject, `after_head` once just after it
    answered (so the ETag it read is stale): what another consumer could do in between."""

    def __init__(self, objects: S3Objects, before_head: Callable[[], Any] | None = None,
                 after_head: Callable[[], Any] | None = None) -> None:
        self._objects = objects
        self._before_head, self._after_head = before_head, after_head
        self.calls: list[str] = []
        self.headers: list[dict[str, str]] = []  # each call's

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str,
            metadata: Mapping[str, str], if_none_match: bool = False,
            if_match: str | None = None, headers: Mapping[str, str] = NO_HEADERS
            ) -> str | None:
        self.calls.append("put" + ("_if_match" if if_match is not None else ""))
        self.headers.append(dict(headers))
        return self._objects.put(bucket, key, body, content_type=content_type,
                                 metadata=metadata, if_none_match=if_none_match,
                                 if_match=if_match, headers=headers)

    def head(self, bucket: str, key: str, *, headers: Mapping[str, str] = NO_HEADERS
             ) -> ObjectHead:
        self.calls.append("head")
        self.headers.append(dict(headers))
        self._once("_before_head")
        head = self._objects.head(bucket, key, headers=headers)
        self._once("_after_head")
        return head

    def _once(self, name: str) -> None:
        action = getattr(self, name)
        if action is not None:
            setattr(self, name, None)
            action()


def test_create_writes_body_content_type_and_metadata(s3: Any, objects: S3Objects) -> None:
    book = make_book(pages=412)
    stored = BookStore(objects).store(book, Origin("msg-1"))
    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.CREATED)
    body, response = read(s3, "Dune.json")
    assert body == book.body
    assert response["ContentType"] == "application/json"
    assert response["Metadata"] == {"book-id": "b-1", "message-id": "msg-1"}


def test_create_is_a_single_conditional_put(objects: S3Objects) -> None:
    spy = Spy(objects)
    BookStore(spy).store(make_book(), Origin("msg-1"))
    assert spy.calls == ["put"]


def test_same_book_replaces_its_file(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    store.store(make_book(summary="old"), Origin("msg-1"))
    updated = make_book(summary="new")
    stored = store.store(updated, Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.REPLACED)
    body, response = read(s3, "Dune.json")
    assert body == updated.body
    assert response["Metadata"]["message-id"] == "msg-2"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["Dune.json"]


def test_a_later_version_this_process_wrote_before_costs_one_request(
        s3: Any, objects: S3Objects) -> None:
    spy = Spy(objects)
    store = BookStore(spy)
    store.store(make_book(summary="v1"), Origin("msg-1", "g", 1, receive_count=1))

    stored = store.store(make_book(summary="v2"), Origin("msg-2", "g", 2, receive_count=1))

    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.REPLACED)
    assert spy.calls == ["put", "put_if_match"]
    assert read(s3, "Dune.json")[0] == make_book(summary="v2").body


def test_a_stale_remembered_etag_falls_back_to_the_full_protocol(
        s3: Any, objects: S3Objects) -> None:
    spy = Spy(objects)
    ours, theirs = BookStore(spy), BookStore(objects)  # two consumer processes
    ours.store(make_book(summary="v1"), Origin("msg-1", "g", 1, receive_count=1))
    # The file changed behind our back.
    theirs.store(make_book(summary="v2"), Origin("msg-2", "g", 2, receive_count=1))
    spy.calls.clear()

    stored = ours.store(make_book(summary="v3"), Origin("msg-3", "g", 3, receive_count=1))

    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.REPLACED)
    assert spy.calls == ["put_if_match", "put", "head", "put_if_match"]
    assert read(s3, "Dune.json")[0] == make_book(summary="v3").body


@pytest.mark.parametrize("between", ["B", "A"], ids=["A-B-A", "A-A-A"])
def test_a_redelivery_is_not_fooled_by_a_later_version_with_the_same_bytes(
        s3: Any, objects: S3Objects, between: str) -> None:
    # P1 wrote seq 5 (body A); P2 wrote seq 6 and seq 7 (A again) and died before its delete;
    # seq 6 comes back, to P1. The file holds the bytes P1 remembers: the ETag (the MD5 of the
    # body, as with SSE-S3) is the same, and only the sequence number tells seq 7 from seq 5.
    a, b = make_book(summary="A"), make_book(summary=between)
    p1, p2 = Spy(objects), Spy(objects)
    first, second = BookStore(p1), BookStore(p2)  # two consumer processes
    first.store(a, Origin("m-5", "g", 5, receive_count=1))
    second.store(b, Origin("m-6", "g", 6, receive_count=1))
    second.store(a, Origin("m-7", "g", 7, receive_count=1))
    p1.calls.clear()
    md5 = hashlib.md5(a.body, usedforsecurity=False).hexdigest()
    assert s3.head_object(Bucket=BUCKET, Key="Dune.json")["ETag"] == f'"{md5}"'

    stored = first.store(b, Origin("m-6", "g", 6, receive_count=2))

    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.SUPERSEDED)
    assert p1.calls == ["put", "head"]  # nothing written: the refused create, the read
    body, response = read(s3, "Dune.json")
    assert body == a.body
    assert response["Metadata"] == {"book-id": "b-1", "message-id": "m-7",
                                    "message-group": "g", "sequence-number": "7"}


@pytest.mark.parametrize("receive_count", [2, None], ids=["redelivered", "unknown"])
def test_only_a_first_delivery_rests_on_the_remembered_etag(
        s3: Any, objects: S3Objects, receive_count: int | None) -> None:
    spy = Spy(objects)
    store = BookStore(spy)
    store.store(make_book(summary="v1"), Origin("msg-1", "g", 1, receive_count=1))
    spy.calls.clear()

    stored = store.store(make_book(summary="v2"), Origin("msg-2", "g", 2, receive_count))

    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.REPLACED)
    assert spy.calls == ["put", "head", "put_if_match"]
    assert read(s3, "Dune.json")[0] == make_book(summary="v2").body


def test_a_remembered_key_never_lets_another_book_overwrite_it(
        s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    store.store(make_book(), Origin("msg-1"))
    other = make_book(book_id="b-2", summary="another book, same title")

    stored = store.store(other, Origin("msg-2"))

    assert stored == StoredBook(BUCKET, "Dune~b-2.json", StoreOutcome.CREATED, alternate=True)
    assert read(s3, "Dune.json")[0] == make_book().body


def test_redelivery_of_same_message_is_idempotent(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    book = make_book()
    store.store(book, Origin("msg-1"))
    assert store.store(book, Origin("msg-1")).reason == "replaced"
    assert read(s3, "Dune.json")[0] == book.body


def test_a_redelivered_older_message_of_the_group_never_rewinds_the_file(
        s3: Any, objects: S3Objects) -> None:
    # A consumer killed before its batch delete wrote versions 1 and 2; SQS hands both out
    # again to a new process: neither may overwrite what version 2 wrote.
    dead = BookStore(objects)
    dead.store(make_book(summary="v1"), Origin("msg-1", "g", 101))
    dead.store(make_book(summary="v2"), Origin("msg-2", "g", 102))
    fresh = BookStore(objects)

    again = [fresh.store(make_book(summary="v1"), Origin("msg-1", "g", 101)),
             fresh.store(make_book(summary="v2"), Origin("msg-2", "g", 102))]

    assert [a.reason for a in again] == ["superseded", "superseded"]
    assert not any(a.written for a in again)
    body, response = read(s3, "Dune.json")
    assert body == make_book(summary="v2").body
    assert response["Metadata"] == {"book-id": "b-1", "message-id": "msg-2",
                                    "message-group": "g", "sequence-number": "102"}
    assert fresh.store(make_book(summary="v3"), Origin("msg-3", "g", 103)).reason == "replaced"


def test_the_remembered_file_of_a_later_message_is_checked_before_skipping(
        s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    store.store(make_book(summary="v2"), Origin("msg-2", "g", 102))
    s3.delete_object(Bucket=BUCKET, Key="Dune.json")  # gone behind the cache's back

    assert store.store(make_book(summary="v1"), Origin("msg-1", "g", 101)).reason == "created"


def test_order_is_kept_within_a_group_only(s3: Any, objects: S3Objects) -> None:
    # SQS promises order within a message group; across groups the last write wins, as before.
    BookStore(objects).store(make_book(summary="from g"), Origin("msg-2", "g", 200))

    stored = BookStore(objects).store(make_book(summary="from h"), Origin("msg-1", "h", 100))

    assert stored.reason == "replaced"
    assert read(s3, "Dune.json")[0] == make_book(summary="from h").body


def test_a_file_without_sequence_metadata_is_replaced_as_before(objects: S3Objects) -> None:
    BookStore(objects).store(make_book(summary="old"), Origin("msg-1"))

    stored = BookStore(objects).store(make_book(summary="new"), Origin("msg-2", "g", 1))

    assert stored.reason == "replaced"


def test_an_alternate_key_is_guarded_the_same_way(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    store.store(make_book("b-0"), Origin("msg-0", "g", 1))
    store.store(make_book("b-1", summary="v2"), Origin("msg-2", "g", 12))

    stored = BookStore(objects).store(make_book("b-1", summary="v1"), Origin("msg-1", "g", 11))

    assert stored == StoredBook(BUCKET, object_key("Dune", "b-1"), StoreOutcome.SUPERSEDED,
                                alternate=True)
    assert read(s3, object_key("Dune", "b-1"))[0] == make_book("b-1", summary="v2").body


def test_different_book_same_title_keeps_both(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    first, second = make_book("b-1", author="A"), make_book("b-2", author="B")
    store.store(first, Origin("msg-1"))
    stored = store.store(second, Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune~b-2.json", StoreOutcome.CREATED, alternate=True)
    assert stored.key == object_key("Dune", "b-2")
    assert read(s3, "Dune.json")[0] == first.body
    body, response = read(s3, "Dune~b-2.json")
    assert body == second.body
    assert response["Metadata"]["book-id"] == "b-2"


def test_update_of_alternate_book_replaces_only_its_file(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    first = make_book("b-1")
    store.store(first, Origin("msg-1"))
    store.store(make_book("b-2", summary="old"), Origin("msg-2"))
    updated = make_book("b-2", summary="new")
    expected = StoredBook(BUCKET, "Dune~b-2.json", StoreOutcome.REPLACED, alternate=True)
    assert store.store(updated, Origin("msg-3")) == expected
    assert read(s3, "Dune~b-2.json")[0] == updated.body
    assert read(s3, "Dune.json")[0] == first.body


def test_non_ascii_id_is_percent_encoded_in_metadata(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    book = make_book("книга-1 📚", title="Война и мир")
    assert store.store(book, Origin("msg-1")).reason == "created"
    metadata = read(s3, object_key(book.title))[1]["Metadata"]
    assert metadata["book-id"].isascii()
    assert unquote(metadata["book-id"]) == "книга-1 📚"
    # Comparing the stored id must recognise the same book again...
    assert store.store(book, Origin("msg-2")).reason == "replaced"
    # ...and an ASCII id that looks like an escape must not pass for it.
    lookalike = make_book(metadata["book-id"], title="Война и мир")
    assert store.store(lookalike, Origin("msg-3")).reason == "created_alternate"
    assert read(s3, object_key(book.title))[0] == book.body


@pytest.mark.parametrize("title", ["a b+c&d=e?f#g%h", "~tilde'quote\"(paren)*!@$,;:", "日本語 🚀"])
def test_keys_that_need_url_encoding_land_under_their_own_name(
        s3: Any, objects: S3Objects, title: str) -> None:
    stored = BookStore(objects).store(make_book(title=title), Origin("msg-1"))
    assert stored.key == object_key(title)
    assert read(s3, stored.key)[0] == make_book(title=title).body


def test_ids_differing_only_in_escape_characters_stay_distinct(objects: S3Objects) -> None:
    store = BookStore(objects)
    store.store(make_book("a%41"), Origin("msg-1"))
    assert store.store(make_book("aA"), Origin("msg-2")).reason == "created_alternate"


def test_file_without_book_id_metadata_is_never_overwritten(s3: Any, objects: S3Objects) -> None:
    s3.put_object(Bucket=BUCKET, Key="Dune.json", Body=b"manual")
    stored = BookStore(objects).store(make_book(), Origin("msg-1"))
    assert stored.reason == "created_alternate"
    assert read(s3, "Dune.json")[0] == b"manual"


def test_alternate_key_of_another_book_is_never_overwritten(s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects)
    # A title with '~' whose key is exactly the alternate key of book "1" titled "A".
    squatter = make_book("x", title="A~1")
    store.store(squatter, Origin("msg-1"))
    store.store(make_book("y", title="A"), Origin("msg-2"))
    with pytest.raises(KeyConflict):
        store.store(make_book("1", title="A"), Origin("msg-3"))
    assert read(s3, "A~1.json")[0] == squatter.body


@pytest.mark.parametrize(("first", "second"), [
    (("T", "x/1"), ("T", "x_1")),  # ids that sanitize alike: once both "T~x_1.json"
    (("T", "b~c"), ("T~b", "c")),  # a '~' in the id or in the title: once both "T~b~c.json"
])
def test_distinct_books_get_distinct_alternate_keys(
        s3: Any, objects: S3Objects, first: tuple[str, str], second: tuple[str, str]) -> None:
    # Both title keys are held by other books, so each of these goes to its alternate key;
    # were those the same, the second valid book would be dead-lettered as key_conflict.
    store = BookStore(objects)
    for number, (title, _) in enumerate((first, second)):
        store.store(make_book(f"holder-{number}", title=title), Origin(f"msg-h{number}"))
    one = store.store(make_book(first[1], title=first[0]), Origin("msg-1"))
    two = store.store(make_book(second[1], title=second[0]), Origin("msg-2"))
    assert (one.reason, two.reason) == ("created_alternate", "created_alternate")
    assert one.key != two.key


def test_missing_bucket_error_propagates(objects: S3Objects) -> None:
    book = Book(id="b-1", title="Dune", genre="scifi", bucket="no-such-bucket", body=b"{}")
    with pytest.raises(ClientError) as info:
        BookStore(objects).store(book, Origin("msg-1"))
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# --- races: another writer acts between our requests --------------------------------------------


def test_file_deleted_before_head_starts_over(s3: Any, objects: S3Objects) -> None:
    BookStore(objects).store(make_book("b-1"), Origin("msg-1"))
    spy = Spy(objects, before_head=lambda: s3.delete_object(Bucket=BUCKET, Key="Dune.json"))
    stored = BookStore(spy).store(make_book("b-2"), Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune.json", StoreOutcome.CREATED)
    assert spy.calls == ["put", "head", "put"]
    assert read(s3, "Dune.json")[1]["Metadata"]["book-id"] == "b-2"


def test_file_changed_between_head_and_if_match_put_starts_over(
        s3: Any, objects: S3Objects) -> None:
    BookStore(objects).store(make_book("b-1", summary="v1"), Origin("msg-1"))
    # Another worker replaces the same book's file after we read its ETag.
    v2 = make_book("b-1", summary="v2")
    spy = Spy(objects, after_head=lambda: BookStore(objects).store(v2, Origin("msg-2")))
    v3 = make_book("b-1", summary="v3")
    assert BookStore(spy).store(v3, Origin("msg-3")).reason == "replaced"
    assert spy.calls == ["put", "head", "put_if_match", "put", "head", "put_if_match"]
    assert read(s3, "Dune.json")[0] == v3.body


def test_file_deleted_between_head_and_if_match_put_starts_over(
        s3: Any, objects: S3Objects) -> None:
    BookStore(objects).store(make_book("b-1"), Origin("msg-1"))
    spy = Spy(objects, after_head=lambda: s3.delete_object(Bucket=BUCKET, Key="Dune.json"))
    assert BookStore(spy).store(make_book("b-1"), Origin("msg-2")).reason == "created"
    assert spy.calls == ["put", "head", "put_if_match", "put"]


def test_file_taken_by_other_book_between_head_and_put_is_not_overwritten(
        s3: Any, objects: S3Objects) -> None:
    BookStore(objects).store(make_book("b-1"), Origin("msg-1"))
    other = make_book("b-9")

    def replace_by_another_book() -> None:
        s3.delete_object(Bucket=BUCKET, Key="Dune.json")
        BookStore(objects).store(other, Origin("msg-9"))

    spy = Spy(objects, after_head=replace_by_another_book)
    stored = BookStore(spy).store(make_book("b-1", summary="mine"), Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune~b-1.json", StoreOutcome.CREATED, alternate=True)
    assert read(s3, "Dune.json")[0] == other.body


# --- answers moto does not give, from a scripted S3 ---------------------------------------------


@pytest.fixture
def scripted(aws_at: Callable[[str], None], s3_client: str
             ) -> Iterator[tuple[HttpStub, S3Objects]]:
    with HttpStub() as stub:
        aws_at(stub.url)
        # The script is the writes' answers: no HeadBucket for the CRT's region lookup.
        yield stub, make_s3(make_session(), threads=1, s3_client=s3_client,
                            bucket_regions=False)


def refused(code: str, status: int) -> Answer:
    return Answer(status, (("Content-Type", "application/xml"),), s3_error(code))


def test_409_conditional_conflict_is_a_retryable_precondition(
        scripted: tuple[HttpStub, S3Objects]) -> None:
    stub, objects = scripted
    stub.script(refused("ConditionalRequestConflict", 409),
                Answer(404),  # the key vanished before our HeadObject: start over
                Answer(200, etag='"e1"'))
    assert BookStore(objects).store(make_book(), Origin("msg-1")).reason == "created"
    assert [r.method for r in stub.requests] == ["PUT", "HEAD", "PUT"]


def test_other_409_propagates(scripted: tuple[HttpStub, S3Objects]) -> None:
    stub, objects = scripted
    stub.script(refused("OperationAborted", 409))
    with pytest.raises(ClientError) as info:
        BookStore(objects).store(make_book(), Origin("msg-1"))
    assert info.value.response["Error"]["Code"] == "OperationAborted"


def test_head_error_other_than_404_propagates(scripted: tuple[HttpStub, S3Objects]) -> None:
    stub, objects = scripted
    stub.script(refused("PreconditionFailed", 412), Answer(403))
    with pytest.raises(ClientError) as info:
        BookStore(objects).store(make_book(), Origin("msg-1"))
    assert info.value.response["Error"]["Code"] == "403"  # a HEAD's error has no body


def test_endless_contention_gives_up_after_bounded_attempts(
        scripted: tuple[HttpStub, S3Objects]) -> None:
    stub, objects = scripted
    for _ in range(MAX_ATTEMPTS):
        stub.script(refused("PreconditionFailed", 412),
                    Answer(200, (("x-amz-meta-book-id", "b-1"),), etag='"e"'),
                    refused("PreconditionFailed", 412))
    with pytest.raises(WriteContention):
        BookStore(objects).store(make_book("b-1"), Origin("msg-1"))
    assert len(stub.requests) == 3 * MAX_ATTEMPTS


def test_connection_errors_propagate_unchanged(aws_at: Callable[[str], None],
                                               s3_client: str) -> None:
    aws_at(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    objects = make_s3(make_session(), threads=1, s3_client=s3_client)
    with pytest.raises(EndpointConnectionError):
        BookStore(objects).store(make_book(), Origin("msg-1"))


# --- destinations (issue 18): the prefix, and the headers of every request ---------------------

KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
LOCKED = Destination("scifi", BUCKET, key_prefix="books/scifi/",
                     encryption=Encryption(Sse.KMS, KMS_KEY), expected_owner="111122223333",
                     storage_class="STANDARD_IA")


def test_every_request_carries_the_destinations_headers_on_the_wire(
        scripted: tuple[HttpStub, S3Objects]) -> None:
    """Both clients send the same headers: a put has them all, a HeadObject the owner alone."""
    stub, objects = scripted
    stub.script(refused("PreconditionFailed", 412),
                Answer(200, etag='"e1"', headers=(("x-amz-meta-book-id", "b-1"),)),
                Answer(200, etag='"e2"'))

    stored = BookStore(objects, {"scifi": LOCKED}).store(make_book(), Origin("msg-1"))

    assert (stored.key, stored.reason) == ("books/scifi/Dune.json", "replaced")
    put, head, put_if_match = stub.requests
    assert [r.method for r in stub.requests] == ["PUT", "HEAD", "PUT"]
    assert unquote(put.path).endswith(f"{BUCKET}/books/scifi/Dune.json")
    for sent in (put, put_if_match):
        assert {name: sent.headers.get(name) for name in (
            "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
            "x-amz-server-side-encryption-bucket-key-enabled", "x-amz-storage-class",
            "x-amz-expected-bucket-owner")} == {
            "x-amz-server-side-encryption": "aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id": KMS_KEY,
            "x-amz-server-side-encryption-bucket-key-enabled": "true",
            "x-amz-storage-class": "STANDARD_IA",
            "x-amz-expected-bucket-owner": "111122223333"}
    assert put.headers["if-none-match"] == "*" and put_if_match.headers["if-match"] == '"e1"'
    assert head.headers["x-amz-expected-bucket-owner"] == "111122223333"
    assert "x-amz-server-side-encryption" not in head.headers
    assert "x-amz-storage-class" not in head.headers


def test_a_genre_without_a_destination_sends_no_extra_header(
        scripted: tuple[HttpStub, S3Objects]) -> None:
    stub, objects = scripted
    BookStore(objects, {"romance": LOCKED}).store(make_book(), Origin("msg-1"))

    (put,) = stub.requests
    assert not [name for name in put.headers if name.startswith(
        ("x-amz-server-side", "x-amz-storage", "x-amz-expected"))]
    assert unquote(put.path).endswith(f"{BUCKET}/Dune.json")


def test_the_prefix_leads_every_key_and_the_protocol_holds_under_it(
        s3: Any, objects: S3Objects) -> None:
    store = BookStore(objects, {"scifi": Destination("scifi", BUCKET, key_prefix="a/b/")})

    first = store.store(make_book("b-1", summary="v1"), Origin("m1", "g", 1))
    update = store.store(make_book("b-1", summary="v2"), Origin("m2", "g", 2))
    other = store.store(make_book("b-2"), Origin("m3", "h", 1))
    stale = store.store(make_book("b-1", summary="v1"), Origin("m1", "g", 1, receive_count=2))

    assert [r.reason for r in (first, update, other, stale)] == [
        "created", "replaced", "created_alternate", "superseded"]
    assert other.key == "a/b/" + object_key("Dune", "b-2")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == sorted(["a/b/Dune.json", other.key])
    assert orjson.loads(read(s3, "a/b/Dune.json")[0])["summary"] == "v2"


def test_a_long_title_under_a_prefix_keeps_the_key_within_1024_bytes(
        s3: Any, objects: S3Objects) -> None:
    prefix = "p/" * 128  # 256 bytes, the longest prefix
    title = "\u00e9" * 1000
    store = BookStore(objects, {"scifi": Destination("scifi", BUCKET, key_prefix=prefix)})

    stored = store.store(make_book(title=title), Origin("m1"))
    alternate = store.store(make_book("b-2", title=title), Origin("m2"))

    for key in (stored.key, alternate.key):
        assert key.startswith(prefix)
        assert len(key.encode()) <= 1024
    assert alternate.alternate and alternate.key != stored.key
    assert read(s3, stored.key)[0] == make_book(title=title).body


def test_encryption_and_storage_class_reach_the_object(s3: Any, objects: S3Objects) -> None:
    destination = Destination("scifi", BUCKET, encryption=Encryption(Sse.S3),
                              storage_class="STANDARD_IA")
    stored = BookStore(objects, {"scifi": destination}).store(make_book(), Origin("m1"))

    head = s3.head_object(Bucket=BUCKET, Key=stored.key)
    assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")
