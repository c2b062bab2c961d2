"""boto3 helpers for the end-to-end tests, against the emulator the session started."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson

DEPLOYED_QUEUE = "InputQueue.fifo"
DEPLOYED_DLQ = "InputQueueDLQ.fifo"
DEPLOYED_STACK = "shelver-local"


@dataclass(frozen=True)
class Stack:
    """One set of Shelver resources: input queue, its DLQ, a bucket per genre."""

    input_name: str
    input_url: str
    dlq_url: str
    buckets: dict[str, str] = field(default_factory=dict)

    def shelver_env(self) -> dict[str, str]:
        return {
            "INPUT_QUEUE": self.input_name,
            "GENRE_BUCKETS": ",".join(f"{g}={b}" for g, b in self.buckets.items()),
        }


def book(book_id: str, title: str, genre: str, **extra: Any) -> dict[str, Any]:
    return {"id": book_id, "title": title, "author": "John Doe", "year": "1960",
            "genre": genre, "summary": "Lorem ipsum dolor sit amet.", **extra}


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2,
               what: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Aws:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        self.sqs = self.client("sqs")
        self.s3 = self.client("s3")

    def client(self, service: str) -> Any:
        """A new client of the emulator (its own connections, e.g. for another thread)."""
        return self._session.client(service, endpoint_url=self.env["AWS_ENDPOINT_URL"])

    # -- resources ----------------------------------------------------------------------------
    def stack_outputs(self, stack: str = DEPLOYED_STACK) -> dict[str, str]:
        """The deployed serverless.yml stack's outputs (KeyArn, ConsumerPolicyArn, ...)."""
        described = self.client("cloudformation").describe_stacks(StackName=stack)
        return {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0]["Outputs"]}

    def queue_url(self, name: str) -> str:
        return str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])

    def attributes(self, url: str) -> dict[str, str]:
        response = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        return dict(response["Attributes"])

    def clone_stack(self, visibility_timeout: int | None = None, versioned: bool = False,
                    max_receive_count: int | None = None) -> Stack:
        """New resources with the deployed stack's settings (serverless.yml is the source),
        but for a given visibility timeout or redrive `maxReceiveCount`.

        `versioned` turns on bucket versioning, so every write of a key stays listed in order."""
        prefix = f"t{uuid.uuid4().hex[:10]}"
        deployed = self.attributes(self.queue_url(DEPLOYED_QUEUE))
        deployed_dlq = self.attributes(self.queue_url(DEPLOYED_DLQ))
        dlq_url = self.sqs.create_queue(QueueName=f"{prefix}-{DEPLOYED_DLQ}", Attributes={
            "FifoQueue": "true",
            "ContentBasedDeduplication": deployed_dlq["ContentBasedDeduplication"],
            "MessageRetentionPeriod": deployed_dlq["MessageRetentionPeriod"],
            "MaximumMessageSize": deployed_dlq["MaximumMessageSize"],
        })["QueueUrl"]
        dlq_arn = self.attributes(dlq_url)["QueueArn"]
        redrive = orjson.loads(deployed["RedrivePolicy"])
        input_name = f"{prefix}-{DEPLOYED_QUEUE}"
        input_url = self.sqs.create_queue(QueueName=input_name, Attributes={
            "FifoQueue": "true",
            "ContentBasedDeduplication": deployed["ContentBasedDeduplication"],
            "VisibilityTimeout": str(visibility_timeout or deployed["VisibilityTimeout"]),
            "MaximumMessageSize": deployed["MaximumMessageSize"],
            "RedrivePolicy": orjson.dumps({"deadLetterTargetArn": dlq_arn,
                                           "maxReceiveCount": max_receive_count
                                           or redrive["maxReceiveCount"]}).decode(),
        })["QueueUrl"]
        buckets = {genre: self.create_bucket(f"{prefix}-{genre}", versioned)
                   for genre in ("scifi", "romance")}
        return Stack(input_name, input_url, dlq_url, buckets)

    @contextmanager
    def cloned_stack(self, visibility_timeout: int | None = None, versioned: bool = False,
                     max_receive_count: int | None = None) -> Iterator[Stack]:
        """`clone_stack`, deleted again when the block ends."""
        stack = self.clone_stack(visibility_timeout, versioned, max_receive_count)
        try:
            yield stack
        finally:
            self.delete_stack(stack)

    def create_bucket(self, name: str, versioned: bool = False) -> str:
        self.s3.create_bucket(Bucket=name)
        if versioned:
            self.s3.put_bucket_versioning(Bucket=name,
                                          VersioningConfiguration={"Status": "Enabled"})
        return name

    def delete_stack(self, stack: Stack) -> None:
        for url in (stack.input_url, stack.dlq_url):
            self.sqs.delete_queue(QueueUrl=url)
        for bucket in stack.buckets.values():
            self.delete_bucket(bucket)

    def delete_bucket(self, bucket: str) -> None:
        # Every version: a versioned bucket is only empty once its history is gone too.
        targets = [{"Key": key, "VersionId": version}
                   for key, versions in self.object_versions(bucket).items()
                   for version, _ in versions]
        for start in range(0, len(targets), 1000):
            self.s3.delete_objects(Bucket=bucket,
                                   Delete={"Objects": targets[start:start + 1000], "Quiet": True})
        self.s3.delete_bucket(Bucket=bucket)

    # -- messages -----------------------------------------------------------------------------
    def send(self, url: str, items: Sequence[tuple[str, bytes | str | dict[str, Any]]]
             ) -> list[str]:
        """Send (group, body) pairs in order; dict bodies are JSON-encoded. Returns message ids."""
        ids: list[str] = []
        for start in range(0, len(items), 10):
            entries = []
            for i, (group, body) in enumerate(items[start:start + 10]):
                if isinstance(body, dict):
                    body = orjson.dumps(body)
                text = body.decode() if isinstance(body, bytes) else body
                entries.append({"Id": str(i), "MessageBody": text, "MessageGroupId": group,
                                "MessageDeduplicationId": uuid.uuid4().hex})
            response = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert not response.get("Failed"), response.get("Failed")
            by_id = {r["Id"]: r["MessageId"] for r in response["Successful"]}
            ids.extend(by_id[str(i)] for i in range(len(entries)))
        return ids

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight)"""
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attributes["ApproximateNumberOfMessages"]),
                int(attributes["ApproximateNumberOfMessagesNotVisible"]))

    def drained(self, url: str) -> bool:
        return self.counts(url) == (0, 0)

    def receive_all(self, url: str, wait: float = 2.0, expect: int | None = None
                    ) -> list[dict[str, Any]]:
        """Take every visible message (with attributes) off a queue, deleting each: a FIFO
        group hands out its next message only once the previous one is gone. Receives for
        `wait` seconds, or, given `expect`, until that many came and then a receive came empty."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            batch = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId"],
            ).get("Messages", [])
            messages.extend(batch)
            for message in batch:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if not batch:
                if expect is not None and len(messages) >= expect:
                    break
                time.sleep(0.1)
        return messages

    # -- objects ------------------------------------------------------------------------------
    def keys(self, bucket: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def object_versions(self, bucket: str) -> dict[str, list[tuple[str, str]]]:
        """Every key's history as (version id, ETag without quotes), newest first, as S3 lists
        it: the order of the list is the order of the writes (timestamps may tie). Delete
        markers, which nothing here expects, come last with an empty ETag. LocalStack repeats
        the first page when the key marker contains a space (botocore then stops with "the same
        next token was received twice"): past 1000 versions, keep spaces out of the keys."""
        history: dict[str, list[tuple[str, str]]] = {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for item in page.get("Versions", []):
                history.setdefault(item["Key"], []).append(
                    (item["VersionId"], item["ETag"].strip('"')))
            for marker in page.get("DeleteMarkers", []):
                history.setdefault(marker["Key"], []).append((marker["VersionId"], ""))
        return history

    def version_metadata(self, bucket: str, key: str, version_id: str) -> dict[str, str]:
        """The user metadata of one version of an object (names lower case, no prefix)."""
        response = self.s3.head_object(Bucket=bucket, Key=key, VersionId=version_id)
        return dict(response.get("Metadata") or {})

    def get(self, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
        response = self.s3.get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), response

    def objects(self, stack: Stack) -> dict[tuple[str, str], bytes]:
        """Every stored file of a stack: (genre, key) -> body."""
        return {
            (genre, key): self.get(bucket, key)[0]
            for genre, bucket in stack.buckets.items()
            for key in self.keys(bucket)
        }
