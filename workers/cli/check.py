"""`shelver check`: preflight for a deploy, with the same settings and credentials as the service.

Settings valid (else exit code 3, as the service); then what the service's own start-up
preflight asks AWS (workers/aws/preflight.py: the input queue is FIFO, its dead-letter queue takes
its largest messages, each genre bucket's region); a misconfiguration the service would refuse
to start on is exit code 3 too, any other failure exit code 1. Then every genre bucket is proven
writable by the write Shelver makes, with the consumers' own S3 client (`S3_CLIENT`, the CRT by
default): a conditional put (`IfNoneMatch: *`) of a probe object, then its delete (boto3: the
consumers never delete). The probe is written as the genre's books are: under its key prefix,
with its destination's headers (encryption, storage class, expected owner: the delete carries
the owner too), so an SSE-KMS destination proves the KMS grant as well. The probe's key, after
the prefix, starts with `.`, which no book's key does (the key rule turns a leading `.` into
`_`), so it can never replace a book; IAM can grant `s3:DeleteObject` on that prefix alone.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from workers.aws.clients import make_s3, make_session
from workers.aws.preflight import Verdict, bucket_subject, examine
from workers.aws.s3 import S3Objects
from workers.cli.session import AWS_ERRORS, Session
from workers.destinations import Destination, S3Request, boto3_parameters, request_headers

PROBE_PREFIX = ".shelver-check/"
EXIT_FAILED = 1
EXIT_REFUSED = 3  # the service would not start: as for invalid settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "check", help="preflight: settings, queue, dead-letter queue, buckets writable",
        description="Preflight for a deploy: settings valid, the service's start-up preflight "
                    "(input queue FIFO, its dead-letter queue, each bucket's region), every "
                    "genre bucket writable with the consumers' S3 client (a conditional put of "
                    "a probe object, then its delete). One line per failure; exit code 3 for "
                    "what the service would refuse to start on, 1 for any other failure.",
    ).set_defaults(run=check)


def check(args: argparse.Namespace, session: Session) -> int:
    failures = 0

    def report(what: str, failure: str | None) -> None:
        nonlocal failures
        if failure is None:
            print(f"ok    {what}")
        else:
            failures += 1
            print(f"FAIL  {what}: {failure}", file=sys.stderr)

    settings = session.settings
    findings = examine(settings, session.sqs, session.s3)
    refused = {finding.subject for finding in findings if finding.verdict is Verdict.REFUSED}
    for finding in findings:
        if finding.verdict is Verdict.OK:
            report(f"{finding.subject}: {finding.detail}", None)
        else:
            report(finding.subject, finding.detail)
    objects = make_s3(make_session(), threads=1, s3_client=settings.s3_client)
    for genre, destination in settings.destinations.items():
        subject = bucket_subject(genre, destination.bucket)
        if subject not in refused:
            report(f"{subject} writable", probe_bucket(session, objects, destination))
    if refused:
        return EXIT_REFUSED
    if failures:
        return EXIT_FAILED
    print("all checks passed")
    return 0


def probe_bucket(session: Session, objects: S3Objects, destination: Destination) -> str | None:
    """Write a probe object with `objects` as a book of `destination` is written, then delete
    it; None if both worked, else what failed."""
    bucket, key = destination.bucket, destination.key(f"{PROBE_PREFIX}{uuid.uuid4()}")
    try:
        objects.put(bucket, key, b"", content_type="application/octet-stream", metadata={},
                    if_none_match=True,
                    headers=request_headers(destination, S3Request.PUT_OBJECT))
    except AWS_ERRORS as exc:
        return session.describe(exc, "PutObject")
    try:
        session.s3.delete_object(Bucket=bucket, Key=key, **boto3_parameters(
            request_headers(destination, S3Request.DELETE_OBJECT)))
    except AWS_ERRORS as exc:
        return f"{session.describe(exc)} (probe object {key} left in the bucket)"
    return None
