"""Where the consumer calls workers.tracing, with each SQS client against moto's server over HTTP:
a traced receive asks for the context a message carries and links its span to it; the DLQ copy
carries its send span's context within SQS's 10 attributes; a message that crashed consumers has
the event on its process span; a hand-back is a span; and with tracing off, nothing of
OpenTelemetry is imported on the way from a receive to a delete."""
# ruff: noqa: F811 (the tests' `queues` parameter is the fixture imported from test_sqs)

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from opentelemetry.trace import SpanKind

from tests.unit.test_consumer import _PollingTransport, successor
from tests.unit.test_processor import GENRES, QUEUE, crash_registry, make, message
from tests.unit.test_sqs import INPUT, Queues, queues  # noqa: F401
from tests.unit.test_tracing import Traced
from workers.aws.sqs import SqsTransport, discover_queue
from workers.books.processor import BookProcessor
from workers.consumer.batches import GroupRunner
from workers.lease.settle import Outcome, dead_letter

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def send_with_context(queues: Queues, dedup: str) -> str:
    return str(queues.sqs.send_message(
        QueueUrl=queues.input_url, MessageBody="{}", MessageGroupId="g",
        MessageDeduplicationId=dedup,
        MessageAttributes={"traceparent": {"DataType": "String", "StringValue": TRACEPARENT}},
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String",
                                                    "StringValue": XRAY}})["MessageId"])


def test_a_traced_receive_brings_each_message_s_context_and_links_to_it(queues: Queues) -> None:
    traced = Traced()
    transport = SqsTransport(queues.sqs, queues.sqs, discover_queue(queues.sqs, INPUT),
                             traced.tracing)
    message_id = send_with_context(queues, "d-1")

    [message] = transport.receive(0, 30)

    assert message.message_id == message_id
    assert message.trace is not None
    assert (message.trace.traceparent, message.trace.aws_trace_header) == (TRACEPARENT, XRAY)
    receive = traced.span(f"receive {INPUT}")
    assert receive.kind is SpanKind.CLIENT
    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"))
            for link in receive.links] == [(PRODUCER_TRACE, PRODUCER_SPAN)]
    assert message.received is not None
    assert message.received.span_context == receive.context
    traced.tracing.shutdown(10)


def test_untraced_a_receive_asks_for_no_context(queues: Queues) -> None:
    transport = SqsTransport(queues.sqs, queues.sqs, discover_queue(queues.sqs, INPUT))
    send_with_context(queues, "d-2")

    [message] = transport.receive(0, 30)

    assert (message.trace, message.received) == (None, None)


def test_the_dead_letter_copy_carries_its_send_span_s_context(queues: Queues) -> None:
    traced = Traced()
    transport = SqsTransport(queues.sqs, queues.sqs, discover_queue(queues.sqs, INPUT),
                             traced.tracing)
    send_with_context(queues, "d-3")
    [message] = transport.receive(0, 30)

    with traced.tracing.process(transport.queue.url, message.message_id, message.group_id, 1,
                                message.trace, message.received):
        transport.dead_letter(message, "not_json", "body is not valid JSON")

    [copy] = queues.sqs.receive_message(
        QueueUrl=queues.dlq_url, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["AWSTraceHeader"])["Messages"]
    send = traced.span("send books-dlq.fifo")
    span_id = format(send.context.span_id, "016x")
    assert send.kind is SpanKind.PRODUCER
    assert format(send.context.trace_id, "032x") == PRODUCER_TRACE
    assert send.attributes is not None
    assert send.attributes["messaging.message.id"] == copy["MessageId"]
    attributes = copy["MessageAttributes"]
    assert len(attributes) <= 10
    assert attributes["traceparent"]["StringValue"] == f"00-{PRODUCER_TRACE}-{span_id}-01"
    assert attributes["shelver-reason"]["StringValue"] == "not_json"
    assert copy["Attributes"]["AWSTraceHeader"] == (
        f"Root=1-{PRODUCER_TRACE[:8]}-{PRODUCER_TRACE[8:]};Parent={span_id};Sampled=1")
    traced.tracing.shutdown(10)


def test_with_tracing_off_the_hot_path_imports_nothing_of_opentelemetry() -> None:
    # A process of its own: this one has imported the SDK for the other tests.
    script = ("import sys\n"
              "from bench.hot_path_cost import drain\n"
              "from workers.consumer import process\n"
              "drain(100, None)\n"
              "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_a_message_that_crashed_consumers_is_processed_in_a_span_with_the_crash_event(
        tmp_path: Path) -> None:
    traced = Traced()
    fx = make()
    fx.processor = BookProcessor(fx.store, GENRES, crashes=crash_registry(tmp_path, {"m-b-1": 2}))
    runner = GroupRunner(fx.processor.process, functools.partial(dead_letter, fx.transport),
                         lambda: False, traced.tracing, QUEUE)

    [result] = runner.run([message("b-1")])

    assert result.outcome is Outcome.STORED
    process = traced.span("process " + QUEUE.rsplit("/", 1)[1])
    assert process.kind is SpanKind.CONSUMER and process.attributes is not None
    assert [(event.name, dict(event.attributes or {})) for event in process.events] == [
        ("crashed_consumer", {"shelver.crashes": 2})]
    assert (process.attributes["shelver.outcome"], process.attributes["shelver.book_id"]) == (
        "stored", "b-1")
    traced.tracing.shutdown(10)


def test_a_hand_back_of_dead_consumers_messages_is_a_span(tmp_path: Path) -> None:
    traced = Traced()
    transport = _PollingTransport(answer_after=0)
    consumer = successor(tmp_path, transport, poll_seconds=0)
    consumer.tracing = traced.tracing

    consumer._hand_back_predecessors(transport)

    assert transport.handed_back == [("m-0", 0)]
    span = traced.span("hand_back q.fifo")
    assert span.attributes is not None
    assert (span.attributes["messaging.batch.message_count"],
            span.attributes["shelver.consumers"]) == (1, 1)
    traced.tracing.shutdown(10)
