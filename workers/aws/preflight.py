"""The start-up preflight: what the settings name, asked of AWS once, before any consumer starts.

`workers.settings` parses and validates without calling AWS, or anything of AWS's. This module
checks the settings against AWS, in the gunicorn master (gunicorn.conf.py: at start, and on a
reload before its settings are applied) and in `shelver` (every command checks the environment,
`shelver check` asks AWS too).

First what botocore can tell without a call (`check_environment`): the region boto3 would call,
and, for S3_CLIENT=crt or SQS_CLIENT=crt, that awscrt is installed and that boto3 would not reach
AWS in a way the CRT clients do not (through a proxy, a special endpoint). Then AWS itself
(`examine`):

- INPUT_QUEUE is a FIFO queue: Shelver keeps each message group in order, and a standard queue's
  messages have no group (each consumer checks again when it looks the queue up);
- its dead-letter queue (the RedrivePolicy's) takes every message the input queue takes: its
  MaximumMessageSize is at least the input queue's, or a book near the limit could never be
  dead-lettered;
- each genre bucket's region (HeadBucket's `x-amz-bucket-region`, which needs no permission);
  with S3_CLIENT=crt, that the CRT client can reach the bucket there (it signs for the bucket's
  region, which each consumer asks S3 for itself: `workers.aws.s3crt`).

A definite misconfiguration is REFUSED: start-up stops with exit code 3 and a message naming the
variable and what to do (a `ConfigError`, as for a bad value). What cannot be decided now is a
WARNING, logged: AWS out of reach (an outage, an emulator not up yet), an access denied, a queue
or a bucket missing. The consumers find those out again and retry, as they always did: refusing
to start on a brief outage would have an orchestrator restart every pod at once.

Cost: one attempt per call, CONNECT_TIMEOUT_SECONDS to connect and READ_TIMEOUT_SECONDS to answer:
GetQueueUrl (not for a queue URL) and GetQueueAttributes for the input queue, the same for its
DLQ, and a HeadBucket per genre bucket: 6 calls with the default settings, a fraction of a second
(`python -m bench.preflight_cost`), most of it making the two boto3 clients. A service that gives
no answer is not asked again: AWS out of reach costs at most one timeout per service.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from workers.aws.clients import make_session
from workers.aws.errors import describe
from workers.aws.s3 import look_up_bucket
from workers.aws.sqs import QueueInfo, discover_queue
from workers.logs import Logger
from workers.settings import ConfigError, Settings

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5
_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1},
                 connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS)


class Verdict(enum.Enum):
    OK = "ok"
    WARNING = "warning"  # the service starts, and retries; `shelver check` fails (exit code 1)
    REFUSED = "refused"  # the service does not start (exit code 3), nor does `shelver check`


@dataclass(frozen=True)
class Finding:
    subject: str  # what was asked about: "input queue <url>", "bucket <name> (genre <genre>)"
    verdict: Verdict
    detail: str  # what AWS said; for REFUSED, the message naming the variable and what to do


def not_fifo(input_queue: str) -> str:
    """Why a standard queue cannot be INPUT_QUEUE, and what to do."""
    return (f"INPUT_QUEUE={input_queue!r} is a standard queue: Shelver needs a FIFO queue "
            "(FifoQueue true, a name ending in .fifo), whose message groups keep each book's "
            "versions in order; set INPUT_QUEUE to a FIFO queue")


def bucket_subject(genre: str, bucket: str) -> str:
    return f"bucket {bucket} (genre {genre})"


def check_environment(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """What botocore tells without calling AWS: raise `ConfigError` when boto3 would not know
    which region to call, or a CRT client chosen cannot be used (awscrt not installed, or AWS
    reached in a way it does not do)."""
    env = os.environ if env is None else env
    _check_region(env)
    _check_crt_clients(settings, env)


def _check_region(env: Mapping[str, str]) -> None:
    """Fail at start-up, not in every consumer, when boto3 would not know which region to call."""
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or make_session().region_name:
        return
    raise ConfigError("AWS_REGION is not set (nor AWS_DEFAULT_REGION, nor a region in the AWS "
                      "profile): expected a region name such as us-east-1")


def _check_crt_clients(settings: Settings, env: Mapping[str, str]) -> None:
    """A CRT client must be installed, and able to reach AWS the way boto3 would."""
    chosen = [name for name, client in (("S3_CLIENT", settings.s3_client),
                                        ("SQS_CLIENT", settings.sqs_client)) if client == "crt"]
    if not chosen:
        return
    try:
        from workers.aws import s3crt, sqscrt  # awscrt is needed only when chosen
        from workers.aws.crt import UnsupportedByCrt
    except ImportError as exc:
        raise ConfigError(f"{chosen[0]}=crt needs the awscrt package ({exc}): install "
                          f"requirements/app.txt, or set {chosen[0]}=boto3") from None
    session = make_session(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"))
    try:
        if settings.s3_client == "crt":
            s3crt.check_supported(session.client("s3"), settings.genre_buckets)
    except UnsupportedByCrt as exc:
        raise ConfigError(f"S3_CLIENT=crt cannot be used: {exc}; set S3_CLIENT=boto3") from None
    try:
        if settings.sqs_client == "crt":
            sqscrt.check_supported(session.client("sqs"))
    except UnsupportedByCrt as exc:
        raise ConfigError(f"SQS_CLIENT=crt cannot be used: {exc}; set SQS_CLIENT=boto3") from None


def examine(settings: Settings, sqs: Any, s3: Any) -> list[Finding]:
    """Ask AWS, with these boto3 clients, about what `settings` name."""
    return [*_queues(settings, sqs), *_buckets(settings, s3)]


def _out_of_reach(service: str, exc: BotoCoreError, consequence: str) -> Finding:
    return Finding(service, Verdict.WARNING, f"not checked ({describe(exc)}): {consequence}")


def _queues(settings: Settings, sqs: Any) -> list[Finding]:
    try:
        queue = discover_queue(sqs, settings.input_queue)
    except BotoCoreError as exc:
        return [_out_of_reach("SQS", exc, "the consumers look INPUT_QUEUE up themselves, "
                                          "retrying")]
    except ClientError as exc:
        return [Finding(f"input queue {settings.input_queue}", Verdict.WARNING, describe(exc))]
    subject = f"input queue {queue.url}"
    if not queue.fifo:
        return [Finding(subject, Verdict.REFUSED, not_fifo(settings.input_queue))]
    found = Finding(subject, Verdict.OK, "FIFO")
    if queue.dead_letter_url is None:
        return [found, Finding("dead-letter queue", Verdict.WARNING,
                               "the input queue has no RedrivePolicy")]
    return [found, _dead_letter_queue(settings, sqs, queue, queue.dead_letter_url)]


def _dead_letter_queue(settings: Settings, sqs: Any, queue: QueueInfo, url: str) -> Finding:
    subject = f"dead-letter queue {url}"
    try:
        size = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "MaximumMessageSize"])["Attributes"]["MaximumMessageSize"])
    except BotoCoreError as exc:
        return _out_of_reach("SQS", exc, "the dead-letter queue's MaximumMessageSize")
    except ClientError as exc:
        return Finding(subject, Verdict.WARNING, describe(exc))
    limit = queue.max_message_size
    if limit is not None and size < limit:
        # A book larger than the DLQ takes could only stall its group, never be dead-lettered.
        return Finding(subject, Verdict.REFUSED, (
            f"INPUT_QUEUE={settings.input_queue!r}: its dead-letter queue {url} (RedrivePolicy) "
            f"has MaximumMessageSize {size}, smaller than the input queue's {limit}: a book of "
            f"more than {size} bytes could not be dead-lettered; set the dead-letter queue's "
            f"MaximumMessageSize to at least {limit}"))
    return Finding(subject, Verdict.OK, f"MaximumMessageSize {size}")


def _buckets(settings: Settings, s3: Any) -> list[Finding]:
    found: list[Finding] = []
    for genre, destination in settings.destinations.items():
        bucket, owner = destination.bucket, destination.expected_owner
        subject = bucket_subject(genre, bucket)
        try:
            lookup = look_up_bucket(s3, bucket, owner)
        except BotoCoreError as exc:
            return [*found, _out_of_reach("S3", exc, "the consumers ask each bucket's region "
                                                     "themselves")]
        if lookup.status == 403 and owner is not None:
            found.append(Finding(subject, Verdict.WARNING, (
                f"HeadBucket answered 403: access denied, or the bucket is not owned by "
                f"account {owner} (GENRE_BUCKET_OWNERS), in which case every write is "
                "refused")))
        elif lookup.region is None:
            missing = " (no such bucket)" if lookup.status == 404 else ""
            found.append(Finding(subject, Verdict.WARNING,
                                 f"HeadBucket answered {lookup.status}{missing}"))
        elif settings.s3_client == "crt" and lookup.region != s3.meta.region_name:
            found.append(_crt_reaches(subject, genre, bucket, lookup.region))
        else:
            found.append(Finding(subject, Verdict.OK, f"in {lookup.region}"))
    return found


def _crt_reaches(subject: str, genre: str, bucket: str, region: str) -> Finding:
    """Whether the CRT client can reach `bucket` in its region, as `check_environment` checked
    it in the client's region (no call: botocore says how it would)."""
    from workers.aws import s3crt  # awscrt is needed only when chosen
    from workers.aws.crt import UnsupportedByCrt

    try:
        s3crt.check_supported(make_session(region).client("s3"), {genre: bucket})
    except UnsupportedByCrt as exc:
        return Finding(subject, Verdict.REFUSED,
                       f"S3_CLIENT=crt cannot be used: {exc}; set S3_CLIENT=boto3")
    return Finding(subject, Verdict.OK, f"in {region}")


def run(settings: Settings, log: Logger) -> None:
    """The preflight of the gunicorn master: check the environment, ask AWS, log what was
    found, and raise `ConfigError` with every refusal."""
    check_environment(settings)
    started = time.monotonic()
    session = make_session()
    findings = examine(settings, session.client("sqs", config=_CONFIG),
                       session.client("s3", config=_CONFIG))
    for finding in findings:
        if finding.verdict is Verdict.OK:
            log.info("preflight: %s: %s", finding.subject, finding.detail)
        elif finding.verdict is Verdict.WARNING:
            log.warning("preflight: %s: %s", finding.subject, finding.detail)
    refused = [finding.detail for finding in findings if finding.verdict is Verdict.REFUSED]
    if refused:
        raise ConfigError("; ".join(refused))
    log.info("preflight: done in %.2f s", time.monotonic() - started)
