"""`python -m bench.preflight_cost [--runs N]`: what the start-up preflight
(workers/aws/preflight.py) adds to a start, against its own LocalStack on a free loopback port.

Timed as gunicorn's master runs it (`preflight.run`: a boto3 session, two clients, the calls):
with AWS answering (the default settings' six calls), with every connection refused (AWS down,
an emulator not up yet), and with connections accepted but never answered (the worst case: each
service's first call waits out its read timeout, then the service is not asked again).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import orjson

from scripts.emulator import FAKE_AWS_ENV, LocalStack, free_port
from tests.support.proxy import FaultProxy, OutageMode
from workers.aws import preflight
from workers.settings import Settings

SETTINGS = Settings(input_queue="InputQueue.fifo",
                    genre_buckets={"scifi": "scifi", "romance": "romance"})


class _Quiet:
    def info(self, msg: str, *args: object, **_: Any) -> None:
        pass

    warning = error = info


def _seconds() -> float:
    started = time.perf_counter()
    preflight.run(SETTINGS, _Quiet())
    return time.perf_counter() - started


def _create_stack(endpoint: str) -> None:
    session = boto3.session.Session(region_name=FAKE_AWS_ENV["AWS_REGION"])
    sqs = session.client("sqs", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)
    dlq_url = sqs.create_queue(QueueName="InputQueueDLQ.fifo",
                               Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sqs.create_queue(QueueName="InputQueue.fifo", Attributes={
        "FifoQueue": "true", "RedrivePolicy": orjson.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 30}).decode()})
    for bucket in SETTINGS.genre_buckets.values():
        s3.create_bucket(Bucket=bucket)


def _out_of_reach(endpoint: str, mode: OutageMode) -> float:
    with FaultProxy(endpoint) as proxy:
        proxy.outage_for(3600, mode)
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        try:
            return _seconds()
        finally:
            os.environ["AWS_ENDPOINT_URL"] = endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    os.environ.update(FAKE_AWS_ENV)
    with LocalStack(port=free_port(), data_dir=Path(tempfile.mkdtemp()) / "state") as emulator:
        os.environ["AWS_ENDPOINT_URL"] = emulator.endpoint
        _create_stack(emulator.endpoint)
        first = _seconds()
        then = [_seconds() for _ in range(args.runs)]
        print(f"AWS answering (6 calls):   first {first:.3f} s, then median "
              f"{statistics.median(then):.3f} s, max {max(then):.3f} s ({args.runs} runs)")
        print(f"connections refused:       {_out_of_reach(emulator.endpoint, 'refuse'):.3f} s")
        print(f"connections not answered:  {_out_of_reach(emulator.endpoint, 'blackhole'):.3f} s"
              f" (read timeout {preflight.READ_TIMEOUT_SECONDS} s, once per service)")


if __name__ == "__main__":
    main()
