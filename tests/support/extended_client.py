"""The Amazon SQS Extended Client for Python (PyPI amazon-sqs-extended-client), as a producer.

Importing the library replaces `boto3.Session` (and `boto3.session.Session`) with its own
session class for the whole process, which would give every later SQS client of the test run
its receive and delete decorators. `producer` imports it and puts boto3 back: only the clients
made here are the library's.
"""

from __future__ import annotations

from typing import Any

import boto3
import boto3.session


def _session_class() -> Any:
    original = (boto3.session.Session, boto3.Session, boto3.DEFAULT_SESSION)
    try:
        from sqs_extended_client.client import SQSExtendedClientSession
    finally:
        boto3.session.Session, boto3.Session, boto3.DEFAULT_SESSION = original
    return SQSExtendedClientSession


def producer(bucket: str, *, endpoint_url: str | None = None, always_through_s3: bool = False,
             use_legacy_attribute: bool = False, **credentials: str) -> Any:
    """An SQS client of the library that offloads to `bucket` what it would offload to S3.

    The library makes its own S3 client without an endpoint (one for all the session's SQS
    clients); it is replaced by one of `endpoint_url`, so an emulator gets the payloads too."""
    session = _session_class()(region_name="us-east-1", **credentials)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    sqs.s3_client = session.client("s3", endpoint_url=endpoint_url)
    sqs.large_payload_support = bucket
    sqs.always_through_s3 = always_through_s3
    sqs.use_legacy_attribute = use_legacy_attribute
    return sqs
