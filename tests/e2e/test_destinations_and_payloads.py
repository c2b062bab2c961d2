"""Issue 18 through a real Shelver against LocalStack's S3, KMS and SQS: a locked-down
destination (prefix, SSE-KMS, expected owner, storage class) with each S3 client, the owner
header asserted on the wire as LocalStack does not enforce it; payloads offloaded by the real
Amazon SQS Extended Client filed byte for byte in group order and deleted after their message;
a 1 MiB book stored and a 1 MiB poison message dead-lettered."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.extended_client import producer
from tests.support.proxy import FaultProxy
from workers.destinations import (
    BUCKET_KEY_HEADER,
    KMS_KEY_HEADER,
    OWNER_HEADER,
    SSE_HEADER,
    STORAGE_CLASS_HEADER,
)

MIB = 1_048_576
LOCALSTACK_ACCOUNT = "000000000000"


@pytest.fixture
def journal(aws_env: dict[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env["AWS_ENDPOINT_URL"], journal=True) as proxy:
        yield proxy


@pytest.fixture
def versioned_stack(aws: Aws) -> Iterator[Stack]:
    with aws.cloned_stack(versioned=True) as stack:
        yield stack


@pytest.fixture
def payload_bucket(aws: Aws) -> Iterator[str]:
    bucket = aws.create_bucket(f"payloads-{uuid.uuid4().hex[:10]}")
    yield bucket
    aws.delete_bucket(bucket)


@pytest.mark.parametrize("s3_client", ["crt", "boto3"])
def test_a_locked_down_destination_with_either_client(
        aws: Aws, stack: Stack, journal: FaultProxy, shelver_factory: ShelverFactory,
        s3_client: str) -> None:
    key_arn = aws.stack_outputs()["KeyArn"]
    shelver = shelver_factory(
        stack, AWS_ENDPOINT_URL_S3=journal.url, S3_CLIENT=s3_client,
        GENRE_KEY_PREFIXES="*=books/,romance=romance/",
        GENRE_ENCRYPTION=f"scifi=SSE-KMS:{key_arn},romance=SSE-S3",
        GENRE_BUCKET_OWNERS=f"*={LOCALSTACK_ACCOUNT}", GENRE_STORAGE_CLASSES="*=STANDARD_IA")
    shelver.wait_healthy()
    # The second Dune is another book, after the first in its group: its title key is taken (a
    # refused put, a HeadObject), so every request of the protocol is made.
    aws.send(stack.input_url, [("g1", book("b-1", "Dune", "scifi")),
                               ("g1", book("b-2", "Dune", "scifi")),
                               ("g3", book("b-3", "Emma", "romance"))])
    wait_until(lambda: aws.drained(stack.input_url), 90, 0.5, "the input queue to drain")

    scifi, romance = stack.buckets["scifi"], stack.buckets["romance"]
    assert sorted(aws.keys(scifi)) == ["books/Dune.json", "books/Dune~b-2.json"]
    assert aws.keys(romance) == ["romance/Emma.json"]
    for key in ("books/Dune.json", "books/Dune~b-2.json"):
        head = aws.s3.head_object(Bucket=scifi, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], head["BucketKeyEnabled"],
                head["StorageClass"]) == ("aws:kms", key_arn, True, "STANDARD_IA")
    head = aws.s3.head_object(Bucket=romance, Key="romance/Emma.json")
    assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")
    assert aws.counts(stack.dlq_url) == (0, 0)

    # LocalStack does not check the expected owner (AWS answers 403 to a request whose bucket
    # another account owns): every request about a book carried it, as the journal shows.
    requests = [e for e in journal.exchanges() if e.operation is not None
                and e.operation.name in ("PutObject", "HeadObject")]
    names = [e.operation.name for e in requests if e.operation is not None]
    assert names.count("PutObject") >= 4 and names.count("HeadObject") >= 1
    assert {e.headers.get(OWNER_HEADER) for e in requests} == {LOCALSTACK_ACCOUNT}
    for exchange in requests:
        if exchange.method == "PUT" and f"/{scifi}/" in exchange.path:
            assert (exchange.headers[SSE_HEADER], exchange.headers[KMS_KEY_HEADER],
                    exchange.headers[BUCKET_KEY_HEADER], exchange.headers[STORAGE_CLASS_HEADER]
                    ) == ("aws:kms", key_arn, "true", "STANDARD_IA")
        if exchange.method == "HEAD":
            assert SSE_HEADER not in exchange.headers


def sized_book(group: str, size: int) -> str:
    """A version of the book `group` (its id and title) of exactly `size` bytes."""
    head = f'{{"id":"{group}","title":"{group}","genre":"scifi","size":{size},"summary":"'
    return head + "x" * (size - len(head) - 2) + '"}'


def test_offloaded_payloads_are_filed_in_group_order_and_deleted_after_their_message(
        aws: Aws, aws_env: dict[str, str], versioned_stack: Stack, payload_bucket: str,
        journal: FaultProxy, shelver_factory: ShelverFactory) -> None:
    stack = versioned_stack
    limit = 10_500_000
    sent = {"g1": [sized_book("g1", 300_000), sized_book("g1", 2_000_000),
                   sized_book("g1", 10_000_000)],
            "g2": [sized_book("g2", 2_000_000), sized_book("g2", 300_000)]}
    library = producer(payload_bucket, endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                       aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"])
    too_large = sized_book("g3", limit + 1)
    for group, bodies in [*sent.items(), ("g3", [too_large])]:
        for body in bodies:
            library.send_message(QueueUrl=stack.input_url, MessageBody=body,
                                 MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex)
    assert len(aws.keys(payload_bucket)) == 6  # every one went to S3

    shelver = shelver_factory(stack, AWS_ENDPOINT_URL_S3=journal.url,
                              PAYLOAD_BUCKETS=payload_bucket, PAYLOAD_DELETE="true",
                              PAYLOAD_MAX_BYTES=str(limit))

    wait_until(lambda: aws.drained(stack.input_url), 180, 0.5, "the input queue to drain")
    bucket = stack.buckets["scifi"]
    history = aws.object_versions(bucket)
    assert sorted(history) == ["g1.json", "g2.json"]
    for group, bodies in sent.items():
        # Newest first: the versions, in the order of the group's messages.
        written = [aws.s3.get_object(Bucket=bucket, Key=f"{group}.json", VersionId=version)
                   ["Body"].read() for version, _ in history[f"{group}.json"]]
        assert written == [body.encode() for body in reversed(bodies)]

    [dead] = aws.receive_all(stack.dlq_url, expect=1)
    assert dead["MessageAttributes"]["shelver-reason"]["StringValue"] == "payload_too_large"
    # The pointer is dead-lettered as it came; its payload, never read, stays for a redrive.
    pointer = orjson.loads(dead["Body"])[1]
    assert aws.keys(payload_bucket) == [pointer["s3Key"]]
    gets = [e for e in journal.exchanges() if e.operation is not None
            and e.operation.name == "GetObject" and pointer["s3Key"] in e.path]
    assert gets == []
    metrics = shelver.metrics()
    assert metrics['shelver_messages_dead_lettered_total{reason="payload_too_large"}'] == 1
    assert metrics['shelver_books_stored_total{genre="scifi"}'] == 5


def test_a_1_mib_book_is_stored_and_a_1_mib_poison_message_dead_lettered(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory) -> None:
    good = sized_book("big", MIB)
    poison = good.replace('"genre":"scifi"', '"genre":"horro"')
    assert len(good.encode()) == len(poison.encode()) == MIB
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    for group, body in (("g1", good), ("g2", poison)):  # a batch holds 1 MiB in all
        aws.send(stack.input_url, [(group, body)])

    wait_until(lambda: aws.drained(stack.input_url), 90, 0.5, "the input queue to drain")
    assert aws.get(stack.buckets["scifi"], "big.json")[0] == good.encode()
    [dead] = aws.receive_all(stack.dlq_url, expect=1)
    assert dead["Body"].encode() == poison.encode()
    # At the DLQ's limit, the copy has no room for attributes (`SqsTransport.dead_letter`):
    # its reason is in the metric and the log line.
    assert shelver.metrics()['shelver_messages_dead_lettered_total{reason="unknown_genre"}'] == 1
    assert "unknown_genre" in shelver.log()
