"""workers.tracing in a process of its own, configured by the standard variables only, exporting
with the SDK's OTLP/HTTP exporter to a receiver on loopback (tests/support/otel.py): the spans
arrive with the configured resource, in the producer's trace, with their attributes, once the
process stops gracefully; with tracing disabled, nothing is sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.otel import ExportedSpan, OtlpReceiver

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/InputQueue.fifo"
PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"

# A consumer's life in miniature: one receive of one message with its producer's context, the
# message processed with an S3 write, the batch deleted, a graceful stop.
SCRIPT = f"""
import os, sys, time
from workers import tracing

t = tracing.start(tracing.read_config(os.environ), **{{"shelver.consumer.slot": 3}})
carrier = tracing.TraceCarrier("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01")
received = t.received({QUEUE!r}, time.time_ns(), [carrier])
with t.process({QUEUE!r}, "m-1", "group-1", 1, carrier, received) as span:
    with t.s3("PutObject", "scifi", "Dune.json"):
        pass
    span.book("book-1", "scifi", "scifi", "Dune.json")
    span.outcome("stored", "created")
    done = span.carrier()
with t.settle("delete", {QUEUE!r}, [done]):
    pass
print(os.getpid())
sys.exit(0 if t.shutdown(30) else 1)
"""


def run_script(receiver: OtlpReceiver, **env: str) -> int:
    """The script's pid, once it has exited."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", **receiver.env(), **env})
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def named(spans: list[ExportedSpan], name: str) -> ExportedSpan:
    [span] = [span for span in spans if span.name == name]
    return span


def test_spans_arrive_with_the_resource_and_attributes_the_variables_set(tmp_path: Path):
    with OtlpReceiver(tmp_path) as receiver:
        pid = run_script(receiver, OTEL_SERVICE_NAME="shelver-e2e",
                         OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=e2e",
                         # The SDK's own variables reach its exporter.
                         OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
                         OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20e2e")
        spans = receiver.spans()
        requests = list(receiver.requests)

    assert sorted(span.name for span in spans) == [
        "S3.PutObject", "delete InputQueue.fifo", "process InputQueue.fifo",
        "receive InputQueue.fifo"]
    assert {(r.content_type, r.content_encoding, r.headers.get("authorization"))
            for r in requests} == {("application/x-protobuf", "gzip", "Bearer e2e")}
    for span in spans:
        assert span.scope == "shelver"
        assert span.resource["service.name"] == "shelver-e2e"
        assert span.resource["deployment.environment.name"] == "e2e"
        assert span.resource["shelver.consumer.slot"] == 3
        assert span.resource["process.pid"] == pid
    receive, process = named(spans, "receive InputQueue.fifo"), named(spans,
                                                                       "process InputQueue.fifo")
    put, delete = named(spans, "S3.PutObject"), named(spans, "delete InputQueue.fifo")
    assert receive.kind == "CLIENT" and receive.links == [(PRODUCER_TRACE, PRODUCER_SPAN)]
    assert process.kind == "CONSUMER"
    assert (process.trace_id, process.parent_span_id) == (PRODUCER_TRACE, PRODUCER_SPAN)
    assert process.links == [(receive.trace_id, receive.span_id)]
    assert process.attributes == {
        "messaging.system": "aws_sqs", "messaging.destination.name": "InputQueue.fifo",
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "aws.sqs.queue.url": QUEUE, "messaging.message.id": "m-1",
        "shelver.group_id": "group-1", "shelver.receive_count": 1,
        "shelver.book_id": "book-1", "shelver.genre": "scifi", "aws.s3.bucket": "scifi",
        "aws.s3.key": "Dune.json", "shelver.outcome": "stored", "shelver.reason": "created"}
    assert put.kind == "CLIENT"
    assert (put.trace_id, put.parent_span_id) == (PRODUCER_TRACE, process.span_id)
    assert put.attributes["rpc.method"] == "PutObject" and put.status == "UNSET"
    assert delete.links == [(process.trace_id, process.span_id)]
    assert delete.attributes["messaging.operation.type"] == "settle"


def test_with_tracing_disabled_nothing_is_sent(tmp_path: Path):
    with OtlpReceiver(tmp_path) as receiver:
        run_script(receiver, OTEL_SDK_DISABLED="true")
        # The script has exited: anything it was going to send has been sent.
        assert receiver.requests == [] and receiver.spans() == []
