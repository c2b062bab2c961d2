from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from workers.books import Book, object_key
from workers.storage import (
    MAX_ATTEMPTS,
    BookStore,
    KeyConflict,
    Origin,
    StoredBook,
    WriteContention,
)

BUCKET = "scifi-books"


@pytest.fixture
def s3(moto: None) -> Iterator[Any]:
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client


def make_book(book_id: str = "b-1", title: str = "Dune", **extra: Any) -> Book:
    body = orjson.dumps({"id": book_id, "title": title, "genre": "scifi", **extra})
    return Book(id=book_id, title=title, genre="scifi", bucket=BUCKET, body=body)


def read(s3: Any, key: str) -> tuple[bytes, dict[str, Any]]:
    response = s3.get_object(Bucket=BUCKET, Key=key)
    return response["Body"].read(), response


def count_requests(s3: Any) -> list[str]:
    """Record the name of every operation the client sends."""
    calls: list[str] = []
    s3.meta.events.register(
        "before-call.s3.*", lambda model, **_: calls.append(model.name)
    )
    return calls


def test_create_writes_body_content_type_and_metadata(s3: Any) -> None:
    book = make_book(pages=412)
    stored = BookStore(s3).store(book, Origin("msg-1"))
    assert stored == StoredBook(bucket=BUCKET, key="Dune.json", outcome="created")
    body, response = read(s3, "Dune.json")
    assert body == book.body
    assert response["ContentType"] == "application/json"
    assert response["Metadata"] == {"book-id": "b-1", "message-id": "msg-1"}


def test_create_is_a_single_conditional_put(s3: Any) -> None:
    calls = count_requests(s3)
    BookStore(s3).store(make_book(), Origin("msg-1"))
    assert calls == ["PutObject"]


def test_same_book_replaces_its_file(s3: Any) -> None:
    store = BookStore(s3)
    store.store(make_book(summary="old"), Origin("msg-1"))
    updated = make_book(summary="new")
    stored = store.store(updated, Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune.json", "replaced")
    body, response = read(s3, "Dune.json")
    assert body == updated.body
    assert response["Metadata"]["message-id"] == "msg-2"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["Dune.json"]


def test_a_later_version_this_process_wrote_before_costs_one_request(s3: Any) -> None:
    store = BookStore(s3)
    store.store(make_book(summary="v1"), Origin("msg-1"))
    calls = count_requests(s3)

    stored = store.store(make_book(summary="v2"), Origin("msg-2"))

    assert stored == StoredBook(BUCKET, "Dune.json", "replaced")
    assert calls == ["PutObject"]
    assert read(s3, "Dune.json")[0] == make_book(summary="v2").body


def test_a_stale_remembered_etag_falls_back_to_the_full_protocol(s3: Any) -> None:
    ours, theirs = BookStore(s3), BookStore(s3)  # two consumer processes
    ours.store(make_book(summary="v1"), Origin("msg-1"))
    theirs.store(make_book(summary="v2"), Origin("msg-2"))  # the file changed behind our back
    calls = count_requests(s3)

    stored = ours.store(make_book(summary="v3"), Origin("msg-3"))

    assert stored == StoredBook(BUCKET, "Dune.json", "replaced")
    assert calls == ["PutObject", "PutObject", "HeadObject", "PutObject"]
    assert read(s3, "Dune.json")[0] == make_book(summary="v3").body


def test_a_remembered_key_never_lets_another_book_overwrite_it(s3: Any) -> None:
    store = BookStore(s3)
    store.store(make_book(), Origin("msg-1"))
    other = make_book(book_id="b-2", summary="another book, same title")

    stored = store.store(other, Origin("msg-2"))

    assert stored == StoredBook(BUCKET, "Dune~b-2.json", "created_alternate")
    assert read(s3, "Dune.json")[0] == make_book().body


def test_redelivery_of_same_message_is_idempotent(s3: Any) -> None:
    store = BookStore(s3)
    book = make_book()
    store.store(book, Origin("msg-1"))
    assert store.store(book, Origin("msg-1")).outcome == "replaced"
    assert read(s3, "Dune.json")[0] == book.body


def test_a_redelivered_older_message_of_the_group_never_rewinds_the_file(s3: Any) -> None:
    # A consumer killed before its batch delete wrote versions 1 and 2; SQS hands both out
    # again to a new process: neither may overwrite what version 2 wrote.
    dead = BookStore(s3)
    dead.store(make_book(summary="v1"), Origin("msg-1", "g", 101))
    dead.store(make_book(summary="v2"), Origin("msg-2", "g", 102))
    fresh = BookStore(s3)

    again = [fresh.store(make_book(summary="v1"), Origin("msg-1", "g", 101)),
             fresh.store(make_book(summary="v2"), Origin("msg-2", "g", 102))]

    assert [a.outcome for a in again] == ["superseded", "superseded"]
    assert not any(a.written for a in again)
    body, response = read(s3, "Dune.json")
    assert body == make_book(summary="v2").body
    assert response["Metadata"] == {"book-id": "b-1", "message-id": "msg-2",
                                    "message-group": "g", "sequence-number": "102"}
    assert fresh.store(make_book(summary="v3"), Origin("msg-3", "g", 103)).outcome == "replaced"


def test_the_remembered_file_of_a_later_message_is_checked_before_skipping(s3: Any) -> None:
    store = BookStore(s3)
    store.store(make_book(summary="v2"), Origin("msg-2", "g", 102))
    s3.delete_object(Bucket=BUCKET, Key="Dune.json")  # gone behind the cache's back

    assert store.store(make_book(summary="v1"), Origin("msg-1", "g", 101)).outcome == "created"


def test_order_is_kept_within_a_group_only(s3: Any) -> None:
    # SQS promises order within a message group; across groups the last write wins, as before.
    store = BookStore(s3)
    store.store(make_book(summary="from g"), Origin("msg-2", "g", 200))

    stored = BookStore(s3).store(make_book(summary="from h"), Origin("msg-1", "h", 100))

    assert stored.outcome == "replaced"
    assert read(s3, "Dune.json")[0] == make_book(summary="from h").body


def test_a_file_without_sequence_metadata_is_replaced_as_before(s3: Any) -> None:
    BookStore(s3).store(make_book(summary="old"), Origin("msg-1"))

    stored = BookStore(s3).store(make_book(summary="new"), Origin("msg-2", "g", 1))

    assert stored.outcome == "replaced"


def test_an_alternate_key_is_guarded_the_same_way(s3: Any) -> None:
    store = BookStore(s3)
    store.store(make_book("b-0"), Origin("msg-0", "g", 1))
    store.store(make_book("b-1", summary="v2"), Origin("msg-2", "g", 12))

    stored = BookStore(s3).store(make_book("b-1", summary="v1"), Origin("msg-1", "g", 11))

    assert stored == StoredBook(BUCKET, object_key("Dune", "b-1"), "superseded_alternate")
    assert read(s3, object_key("Dune", "b-1"))[0] == make_book("b-1", summary="v2").body


def test_different_book_same_title_keeps_both(s3: Any) -> None:
    store = BookStore(s3)
    first, second = make_book("b-1", author="A"), make_book("b-2", author="B")
    store.store(first, Origin("msg-1"))
    stored = store.store(second, Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune~b-2.json", "created_alternate")
    assert stored.key == object_key("Dune", "b-2")
    assert read(s3, "Dune.json")[0] == first.body
    body, response = read(s3, "Dune~b-2.json")
    assert body == second.body
    assert response["Metadata"]["book-id"] == "b-2"


def test_update_of_alternate_book_replaces_only_its_file(s3: Any) -> None:
    store = BookStore(s3)
    first = make_book("b-1")
    store.store(first, Origin("msg-1"))
    store.store(make_book("b-2", summary="old"), Origin("msg-2"))
    updated = make_book("b-2", summary="new")
    expected = StoredBook(BUCKET, "Dune~b-2.json", "replaced_alternate")
    assert store.store(updated, Origin("msg-3")) == expected
    assert read(s3, "Dune~b-2.json")[0] == updated.body
    assert read(s3, "Dune.json")[0] == first.body


def test_non_ascii_id_is_percent_encoded_in_metadata(s3: Any) -> None:
    store = BookStore(s3)
    book = make_book("книга-1 📚", title="Война и мир")
    assert store.store(book, Origin("msg-1")).outcome == "created"
    metadata = read(s3, object_key(book.title))[1]["Metadata"]
    assert metadata["book-id"].isascii()
    assert unquote(metadata["book-id"]) == "книга-1 📚"
    # Comparing the stored id must recognise the same book again...
    assert store.store(book, Origin("msg-2")).outcome == "replaced"
    # ...and an ASCII id that looks like an escape must not pass for it.
    lookalike = make_book(metadata["book-id"], title="Война и мир")
    assert store.store(lookalike, Origin("msg-3")).outcome == "created_alternate"
    assert read(s3, object_key(book.title))[0] == book.body


def test_ids_differing_only_in_escape_characters_stay_distinct(s3: Any) -> None:
    store = BookStore(s3)
    store.store(make_book("a%41"), Origin("msg-1"))
    assert store.store(make_book("aA"), Origin("msg-2")).outcome == "created_alternate"


def test_file_without_book_id_metadata_is_never_overwritten(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="Dune.json", Body=b"manual")
    stored = BookStore(s3).store(make_book(), Origin("msg-1"))
    assert stored.outcome == "created_alternate"
    assert read(s3, "Dune.json")[0] == b"manual"


def test_alternate_key_of_another_book_is_never_overwritten(s3: Any) -> None:
    store = BookStore(s3)
    # A title with '~' whose key is exactly the alternate key of book "1" titled "A".
    squatter = make_book("x", title="A~1")
    store.store(squatter, Origin("msg-1"))
    store.store(make_book("y", title="A"), Origin("msg-2"))
    with pytest.raises(KeyConflict):
        store.store(make_book("1", title="A"), Origin("msg-3"))
    assert read(s3, "A~1.json")[0] == squatter.body


def test_missing_bucket_error_propagates(s3: Any) -> None:
    book = Book(id="b-1", title="Dune", genre="scifi", bucket="no-such-bucket", body=b"{}")
    with pytest.raises(ClientError) as info:
        BookStore(s3).store(book, Origin("msg-1"))
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"


class RacingClient:
    """Passes calls to a moto client, running ``before_head`` once just before HeadObject."""

    def __init__(self, s3: Any, before_head: Any) -> None:
        self._s3 = s3
        self._before_head = before_head
        self.calls: list[str] = []

    def put_object(self, **kwargs: Any) -> Any:
        self.calls.append("put" + ("_if_match" if "IfMatch" in kwargs else ""))
        return self._s3.put_object(**kwargs)

    def head_object(self, **kwargs: Any) -> Any:
        self.calls.append("head")
        if self._before_head is not None:
            action, self._before_head = self._before_head, None
            action()
        return self._s3.head_object(**kwargs)


class ChangeAfterHead(RacingClient):
    """Runs the action after HeadObject answered, so our If-Match ETag is stale."""

    def head_object(self, **kwargs: Any) -> Any:
        self.calls.append("head")
        response = self._s3.head_object(**kwargs)
        if self._before_head is not None:
            action, self._before_head = self._before_head, None
            action()
        return response


def test_file_deleted_before_head_starts_over(s3: Any) -> None:
    BookStore(s3).store(make_book("b-1"), Origin("msg-1"))
    client = RacingClient(s3, lambda: s3.delete_object(Bucket=BUCKET, Key="Dune.json"))
    stored = BookStore(client).store(make_book("b-2"), Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune.json", "created")
    assert client.calls == ["put", "head", "put"]
    assert read(s3, "Dune.json")[1]["Metadata"]["book-id"] == "b-2"


def test_file_changed_between_head_and_if_match_put_starts_over(s3: Any) -> None:
    BookStore(s3).store(make_book("b-1", summary="v1"), Origin("msg-1"))
    # Another worker replaces the same book's file after we read its ETag.
    v2 = make_book("b-1", summary="v2")
    client = ChangeAfterHead(s3, lambda: BookStore(s3).store(v2, Origin("msg-2")))
    v3 = make_book("b-1", summary="v3")
    assert BookStore(client).store(v3, Origin("msg-3")).outcome == "replaced"
    assert client.calls == ["put", "head", "put_if_match", "put", "head", "put_if_match"]
    assert read(s3, "Dune.json")[0] == v3.body


def test_file_deleted_between_head_and_if_match_put_starts_over(s3: Any) -> None:
    BookStore(s3).store(make_book("b-1"), Origin("msg-1"))
    client = ChangeAfterHead(s3, lambda: s3.delete_object(Bucket=BUCKET, Key="Dune.json"))
    assert BookStore(client).store(make_book("b-1"), Origin("msg-2")).outcome == "created"
    assert client.calls == ["put", "head", "put_if_match", "put"]


def test_file_taken_by_other_book_between_head_and_put_is_not_overwritten(s3: Any) -> None:
    BookStore(s3).store(make_book("b-1"), Origin("msg-1"))
    other = make_book("b-9")
    client = ChangeAfterHead(
        s3,
        lambda: (
            s3.delete_object(Bucket=BUCKET, Key="Dune.json"),
            BookStore(s3).store(other, Origin("msg-9")),
        ),
    )
    stored = BookStore(client).store(make_book("b-1", summary="mine"), Origin("msg-2"))
    assert stored == StoredBook(BUCKET, "Dune~b-1.json", "created_alternate")
    assert read(s3, "Dune.json")[0] == other.body


# --- error paths with botocore's Stubber (no moto needed) ----------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_409_conditional_conflict_is_a_retryable_precondition(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
    # The key vanished before our HeadObject (404), so the store starts over and succeeds.
    stubber.add_client_error("head_object", "404", http_status_code=404)
    stubber.add_response("put_object", {"ETag": '"e1"'})
    assert BookStore(client).store(make_book(), Origin("msg-1")).outcome == "created"


def test_other_409_propagates(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("put_object", "OperationAborted", http_status_code=409)
    with pytest.raises(ClientError) as info:
        BookStore(client).store(make_book(), Origin("msg-1"))
    assert info.value.response["Error"]["Code"] == "OperationAborted"


def test_head_error_other_than_404_propagates(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    stubber.add_client_error("head_object", "403", http_status_code=403)
    with pytest.raises(ClientError) as info:
        BookStore(client).store(make_book(), Origin("msg-1"))
    assert info.value.response["Error"]["Code"] == "403"


def test_endless_contention_gives_up_after_bounded_attempts(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    for _ in range(MAX_ATTEMPTS):
        stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
        stubber.add_response("head_object", {"ETag": '"e"', "Metadata": {"book-id": "b-1"}})
        stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    with pytest.raises(WriteContention):
        BookStore(client).store(make_book("b-1"), Origin("msg-1"))


def test_connection_errors_propagate_unchanged() -> None:
    class Unreachable:
        def put_object(self, **kwargs: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    with pytest.raises(EndpointConnectionError):
        BookStore(Unreachable()).store(make_book(), Origin("msg-1"))
