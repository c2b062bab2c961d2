"""`python -m bench.tracing_cost`: what workers.tracing's verbs cost per book, in-process.

A consumer's tracing work for one book, as the consumer calls it: a tenth of a receive span (ten
books per ReceiveMessage), a process span with the book and its outcome, one S3 span (a new
title is one PutObject), a tenth of a delete span, the current span's ids on one log record. Times
the process's CPU (every thread: the batch span processor's worker, which encodes each batch as
OTLP protobuf, the exporter's request body, and drops it instead of posting it) over the best of
`--repeat` rounds of `--books` books, in microseconds per book, for:

  off             tracing not configured (`workers.tracing.OFF`)
  on, 100%        the default sampler, books sent with a sampled producer context
  on, 1%          parentbased_traceidratio 0.01, books sent without context

No queue, no S3, no network: the consumer's own CPU per book (about 1-3 ms with the CRT clients,
docs/benchmarks.md) is the scale to read these against. Figures print as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from workers.tracing import OFF, TraceCarrier, Tracing, read_config
from workers.tracing_otel import OtelTracing, current_ids

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/InputQueue.fifo"
SAMPLED = TraceCarrier("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
BATCH = 10


class EncodeAndDrop(SpanExporter):
    """What the OTLP/HTTP exporter does to a batch, short of sending it."""

    def __init__(self) -> None:
        self.bytes = 0
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.bytes += len(encode_spans(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def one_book(tracing: Tracing, carrier: TraceCarrier | None, received: TraceCarrier | None,
             n: int) -> TraceCarrier | None:
    with tracing.process(QUEUE, f"m-{n}", "group-1", 1, carrier, received, 1000) as span:
        span.book(f"book-{n}", "scifi", "scifi-books")
        with tracing.s3("PutObject", "scifi-books", f"Book {n}.json"):
            pass
        if tracing.enabled:
            current_ids()  # what a log line inside the span costs on top
        span.book(f"book-{n}", "scifi", "scifi-books", f"Book {n}.json")
        span.outcome("stored", "created")
        return span.carrier()


def drain(tracing: Tracing, books: int, carrier: TraceCarrier | None) -> None:
    for start in range(0, books, BATCH):
        received = tracing.received(QUEUE, time.time_ns(), [carrier] * BATCH)
        done = [one_book(tracing, carrier, received, start + i) for i in range(BATCH)]
        with tracing.settle("delete", QUEUE, done):
            pass


def cost(tracing: Tracing, books: int, carrier: TraceCarrier | None, repeat: int) -> float:
    """Microseconds of CPU per book, best of `repeat`."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        drain(tracing, books, carrier)
        if isinstance(tracing, OtelTracing):
            tracing.provider.force_flush()
        best = min(best, time.process_time() - started)
    return best / books * 1e6


def traced(**env: str) -> tuple[OtelTracing, EncodeAndDrop]:
    # A round's spans all fit in the batch processor's queue: none dropped, all encoded (a
    # consumer's worker keeps up: it exports each 512 spans as they come).
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(1_000_000)
    config = read_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", **env})
    assert config is not None
    exporter = EncodeAndDrop()
    return OtelTracing.configure(config, {"shelver.consumer.slot": 0}, exporter), exporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    print(f"Python {platform.python_version()}, {args.books} books x best of {args.repeat}\n")
    print("| tracing | CPU per book | spans exported per book | OTLP bytes per book |")
    print("|---|---|---|---|")
    print(f"| off | {cost(OFF, args.books, SAMPLED, args.repeat):.1f} µs | 0 | 0 |")
    for label, carrier, env in (
            ("on, 100%", SAMPLED, {}),
            ("on, 1%", None, {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                              "OTEL_TRACES_SAMPLER_ARG": "0.01"})):
        tracing, exporter = traced(**env)
        micros = cost(tracing, args.books, carrier, args.repeat)
        tracing.shutdown(30)
        books = args.books * args.repeat
        print(f"| {label} | {micros:.1f} µs | {exporter.spans / books:.2f} | "
              f"{exporter.bytes / books:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
