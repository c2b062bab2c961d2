"""The benchmark's second part: the same drain with AWS-like latencies on every request.

LocalStack on loopback answers in about a millisecond, so the first part measures CPU: whoever
spends less of it per message drains faster. On AWS a request takes longer than the CPU it costs,
and throughput is bound by how many requests are in flight at once. Two fault proxies
(tests/support/proxy.py), one per service, sit between a contender and the emulator and hold
every request before forwarding it:

- SQS: 10 ms. ReceiveMessage, DeleteMessageBatch and the visibility calls of a client in the
  queue's region typically answer in single-digit to low tens of milliseconds;
- S3: 20 ms for every call (PutObject of about 1 KB, HeadObject): a small object write in region
  typically takes a few tens of milliseconds, about twice an SQS call.

Each with a uniform jitter of +-25% around that mean, so that threads do not move in lockstep.
These are round, typical figures, not a measurement of AWS (none is reachable from here): what
they show is how each design turns concurrency into throughput, and where, as concurrency grows,
this machine's CPU (two cores shared by the contender, the emulator and the proxies) takes over
as the bound.

`latency_bound` is the throughput latency alone would allow (no CPU cost at all): a Shelver
processing thread stores one message at a time while the receives run ahead, so
consumers x threads / S3 latency; a B worker receives, stores its ten messages one after another
and deletes them, so threads x 10 / (2 x SQS + 10 x S3 latency).

Every drain gets proxies of its own, whose journals count its requests (bench.bill); proxies
that add no latency (`COUNTING`) do only that, for the bill of every contender.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.proxy import Exchange, FaultProxy

SQS_MS = 10.0
S3_MS = 20.0
JITTER = 0.5  # the spread, as a share of the mean: uniform from 0.75 to 1.25 x the mean
BATCH = 10  # messages per receive, for B


@dataclass(frozen=True)
class Latencies:
    sqs_ms: float = SQS_MS
    s3_ms: float = S3_MS
    jitter: float = JITTER

    def proxy(self, upstream: str, mean_ms: float) -> FaultProxy:
        """A proxy to `upstream` that holds every request `mean_ms` on average (a fixed delay
        and a uniform random part: FaultProxy's delay and jitter), and keeps a journal."""
        return FaultProxy(upstream, delay_seconds=mean_ms * (1 - self.jitter / 2) / 1000,
                          jitter_seconds=mean_ms * self.jitter / 1000, journal=True)

    def shelver_bound(self, consumers: int, threads: int) -> float:
        return consumers * threads * 1000 / self.s3_ms

    def reference_bound(self, threads: int) -> float:
        return threads * BATCH * 1000 / (2 * self.sqs_ms + BATCH * self.s3_ms)

    def describe(self) -> str:
        if not self.sqs_ms and not self.s3_ms:
            return "no latency added"
        spread = f"+-{self.jitter * 50:.0f}%"
        return f"SQS {self.sqs_ms:g} ms, S3 {self.s3_ms:g} ms per request ({spread} jitter)"


# Proxies that add nothing: they count a contender's requests (bench.bill).
COUNTING = Latencies(sqs_ms=0.0, s3_ms=0.0)


@dataclass
class Endpoints:
    """One proxy for SQS and one for S3, in front of `upstream`: the environment that sends a
    contender's requests through them, and the journal of every request they forwarded."""

    sqs: FaultProxy
    s3: FaultProxy

    @classmethod
    def start(cls, upstream: str, latencies: Latencies) -> Endpoints:
        sqs = latencies.proxy(upstream, latencies.sqs_ms).start()
        try:
            s3 = latencies.proxy(upstream, latencies.s3_ms).start()
        except BaseException:
            sqs.stop()
            raise
        return cls(sqs, s3)

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_SQS": self.sqs.url, "AWS_ENDPOINT_URL_S3": self.s3.url}

    def exchanges(self) -> list[Exchange]:
        return [*self.sqs.exchanges(), *self.s3.exchanges()]

    def stop(self) -> None:
        self.sqs.stop()
        self.s3.stop()
