"""Tracing through a real Shelver: books sent by `shelver send` (a producer span each), a book
carrying an AWSTraceHeader, and a poison book, through real gunicorn and LocalStack, with the
spans exported over OTLP/HTTP to a receiver on loopback (tests/support/otel.py, standing in for
the OpenTelemetry Collector, which cannot run here: see its docstring). And with tracing off,
nothing is sent and no log line carries a trace id."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.otel import ExportedSpan, OtlpReceiver
from tests.support.shelver import Shelver

# An X-Ray context, as AWS services and X-Ray instrumented senders put it on a message.
XRAY_TRACE = "5759e988bd862e3fe1be46a994272793"
XRAY_PARENT = "53995c3f42cd8ad8"
AWS_TRACE_HEADER = f"Root=1-{XRAY_TRACE[:8]}-{XRAY_TRACE[8:]};Parent={XRAY_PARENT};Sampled=1"
# The poison book's producer, in W3C form.
POISON_TRACE = "0af7651916cd43dd8448eb211c80319c"
POISON_PARENT = "b7ad6b7169203331"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(tmp_path) as otlp:
        yield otlp


def by_name(spans: list[ExportedSpan], prefix: str) -> list[ExportedSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def children(spans: list[ExportedSpan], parent: ExportedSpan) -> list[ExportedSpan]:
    return [s for s in spans if s.trace_id == parent.trace_id
            and s.parent_span_id == parent.span_id]


def log_records(shelver: Shelver) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in shelver.log().splitlines() if line.startswith("{")]


def stop(shelver: Shelver) -> None:
    shelver.signal(signal.SIGTERM)
    assert shelver.wait_exit(90) == 0


# Both S3 and SQS clients; JSON log lines with the one, text with the other.
@pytest.mark.parametrize(("client", "log_format"), [("crt", "json"), ("boto3", "text")])
def test_a_book_is_traced_from_its_producer_to_its_object_and_a_poison_to_the_dlq(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, receiver: OtlpReceiver,
        client: str, log_format: str):
    queue = stack.input_name
    dlq = stack.dlq_url.rsplit("/", 1)[1]
    shelver = shelver_factory(stack, **receiver.env(), OTEL_SERVICE_NAME="shelver-e2e",
                              S3_CLIENT=client, SQS_CLIENT=client, LOG_FORMAT=log_format,
                              LOG_LEVEL="DEBUG")
    shelver.wait_healthy()
    # The HTTP side makes no spans.
    for path in ("/", "/health", "/health/live", "/metrics"):
        shelver.get(path)

    # Books from `shelver send`: a create span each, the root of its trace.
    sent = shelver.cli("send", "--count", "3", "--groups", "1", "--genres", "scifi")
    assert sent.returncode == 0, sent.stderr
    assert "the first book's trace id is " in sent.stdout
    # A book carrying an X-Ray context, and a poison book with a W3C one.
    aws.sqs.send_message(
        QueueUrl=stack.input_url, MessageBody=orjson.dumps(book("xray-1", "X", "romance")).decode(),
        MessageGroupId="xray", MessageDeduplicationId="xray-1",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String",
                                                    "StringValue": AWS_TRACE_HEADER}})
    poison_id = aws.sqs.send_message(
        QueueUrl=stack.input_url, MessageBody="this is not json", MessageGroupId="poison",
        MessageDeduplicationId="poison-1",
        MessageAttributes={"traceparent": {
            "DataType": "String", "StringValue": f"00-{POISON_TRACE}-{POISON_PARENT}-01"}}
    )["MessageId"]
    wait_until(lambda: aws.counts(stack.dlq_url)[0] == 1, 60, 0.3, "the poison in the DLQ")
    wait_until(lambda: aws.drained(stack.input_url), 60, 0.3, "the input queue to drain")
    stop(shelver)  # the graceful stop flushes what the consumers had queued
    spans = receiver.wait_for_spans(
        lambda found: len(by_name(found, "process ")) == 5 and bool(by_name(found, "delete ")))

    # Nothing from the HTTP side: every span is the consumers' or `shelver send`'s.
    assert {span.kind for span in spans} <= {"CLIENT", "CONSUMER", "PRODUCER"}
    assert {span.name.split(" ")[0] for span in spans} <= {
        "create", "send", "receive", "process", "delete", "change_visibility", "S3.PutObject",
        "S3.HeadObject"}
    consumer_spans = [s for s in spans if s.resource.get("shelver.command") != "send"]
    assert {s.resource["service.name"] for s in consumer_spans} == {"shelver-e2e"}
    assert all("shelver.consumer.slot" in s.resource for s in consumer_spans)

    process = {s.attributes["messaging.message.id"]: s for s in by_name(spans, "process ")}
    receives = {s.span_id: s for s in by_name(spans, f"receive {queue}")}
    for span in process.values():
        assert span.name == f"process {queue}" and span.kind == "CONSUMER"
        assert span.attributes["messaging.system"] == "aws_sqs"
        assert span.attributes["messaging.destination.name"] == queue
        assert span.attributes["messaging.operation.type"] == "process"
        # Linked to the receive span that brought it, which links back to its context.
        [(trace_id, span_id)] = span.links
        assert span_id in receives and receives[span_id].trace_id == trace_id
        assert receives[span_id].attributes["messaging.batch.message_count"] >= 1

    # `shelver send`'s books: each process span is a child of its book's create span.
    creates = {s.span_id: s for s in by_name(spans, f"create {queue}")}
    assert len(creates) == 3
    [send_batch] = by_name(spans, f"send {queue}")
    assert send_batch.kind == "PRODUCER"
    assert sorted(send_batch.links) == sorted((c.trace_id, c.span_id) for c in creates.values())
    assert sent.stdout.split("trace id is ")[1].strip() in {c.trace_id for c in creates.values()}
    stored = [s for s in process.values() if s.parent_span_id in creates]
    assert len(stored) == 3
    for span in stored:
        create = creates[span.parent_span_id]
        assert span.trace_id == create.trace_id
        assert span.status == "UNSET"
        assert span.attributes["shelver.outcome"] == "stored"
        assert span.attributes["shelver.reason"] == "created"
        assert span.attributes["shelver.genre"] == "scifi"
        assert span.attributes["aws.s3.bucket"] == stack.buckets["scifi"]
        key = span.attributes["aws.s3.key"]
        assert key in aws.keys(stack.buckets["scifi"])
        [put] = [c for c in children(spans, span) if c.name == "S3.PutObject"]
        assert put.kind == "CLIENT" and put.attributes["aws.s3.key"] == key
        assert any((span.trace_id, create.span_id) == link
                   for r in receives.values() for link in r.links)

    # The X-Ray context is continued: same trace, its Parent the parent.
    [xray] = [s for s in process.values() if s.trace_id == XRAY_TRACE]
    assert xray.parent_span_id == XRAY_PARENT
    assert xray.attributes["shelver.book_id"] == "xray-1"
    assert xray.attributes["shelver.outcome"] == "stored"

    # The poison: its producer's trace, in error, with its reason; the DLQ send its child.
    poison = process[poison_id]
    assert (poison.trace_id, poison.parent_span_id) == (POISON_TRACE, POISON_PARENT)
    assert poison.status == "ERROR"
    assert poison.attributes["shelver.outcome"] == "dead_lettered"
    assert poison.attributes["shelver.reason"] == "not_json"
    assert poison.attributes["shelver.detail"]
    [dlq_send] = [c for c in children(spans, poison) if c.name == f"send {dlq}"]
    assert dlq_send.kind == "PRODUCER"
    assert dlq_send.attributes["messaging.destination.name"] == dlq

    # The DLQ copy carries the send span's context, within SQS's 10 attributes.
    [copy] = aws.sqs.receive_message(
        QueueUrl=stack.dlq_url, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["AWSTraceHeader"])["Messages"]
    assert dlq_send.attributes["messaging.message.id"] == copy["MessageId"]
    assert copy["Attributes"]["AWSTraceHeader"] == (
        f"Root=1-{POISON_TRACE[:8]}-{POISON_TRACE[8:]};Parent={dlq_send.span_id};Sampled=1")
    attributes = copy["MessageAttributes"]
    assert len(attributes) <= 10
    assert attributes["shelver-reason"]["StringValue"] == "not_json"
    assert attributes["traceparent"]["StringValue"] == (
        f"00-{POISON_TRACE}-{dlq_send.span_id}-01")

    # The batch deletes link to the messages' contexts.
    deletes = by_name(spans, f"delete {queue}")
    linked = {link for d in deletes for link in d.links}
    assert (POISON_TRACE, POISON_PARENT) in linked and (XRAY_TRACE, XRAY_PARENT) in linked

    # Log lines about a message carry its trace and span ids.
    if log_format == "text":
        [dead_line] = [line for line in shelver.log().splitlines()
                       if f"message {poison_id} dead-lettered" in line]
        assert dead_line.endswith(f" trace_id={POISON_TRACE} span_id={poison.span_id}")
        return
    records = log_records(shelver)
    [dead] = [r for r in records if r.get("message_id") == poison_id
              and r.get("outcome") == "dead_lettered"]
    assert (dead["trace_id"], dead["span_id"]) == (POISON_TRACE, poison.span_id)
    stored_lines = [r for r in records if r.get("outcome") == "stored"]
    assert len(stored_lines) == 4
    assert {r["trace_id"] for r in stored_lines} == {s.trace_id for s in stored} | {XRAY_TRACE}


def test_with_tracing_off_nothing_is_sent_and_no_line_carries_a_trace_id(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, receiver: OtlpReceiver):
    # An endpoint, but the SDK disabled: off, as with no OTEL_ variable at all.
    shelver = shelver_factory(stack, **receiver.env(), OTEL_SDK_DISABLED="true",
                              LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    shelver.wait_healthy()
    sent = shelver.cli("send", "--count", "2", "--genres", "scifi")
    assert sent.returncode == 0, sent.stderr
    assert "trace id" not in sent.stdout
    aws.send(stack.input_url, [("poison", b"this is not json")])
    wait_until(lambda: aws.counts(stack.dlq_url)[0] == 1, 60, 0.3, "the poison in the DLQ")
    wait_until(lambda: aws.drained(stack.input_url), 60, 0.3, "the input queue to drain")
    stop(shelver)

    assert receiver.requests == [] and receiver.spans() == []
    records = log_records(shelver)
    assert [r for r in records if r.get("outcome") == "stored"]
    assert [r for r in records if "trace_id" in r or "span_id" in r] == []
    [copy] = aws.receive_all(stack.dlq_url, expect=1)
    assert "traceparent" not in copy.get("MessageAttributes", {})
