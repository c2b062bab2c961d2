"""Payloads offloaded to S3 by the Amazon SQS Extended Client: recognising a pointer message.

A producer using AWS's extended client libraries (Java, Python, ...) with a record larger than
256 KB (or with ``always_through_s3``) puts the record in an S3 bucket and sends, instead, a
message whose body points at it. What amazon-sqs-extended-client 1.0.1 (PyPI) sends, as seen
on the wire (tests/unit/test_payloads.py and tests/e2e/test_payloads_emulator.py hold it)::

    MessageBody: ["software.amazon.payloadoffloading.PayloadS3Pointer",
                  {"s3BucketName": "acme-payloads", "s3Key": "8a499dfa-1104-...-3ca2c6bb2677"}]
    MessageAttributes: {"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "300000"}}

- the key is a random UUID, or the value of the message's own ``S3Key`` attribute if it has one;
- ``use_legacy_attribute`` sends the older names: ``com.amazon.sqs.javamessaging.MessageS3Pointer``
  and ``SQSLargePayloadSize``; the Java library writes the same JSON without the spaces;
- the size attribute is the payload's length in bytes (UTF-8); the producer refuses a message of
  its own that uses either size attribute name, so an attribute of that name is the library's;
- MessageGroupId and MessageDeduplicationId pass through unchanged: FIFO queues work, and the
  order of a group is the order of its pointers.

The library's own consumer tells a pointer by the size attribute alone, which only a receive
that asks for it sees (`SIZE_ATTRIBUTES` is what ReceiveMessage's MessageAttributeNames must
name). `read_pointer` also tells one by its body: a JSON array starting with a pointer class can
never be a book (a book is a JSON object), so a receive that did not ask for the attribute, or a
producer that drops it, still has its payload filed rather than its pointer dead-lettered.

A pointer is read strictly: anything but the two members above is an invalid pointer, for a
member this module does not know (a version id, say) could change which object is meant. Which
buckets a pointer may name is the operator's allowlist (`PayloadRules`): a pointer is the
producer's word, and without the allowlist any producer could have Shelver read, file, and then
delete, any object Shelver's role can reach.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from botocore.exceptions import ClientError

from workers.aws.s3 import ObjectTooLarge
from workers.destinations import check_bucket_name

POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"
POINTER_CLASSES = (POINTER_CLASS, LEGACY_POINTER_CLASS)
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
LEGACY_SIZE_ATTRIBUTE = "SQSLargePayloadSize"
# The message attributes a receive must ask for (MessageAttributeNames) to see the sizes.
SIZE_ATTRIBUTES = (SIZE_ATTRIBUTE, LEGACY_SIZE_ATTRIBUTE)
_POINTER_MEMBERS = frozenset({"s3BucketName", "s3Key"})
MAX_KEY_BYTES = 1024

# Why a pointer message cannot be filed (dead-letter reasons, metric labels).
POINTER_INVALID = "payload_pointer_invalid"
BUCKET_NOT_ALLOWED = "payload_bucket_not_allowed"
TOO_LARGE = "payload_too_large"
MISSING = "payload_missing"  # no such object (or bucket): deleted, expired, never written
# S3 refused the read for good: access denied (IAM, a KMS key policy, a bucket of another
# account), or another 4xx that a retry cannot change.
UNREADABLE = "payload_unreadable"
REASONS = (POINTER_INVALID, BUCKET_NOT_ALLOWED, TOO_LARGE, MISSING, UNREADABLE)
# 4xx answers that a retry can change: throttled, timed out, a clock skew being corrected.
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                              "RequestTimeTooSkewed", "RequestLimitExceeded", "TooManyRequests"})

# A pointer's body starts with '[' after JSON whitespace; a book's with '{'. Matched in place:
# no copy of a body that may be 1 MiB.
_ARRAY_START = re.compile(r"[ \t\n\r]*\[")
_ARRAY_START_BYTES = re.compile(rb"[ \t\n\r]*\[")


class InvalidPointer(Exception):
    """A permanent failure: the pointer message can never become a book."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # one of REASONS
        self.detail = detail


@dataclass(frozen=True)
class PayloadPointer:
    bucket: str
    key: str
    # The size the producer declared (its size attribute), if the receive asked for it.
    size: int | None = None


def read_pointer(body: str | bytes, attributes: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> PayloadPointer | None:
    """The pointer a message carries, None if it is not a pointer message (an ordinary book, or
    anything the book decoder will refuse itself); InvalidPointer if it is one that cannot be
    read. `attributes` are the message's MessageAttributes, as boto3 answers them."""
    size = _declared_size(attributes or {})
    parsed = _pointer_array(body)
    if parsed is None:
        if size is not None:
            raise InvalidPointer(POINTER_INVALID, "the message declares an offloaded payload "
                                 f"({size[0]}) but its body is not a pointer")
        return None
    if len(parsed) != 2 or not isinstance(parsed[1], dict):
        raise InvalidPointer(POINTER_INVALID, f"a {parsed[0]} must be followed by one object "
                             "of s3BucketName and s3Key")
    members = parsed[1]
    if set(members) != _POINTER_MEMBERS:
        raise InvalidPointer(POINTER_INVALID, "the pointer's object must have exactly "
                             f"s3BucketName and s3Key, has {', '.join(sorted(members)) or 'none'}")
    bucket, key = members["s3BucketName"], members["s3Key"]
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise InvalidPointer(POINTER_INVALID, "s3BucketName and s3Key must be strings")
    try:
        check_bucket_name(bucket)
    except ValueError as exc:
        raise InvalidPointer(POINTER_INVALID, f"s3BucketName: {exc}") from None
    if not key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidPointer(POINTER_INVALID, f"s3Key must be 1 to {MAX_KEY_BYTES} bytes")
    return PayloadPointer(bucket, key, None if size is None else size[1])


def _pointer_array(body: str | bytes) -> list[Any] | None:
    """The body parsed, if it is a JSON array that starts with a pointer class; else None."""
    starts_as_array = (_ARRAY_START_BYTES.match(body) if isinstance(body, bytes)
                       else _ARRAY_START.match(body))
    if not starts_as_array:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed and parsed[0] in POINTER_CLASSES:
        return parsed
    return None


def _declared_size(attributes: Mapping[str, Mapping[str, Any]]) -> tuple[str, int] | None:
    """(attribute name, size) of the size attribute, if the message has one."""
    name = next((name for name in SIZE_ATTRIBUTES if name in attributes), None)
    if name is None:
        return None
    attribute = attributes[name]
    text = attribute.get("StringValue")
    # SQS's Number type may carry a custom suffix ("Number.int"); the library sends "Number".
    number = str(attribute.get("DataType", "")).split(".")[0] == "Number"
    if not number or not isinstance(text, str) or not text.isdigit() or not text.isascii():
        raise InvalidPointer(POINTER_INVALID, f"message attribute {name} must be a Number of "
                             f"bytes, is {attribute.get('DataType')} {text!r}")
    return name, int(text)


@dataclass(frozen=True)
class PayloadRules:
    """What the operator allows a pointer: the buckets it may name, the largest payload."""

    buckets: frozenset[str]
    max_bytes: int

    def admit(self, pointer: PayloadPointer) -> None:
        """InvalidPointer unless `pointer` names an allowed bucket and declares no more than
        `max_bytes` (checked again on the object's real size, `admit_size`, when it is read)."""
        if pointer.bucket not in self.buckets:
            allowed = ", ".join(sorted(self.buckets)) or "none"
            raise InvalidPointer(BUCKET_NOT_ALLOWED, f"bucket {pointer.bucket!r} is not one of "
                                 f"the payload buckets ({allowed})")
        if pointer.size is not None:
            self.admit_size(pointer.size)

    def admit_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise InvalidPointer(TOO_LARGE, f"the payload is {size:,} bytes, more than "
                                 f"{self.max_bytes:,}")


class PayloadObjects(Protocol):
    """The S3 calls about payload objects (`workers.aws.s3.Boto3Payloads`)."""

    def get(self, bucket: str, key: str, max_bytes: int) -> bytes: ...

    def delete_object(self, bucket: str, key: str) -> None: ...


class PayloadReader:
    """Reads the payload a pointer names, if the rules admit it: its bytes, or InvalidPointer
    with the reason it never can be read. Any other failure (the network, a 5xx, throttling)
    propagates as the S3 client raised it, for the message to be retried."""

    def __init__(self, objects: PayloadObjects, rules: PayloadRules) -> None:
        self._objects = objects
        self._rules = rules

    def read(self, pointer: PayloadPointer) -> bytes:
        self._rules.admit(pointer)
        where = f"s3://{pointer.bucket}/{pointer.key}"
        try:
            return self._objects.get(pointer.bucket, pointer.key, self._rules.max_bytes)
        except ObjectTooLarge as exc:
            raise InvalidPointer(TOO_LARGE, f"{where}: {exc}") from None
        except ClientError as exc:
            reason = _refusal(exc)
            if reason is None:
                raise
            error = exc.response.get("Error", {})
            raise InvalidPointer(reason, f"{where}: S3 answered {_status(exc)} "
                                 f"{error.get('Code')}: {error.get('Message')}") from None

    def delete_object(self, bucket: str, key: str) -> None:
        self._objects.delete_object(bucket, key)


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _refusal(exc: ClientError) -> str | None:
    """The dead-letter reason of an S3 error answer to a payload's GetObject; None if a retry
    may succeed."""
    status, code = _status(exc), exc.response.get("Error", {}).get("Code")
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket"):
        return MISSING
    if 400 <= status < 500 and status not in (408, 429) and code not in _TRANSIENT_CODES:
        return UNREADABLE
    return None
