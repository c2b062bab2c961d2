"""AWS's list prices for the requests a consumer makes: the one place the benchmark keeps them.

US East (N. Virginia), us-east-1, in USD, read on 2026-12-03. AWS's own pricing pages
(aws.amazon.com/sqs/pricing, aws.amazon.com/s3/pricing) are the authority; the copies of them
this project could read did not show their price cells, so the figures are AWS's list prices as
quoted, for us-east-1 in 2026, by pages that agree with each other and with AWS's documentation:

- SQS: https://cloudburn.io/blog/amazon-sqs-pricing (March 2026): standard queues $0.40 per
  million requests, FIFO $0.50, after the first million requests a month (free), up to 100
  billion a month (the tier priced here); on a FIFO queue only sending, receiving, deleting and
  changing the visibility of messages is billed at the FIFO rate, every other action
  (GetQueueAttributes, GetQueueUrl) at the standard one.
  https://www.factualminds.com/blog/amazon-sqs-pricing-64kb-rule-fifo-vs-standard/ (June 2026):
  the same rates; every 64 KB chunk of a request's payload is billed as one request.
- S3 Standard: https://c3x.dev/blog/s3-request-fees-explained: PUT, COPY, POST and LIST $0.005 per
  1,000 requests; GET, HEAD, SELECT and all other requests $0.0004 per 1,000; DELETE is free.
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/ErrorCodeBilling.html: S3 bills requests
  answered 2xx and 4xx (a conditional put refused with 412 is a billed PUT), not those answered
  5xx.

Only requests are priced: storage, and data transfer (free between S3 or SQS and a client in the
same region), are the same for every contender.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

READ_ON = "2026-12-03"
REGION = "us-east-1"
SQS_CHUNK_BYTES = 64 * 1024  # each started chunk of a request's payload is billed as a request


@dataclass(frozen=True)
class Price:
    usd_per_million: float  # requests
    line: str  # the price list's line it comes from


SQS_FIFO = Price(0.50, "SQS FIFO requests: send, receive, delete, change visibility "
                       "(1 million to 100 billion a month)")
SQS_STANDARD = Price(0.40, "SQS standard requests: any other action, also on a FIFO queue "
                           "(1 million to 100 billion a month)")
S3_WRITE = Price(5.00, "S3 Standard PUT, COPY, POST, LIST requests ($0.005 per 1,000)")
S3_READ = Price(0.40, "S3 Standard GET, SELECT and all other requests, HEAD among them "
                      "($0.0004 per 1,000)")
S3_FREE = Price(0.0, "S3 DELETE requests (free)")
PRICES = (SQS_FIFO, SQS_STANDARD, S3_WRITE, S3_READ, S3_FREE)

_SQS_MESSAGE_ACTIONS = frozenset({
    "SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
    "ChangeMessageVisibility", "ChangeMessageVisibilityBatch"})
_S3_WRITES = frozenset({"PutObject", "CreateBucket", "ListObjects", "ListObjectsV2",
                        "ListBuckets"})


def price(service: str, operation: str) -> Price:
    """What one request of `operation` costs; SQS on a FIFO queue, S3 in S3 Standard.

    `service` and `operation` as `tests.support.proxy.operation` names them; an S3 operation it
    could not name ("POST object") is priced by its method."""
    if service == "SQS":
        return SQS_FIFO if operation in _SQS_MESSAGE_ACTIONS else SQS_STANDARD
    if operation in _S3_WRITES or operation.startswith(("PUT ", "POST ")):
        return S3_WRITE
    if operation.startswith(("Delete", "DELETE ")):
        return S3_FREE
    return S3_READ


def billed_requests(service: str, payload_bytes: int) -> int:
    """How many requests SQS bills for one call carrying `payload_bytes`; S3 bills one."""
    if service != "SQS":
        return 1
    return max(1, math.ceil(payload_bytes / SQS_CHUNK_BYTES))
