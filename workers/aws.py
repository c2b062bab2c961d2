"""boto3 clients for one consumer process.

Each consumer builds its own session and clients after it starts (boto3 sessions are not
fork-safe and not meant to be shared across processes); its threads share these clients, which
are thread-safe, with a connection pool sized to the threads so no thread waits for a socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

# Headroom above the processing threads: the main loop, the visibility keeper and the DLQ sends
# also hold connections.
_EXTRA_CONNECTIONS = 4
CONNECT_TIMEOUT_SECONDS = 3
# A long poll answers after WaitTimeSeconds at the latest; this much more means it hangs.
RECEIVE_READ_MARGIN_SECONDS = 5


@dataclass(frozen=True)
class Clients:
    sqs_receive: Any  # long-poll client: its read timeout must outlast WaitTimeSeconds
    sqs: Any  # every other SQS call: short timeouts so a slow SQS cannot stall the keeper
    s3: Any


def make_session() -> boto3.session.Session:
    # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is the name most tools document.
    return boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)


def make_clients(threads: int, wait_time_seconds: int) -> Clients:
    session = make_session()
    pool = threads + _EXTRA_CONNECTIONS

    def config(read_timeout: float, attempts: int = 3) -> Config:
        # Few fast botocore retries for blips; longer outages are handled by SQS visibility
        # backoff, which survives a crash, where an in-process retry loop would not.
        return Config(
            # total_max_attempts counts the first call; botocore's max_attempts counts retries.
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=read_timeout,
            max_pool_connections=pool,
            tcp_keepalive=True,
            # Hot-path CPU (measured: -7% per PutObject): our requests are built by code, so
            # botocore's parameter validation only costs; and the optional CRC of every body
            # and of every response is skipped (S3 still gets what it requires).
            parameter_validation=False,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    return Clients(
        # One attempt: the consumer loop retries receives itself, and a hung receive must end
        # within receive_call_limit() so the main loop can beat.
        sqs_receive=session.client(
            "sqs", config=config(wait_time_seconds + RECEIVE_READ_MARGIN_SECONDS, attempts=1)),
        sqs=session.client("sqs", config=config(10)),
        s3=session.client("s3", config=config(60)),
    )


def receive_call_limit(wait_time_seconds: int) -> float:
    """The longest a ReceiveMessage call can block the consumer's main loop."""
    return CONNECT_TIMEOUT_SECONDS + wait_time_seconds + RECEIVE_READ_MARGIN_SECONDS
