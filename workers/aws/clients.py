"""AWS clients for one consumer process.

Each consumer builds its own session and clients after it starts (boto3 sessions are not
fork-safe and not meant to be shared across processes, and the CRT runs C threads of its own);
its threads share these clients, which are thread-safe, with connections sized to the threads so
no thread waits for a socket. S3 is `S3_CLIENT`'s implementation of `S3Objects`; SQS is a boto3
client whose per-batch calls go through the CRT with `SQS_CLIENT=crt`; both configured from the
same session and the same boto3 client settings (workers/aws/crt.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from workers.aws.s3 import Boto3Objects, Boto3Payloads, S3Objects
from workers.settings import CONNECT_TIMEOUT_SECONDS, RECEIVE_READ_MARGIN_SECONDS

if TYPE_CHECKING:
    from workers.aws.crt import CrtRuntime

# Headroom above the processing threads: the main loop, the visibility keeper and the DLQ sends
# also hold connections.
_EXTRA_CONNECTIONS = 4
# Attempts per call, the first included: a few fast retries for blips; longer outages are
# handled by SQS visibility backoff, which survives a crash, where an in-process retry would not.
ATTEMPTS = 3
# The longest one S3 call may wait for an answer (boto3: per attempt; CRT: for the whole call).
S3_TIMEOUT_SECONDS = 60
# The same for SQS calls other than long polls (per attempt, for both clients).
SQS_TIMEOUT_SECONDS = 10
# The CRT S3 client's lookup of a bucket's region (one attempt): an S3 out of reach fails the
# write that needed it no later than the write would have failed.
REGION_LOOKUP_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Clients:
    sqs_receive: Any  # long-poll client: its read timeout must outlast WaitTimeSeconds
    sqs: Any  # every other SQS call: short timeouts so a slow SQS cannot stall the keeper
    s3: S3Objects
    # The payloads offloaded by the Amazon SQS Extended Client; None when none is allowed.
    payloads: Boto3Payloads | None = None


def make_session(region: str | None = None) -> boto3.session.Session:
    # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is the name most tools document.
    return boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)


def _config(read_timeout: float, connections: int, attempts: int = ATTEMPTS) -> Config:
    return Config(
        # total_max_attempts counts the first call; botocore's max_attempts counts retries.
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=read_timeout,
        max_pool_connections=connections,
        tcp_keepalive=True,
        # Hot-path CPU (measured: -7% per PutObject): our requests are built by code, so
        # botocore's parameter validation only costs; and the optional CRC of every body
        # and of every response is skipped (S3 still gets what it requires).
        parameter_validation=False,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_s3(session: boto3.session.Session, threads: int, s3_client: str,
            runtime: CrtRuntime | None = None, bucket_regions: bool = True) -> S3Objects:
    """`S3_CLIENT`'s S3 client for `threads` processing threads, the only ones that call S3.

    The CRT one signs for each bucket's own region, asked of S3 at its first write of the
    bucket (a HeadBucket, one attempt); `bucket_regions=False` takes every bucket to be in the
    session's region (tests of what goes over the wire, whose scripted server has no buckets)."""
    s3 = session.client("s3", config=_config(S3_TIMEOUT_SECONDS, threads + _EXTRA_CONNECTIONS))
    if s3_client == "boto3":
        return Boto3Objects(s3)
    from workers.aws.s3crt import CrtObjects  # awscrt is needed only when chosen

    regions = session.client("s3", config=_config(REGION_LOOKUP_TIMEOUT_SECONDS, threads,
                                                  attempts=1)) if bucket_regions else None
    # Configured as the boto3 client `s3` is; one connection per thread: each sends one
    # request at a time.
    return CrtObjects.create(runtime or _runtime(session), s3, connections=threads,
                             connect_timeout=CONNECT_TIMEOUT_SECONDS,
                             timeout=S3_TIMEOUT_SECONDS, attempts=ATTEMPTS, regions=regions)


def make_sqs(session: boto3.session.Session, sqs_client: str, read_timeout: float,
             connections: int, attempts: int = ATTEMPTS, runtime: CrtRuntime | None = None
             ) -> Any:
    """A boto3 SQS client; with `SQS_CLIENT=crt`, its per-batch calls go through the CRT."""
    sqs = session.client("sqs", config=_config(read_timeout, connections, attempts))
    if sqs_client == "boto3":
        return sqs
    from workers.aws.sqscrt import CrtSqs  # awscrt is needed only when chosen

    return CrtSqs(sqs, runtime or _runtime(session), connect_timeout=CONNECT_TIMEOUT_SECONDS,
                  read_timeout=read_timeout, attempts=attempts)


def _runtime(session: boto3.session.Session) -> CrtRuntime:
    from workers.aws.crt import CrtRuntime

    return CrtRuntime.create(session)


def make_clients(threads: int, wait_time_seconds: int, s3_client: str, sqs_client: str,
                 payloads: bool = False) -> Clients:
    session = make_session()
    # One CRT event loop and credential source for every CRT client of the process.
    runtime = _runtime(session) if "crt" in (s3_client, sqs_client) else None
    connections = threads + _EXTRA_CONNECTIONS
    return Clients(
        # One attempt: the consumer loop retries receives itself, and a hung receive must end
        # within receive_call_limit() so the main loop can beat.
        sqs_receive=make_sqs(session, sqs_client, wait_time_seconds + RECEIVE_READ_MARGIN_SECONDS,
                             connections, attempts=1, runtime=runtime),
        sqs=make_sqs(session, sqs_client, SQS_TIMEOUT_SECONDS, connections, runtime=runtime),
        s3=make_s3(session, threads, s3_client, runtime),
        payloads=Boto3Payloads(session.client("s3", config=_config(S3_TIMEOUT_SECONDS, threads)))
        if payloads else None,
    )

