"""The two S3 calls Shelver makes, behind one small interface with two implementations.

`S3Objects` is all `BookStore` needs: a PutObject, conditional or not, that answers the new
ETag, and a HeadObject that answers the ETag and the user metadata. Both implementations fail as
boto3 does: `botocore.exceptions.ClientError` with S3's error code and HTTP status for an error
answer, a `BotoCoreError` (`EndpointConnectionError`, `ConnectionClosedError`, `ReadTimeoutError`,
...) for the network, after the same three attempts; so nothing above the storage layer
(processing, metrics, retries, /health) can tell which one runs. A HeadObject answered 2xx
without an ETag (a proxy's page, say: S3 always sends one) is botocore's ResponseParserError in
both, never an object whose ETag is "". `S3_CLIENT` picks it:

- `crt` (default): `workers.aws.s3crt.CrtObjects`, AWS's Common Runtime, which signs and sends a put
  in C for a third of boto3's CPU or less;
- `boto3`: `Boto3Objects` below, the fallback.

`look_up_bucket` asks S3 where a bucket is: the CRT client signs for that region (boto3 follows
S3's redirect to it by itself), and the start-up preflight reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from workers.destinations import boto3_parameters
from workers.tracing import Tracing

# S3 names a bucket's region in this header of every HeadBucket answer it sends from the bucket's
# own region or as a redirect to it: 200, and the 301/400 of a request for another region, and
# the 403 of a caller without s3:ListBucket (the consumers' policy does not grant it).
REGION_HEADER = "x-amz-bucket-region"
# A request's extra headers (`workers.destinations.request_headers`): none.
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class ObjectHead:
    etag: str
    metadata: Mapping[str, str]  # user metadata, names lower case without `x-amz-meta-`


def object_head(etag: str | None, metadata: Mapping[str, str], bucket: str, key: str
                ) -> ObjectHead:
    """A HeadObject's answer; one without an ETag is malformed."""
    if not etag:
        raise ResponseParserError(f"HeadObject s3://{bucket}/{key}: a 2xx answer without ETag")
    return ObjectHead(etag, metadata)


class S3Objects(Protocol):
    """`headers`: the destination's (`workers.destinations.request_headers`, names in lower
    case), which both implementations send as they are: the CRT one adds them to the request,
    the boto3 one passes the parameters botocore writes them from."""

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str,
            metadata: Mapping[str, str], if_none_match: bool = False,
            if_match: str | None = None, headers: Mapping[str, str] = NO_HEADERS
            ) -> str | None:
        """PutObject (`If-None-Match: *` and/or `If-Match: <etag>` when asked); the new ETag."""

    def head(self, bucket: str, key: str, *, headers: Mapping[str, str] = NO_HEADERS
             ) -> ObjectHead:
        """HeadObject: the ETag and user metadata of an existing object."""


class Boto3Objects:
    """`S3Objects` on a boto3 S3 client (thread-safe, as the client is)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str,
            metadata: Mapping[str, str], if_none_match: bool = False,
            if_match: str | None = None, headers: Mapping[str, str] = NO_HEADERS
            ) -> str | None:
        condition: dict[str, str | bool] = boto3_parameters(headers)
        if if_none_match:
            condition["IfNoneMatch"] = "*"
        if if_match is not None:
            condition["IfMatch"] = if_match
        response = self.client.put_object(Bucket=bucket, Key=key, Body=body,
                                          ContentType=content_type, Metadata=dict(metadata),
                                          **condition)
        etag = response.get("ETag")
        return str(etag) if etag else None

    def head(self, bucket: str, key: str, *, headers: Mapping[str, str] = NO_HEADERS
             ) -> ObjectHead:
        response = self.client.head_object(Bucket=bucket, Key=key, **boto3_parameters(headers))
        return object_head(response.get("ETag"), response.get("Metadata") or {}, bucket, key)


class ObjectTooLarge(Exception):
    """An object larger than a read may take; nothing more of it was read."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the object is {size:,} bytes or more, more than {limit:,}")
        self.size = size


# A payload is read in pieces of this size: an object whose Content-Length lied (a proxy's
# answer, say) costs at most this much more than `max_bytes`.
READ_CHUNK_BYTES = 1024 * 1024


class Boto3Payloads:
    """GetObject and DeleteObject of payloads offloaded by the Amazon SQS Extended Client, on a
    boto3 S3 client (thread-safe) whichever S3_CLIENT writes the books: a payload is read once,
    where a book may take three requests, and the CRT client has no GET of its own here."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, bucket: str, key: str, max_bytes: int) -> bytes:
        """The object's bytes; `ObjectTooLarge` without reading them if it has more than
        `max_bytes` (by its Content-Length, and again as it is read)."""
        response = self.client.get_object(Bucket=bucket, Key=key)
        stream = response["Body"]
        try:
            size = int(response.get("ContentLength") or 0)
            if size > max_bytes:
                raise ObjectTooLarge(size, max_bytes)
            pieces: list[bytes] = []
            read = 0
            while piece := stream.read(min(READ_CHUNK_BYTES, max_bytes + 1 - read)):
                pieces.append(piece)
                read += len(piece)
                if read > max_bytes:
                    raise ObjectTooLarge(read, max_bytes)
            return b"".join(pieces)
        finally:
            stream.close()

    def delete_object(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)


@dataclass(frozen=True)
class BucketLookup:
    """What a HeadBucket answered: its HTTP status, and the bucket's region if it told."""

    status: int
    region: str | None


def look_up_bucket(s3: Any, bucket: str, expected_owner: str | None = None) -> BucketLookup:
    """HeadBucket with the boto3 client `s3`, with `expected_owner` as its ExpectedBucketOwner
    if given (S3 answers 403 when another account owns the bucket). The region is the one S3
    names; a 200 that names none (an S3-compatible store without regions) means the client's.
    An error answer is a result, not an exception (a 403 still names the region; a 404 means
    no such bucket, yet); a failure without an answer (network, credentials) is raised as boto3
    raises it."""
    owner = {} if expected_owner is None else {"ExpectedBucketOwner": expected_owner}
    try:
        metadata = s3.head_bucket(Bucket=bucket, **owner)["ResponseMetadata"]
    except ClientError as exc:
        metadata = exc.response.get("ResponseMetadata", {})
    status = int(metadata.get("HTTPStatusCode") or 0)
    region = metadata.get("HTTPHeaders", {}).get(REGION_HEADER) or None
    if region is None and status == 200:
        region = s3.meta.region_name
    return BucketLookup(status, region)


def traced_objects(objects: S3Objects, tracing: Tracing) -> S3Objects:
    """`objects` (either S3 client) with a span per request; itself when tracing is off."""
    return objects if not tracing.enabled else _TracedObjects(objects, tracing)


class _TracedObjects:
    def __init__(self, objects: S3Objects, tracing: Tracing) -> None:
        self._objects = objects
        self._tracing = tracing

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str,
            metadata: Mapping[str, str], if_none_match: bool = False,
            if_match: str | None = None, headers: Mapping[str, str] = NO_HEADERS
            ) -> str | None:
        with self._tracing.s3("PutObject", bucket, key):
            return self._objects.put(bucket, key, body, content_type=content_type,
                                     metadata=metadata, if_none_match=if_none_match,
                                     if_match=if_match, headers=headers)

    def head(self, bucket: str, key: str, *, headers: Mapping[str, str] = NO_HEADERS
             ) -> ObjectHead:
        with self._tracing.s3("HeadObject", bucket, key):
            return self._objects.head(bucket, key, headers=headers)
