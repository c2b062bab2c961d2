"""Destinations against LocalStack's S3 and KMS, with the headers of workers/destinations.py sent
through boto3: an SSE-KMS destination's object carries its key, its Bucket Key and its storage
class, under its prefix; the expected owner reaches the wire, though LocalStack does not enforce
it (AWS refuses a request whose bucket another account owns with 403 AccessDenied)."""

from __future__ import annotations

from typing import Any

import boto3

from tests.support.aws import Aws, Stack
from tests.support.proxy import FaultProxy
from workers.books.keys import object_key
from workers.destinations import (
    OWNER_HEADER,
    Destination,
    Encryption,
    S3Request,
    Sse,
    boto3_parameters,
    request_headers,
)

BODY = b'{"id":"b-1","title":"Dune","genre":"scifi"}'
LOCALSTACK_ACCOUNT = "000000000000"


def parameters(destination: Destination, request: S3Request) -> dict[str, Any]:
    return boto3_parameters(request_headers(destination, request))


def test_an_sse_kms_destination_is_written_with_its_key_under_its_prefix(
        aws: Aws, stack: Stack) -> None:
    key_arn = aws.stack_outputs()["KeyArn"]
    destination = Destination("scifi", stack.buckets["scifi"], "books/scifi/",
                              Encryption(Sse.KMS, key_arn), LOCALSTACK_ACCOUNT, "STANDARD_IA")
    key = destination.key(object_key("Dune"))
    aws.s3.put_object(Bucket=destination.bucket, Key=key, Body=BODY,
                      **parameters(destination, S3Request.PUT_OBJECT))

    head = aws.s3.head_object(Bucket=destination.bucket, Key=key,
                              **parameters(destination, S3Request.HEAD_OBJECT))
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], head["BucketKeyEnabled"],
            head["StorageClass"]) == ("aws:kms", key_arn, True, "STANDARD_IA")
    assert aws.keys(destination.bucket) == ["books/scifi/Dune.json"]
    stored = aws.s3.get_object(Bucket=destination.bucket, Key=key)["Body"].read()
    assert stored == BODY


def test_an_sse_s3_destination_is_written_with_sse_s3(aws: Aws, stack: Stack) -> None:
    destination = Destination("romance", stack.buckets["romance"],
                              encryption=Encryption(Sse.S3))
    aws.s3.put_object(Bucket=destination.bucket, Key="Emma.json", Body=BODY,
                      **parameters(destination, S3Request.PUT_OBJECT))
    head = aws.s3.head_object(Bucket=destination.bucket, Key="Emma.json")
    assert head["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in head


def test_the_expected_owner_is_on_the_wire_though_localstack_does_not_enforce_it(
        aws_env: dict[str, str], stack: Stack) -> None:
    wrong = Destination("scifi", stack.buckets["scifi"], expected_owner="111122223333")
    with FaultProxy(aws_env["AWS_ENDPOINT_URL"], journal=True) as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.url, region_name=aws_env["AWS_REGION"],
                          aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"])
        s3.head_bucket(Bucket=wrong.bucket, **parameters(wrong, S3Request.HEAD_BUCKET))
        s3.put_object(Bucket=wrong.bucket, Key="Dune.json", Body=BODY,
                      **parameters(wrong, S3Request.PUT_OBJECT))
        s3.head_object(Bucket=wrong.bucket, Key="Dune.json",
                       **parameters(wrong, S3Request.HEAD_OBJECT))
        s3.delete_object(Bucket=wrong.bucket, Key="Dune.json",
                         **parameters(wrong, S3Request.DELETE_OBJECT))
    # Each answered 2xx: LocalStack 2026.3.0 does not check the owner (AWS answers 403).
    exchanges = proxy.exchanges()
    assert [(e.method, e.status) for e in exchanges] == [
        ("HEAD", 200), ("PUT", 200), ("HEAD", 200), ("DELETE", 204)]
    assert {e.headers.get(OWNER_HEADER) for e in exchanges} == {"111122223333"}
