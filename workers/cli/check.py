"""`shelver check`: preflight for a deploy, with the same settings and credentials as the service.

Settings valid (else exit code 3, as the service), input queue found, its dead-letter queue
discovered, every genre bucket writable. A bucket is proven writable by the write Shelver makes: a
conditional put (`IfNoneMatch: *`) of a probe object, then its delete. The probe's key starts with
`.`, which no book's key does (books.py turns a leading `.` into `_`), so it can never replace a
book; IAM can grant `s3:DeleteObject` on that prefix alone.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from workers.cli.session import AWS_ERRORS, Session
from workers.transport import discover_queue

PROBE_PREFIX = ".shelver-check/"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "check", help="preflight: settings, queue, dead-letter queue, buckets writable",
        description="Preflight for a deploy: settings valid, input queue found, dead-letter "
                    "queue discovered, every genre bucket writable (a conditional put of a "
                    "probe object, then its delete). One line per failure, exit code 1.",
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
    try:
        queue = discover_queue(session.sqs, settings.input_queue)
    except AWS_ERRORS as exc:
        report(f"input queue {settings.input_queue}", session.describe(exc))
    else:
        report(f"input queue {queue.url}", None)
        report(f"dead-letter queue {queue.dead_letter_url or ''}".rstrip(),
               None if queue.dead_letter_url else "the input queue has no RedrivePolicy")
    for genre, bucket in settings.genre_buckets.items():
        report(f"bucket {bucket} (genre {genre}) writable", probe_bucket(session, bucket))
    if failures:
        return 1
    print("all checks passed")
    return 0


def probe_bucket(session: Session, bucket: str) -> str | None:
    """Write and delete a probe object; None if both worked, else what failed."""
    key = f"{PROBE_PREFIX}{uuid.uuid4()}"
    try:
        session.s3.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
    except AWS_ERRORS as exc:
        return session.describe(exc)
    try:
        session.s3.delete_object(Bucket=bucket, Key=key)
    except AWS_ERRORS as exc:
        return f"{session.describe(exc)} (probe object {key} left in the bucket)"
    return None
