"""workers.tracing: off and free unless configured; the configuration's variables; a message's
context in (traceparent, AWSTraceHeader) and out (within SQS's 10 attributes); the spans, as the
SDK's in-memory exporter receives them through the batch span processor; log correlation."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from workers import tracing
from workers.aws.s3 import ObjectHead, traced_objects
from workers.settings import ConfigError
from workers.tracing import (
    OFF,
    Outgoing,
    SpanIds,
    TraceCarrier,
    TracingConfig,
    aws_trace_header,
    outgoing,
    parse_aws_trace_header,
    read_config,
)
from workers.tracing_otel import OtelTracing

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/InputQueue.fifo"
DLQ = "https://sqs.us-east-1.amazonaws.com/123456789012/DeadLetterQueue.fifo"
ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
# The example, and the same context in W3C form.
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY_TRACE = "5759e988bd862e3fe1be46a994272793"
PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"


# -- off, and free when off ---------------------------------------------------------------------
def test_with_no_configuration_nothing_from_opentelemetry_is_imported() -> None:
    # A fresh interpreter: this one has the SDK loaded by the tests below.
    script = (
        "import sys\n"
        "from workers import tracing\n"
        "t = tracing.start(tracing.read_config({}))\n"
        "assert t is tracing.OFF and not t.enabled\n"
        "with t.process('q', 'm', 'g', 1, tracing.TraceCarrier('x')) as span:\n"
        "    span.book('b', 'scifi', 'bucket', 'key'); span.outcome('stored', 'created')\n"
        "    assert span.outgoing(3) is tracing.NOTHING_OUT\n"
        "with t.s3('PutObject', 'bucket', 'key'): pass\n"
        "assert t.received('q', 0, [None]) is None\n"
        "t.install_log_fields(); t.hand_back('q', 0, 1, 1, ['m']); assert t.shutdown(1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_off_gives_the_same_context_manager_and_the_s3_client_itself() -> None:
    objects = object()

    assert OFF.process("q", "m", "g", 1, None) is OFF.s3("PutObject", "b", "k")
    assert traced_objects(objects, OFF) is objects  # type: ignore[arg-type]


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("env", [
    {},
    {"OTEL_SERVICE_NAME": "shelver-eu"},
    {**ENDPOINT, "OTEL_SDK_DISABLED": "true"},
    {**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"},
    {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"},
])
def test_tracing_is_off_without_an_endpoint_or_when_disabled(env: dict[str, str]) -> None:
    assert read_config(env) is None


def test_the_base_endpoint_gets_the_traces_path_and_the_traces_endpoint_is_used_as_it_is() -> None:
    base = read_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/"})
    both = read_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom/traces"})

    assert base is not None and base.endpoint == "https://collector:4318/v1/traces"
    assert both is not None and both.endpoint == "http://b:4318/custom/traces"


def test_defaults_service_name_resource_and_sampler() -> None:
    config = read_config(ENDPOINT)

    assert config == TracingConfig(endpoint="http://collector:4318/v1/traces",
                                   service_name="shelver", resource={"service.name": "shelver"},
                                   sampler="parentbased_always_on", sampler_arg=None)


def test_resource_attributes_are_decoded_and_the_service_name_variable_wins() -> None:
    from_resource = read_config({**ENDPOINT, "OTEL_RESOURCE_ATTRIBUTES":
                                 "service.name=books, deployment.environment.name=prod%20eu"})
    named = read_config({**ENDPOINT, "OTEL_SERVICE_NAME": "shelver-eu",
                         "OTEL_RESOURCE_ATTRIBUTES": "service.name=books"})

    assert from_resource is not None and from_resource.resource == {
        "service.name": "books", "deployment.environment.name": "prod eu"}
    assert named is not None and named.service_name == "shelver-eu"
    assert named.resource == {"service.name": "shelver-eu"}


def test_the_ratio_samplers_take_their_argument() -> None:
    ratio = read_config({**ENDPOINT, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                         "OTEL_TRACES_SAMPLER_ARG": "0.01"})
    default = read_config({**ENDPOINT, "OTEL_TRACES_SAMPLER": "traceidratio"})
    ignored = read_config({**ENDPOINT, "OTEL_TRACES_SAMPLER": "always_on",
                           "OTEL_TRACES_SAMPLER_ARG": "junk"})

    assert ratio is not None and ratio.sampler_arg == 0.01
    assert default is not None and default.sampler_arg == 1.0
    assert ignored is not None and ignored.sampler_arg is None


@pytest.mark.parametrize(("env", "variable"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT="),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://c:4317"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL="),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="),
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "xray"}, "OTEL_TRACES_SAMPLER="),
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
     "OTEL_TRACES_SAMPLER_ARG="),
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"},
     "OTEL_TRACES_SAMPLER_ARG="),
    ({**ENDPOINT, "OTEL_RESOURCE_ATTRIBUTES": "team"}, "OTEL_RESOURCE_ATTRIBUTES="),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED="),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER="),
])
def test_a_value_that_cannot_be_used_is_an_error_naming_its_variable(env: dict[str, str],
                                                                     variable: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}"):
        read_config(env)


def test_every_variable_read_is_a_standard_otel_one() -> None:
    # workers.settings lists the variables Shelver reads; these are the SDK's (OTEL_*).
    assert all(name.startswith("OTEL_") for name in tracing.VARIABLES)


# -- X-Ray and W3C ------------------------------------------------------------------------------
def test_the_aws_trace_header_converts_to_w3c_ids_and_back() -> None:
    ids = parse_aws_trace_header(XRAY)

    assert ids == SpanIds(XRAY_TRACE, "53995c3f42cd8ad8", sampled=True)
    assert aws_trace_header(ids) == XRAY


@pytest.mark.parametrize(("header", "sampled"), [
    ("Parent=53995c3f42cd8ad8; Root=1-5759E988-BD862E3FE1BE46A994272793", False),
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0", False),
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?", False),
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;"
     "Lineage=a87bd80c:1|68fd508a:5", True),
])
def test_field_order_case_and_other_fields_do_not_matter(header: str, sampled: bool) -> None:
    assert parse_aws_trace_header(header) == SpanIds(XRAY_TRACE, "53995c3f42cd8ad8", sampled)


@pytest.mark.parametrize("header", [
    "Root=1-5759e988-bd862e3fe1be46a994272793",  # no parent: no span to continue
    "Root=1-5759e988-bd862e3fe1be46a99427279;Parent=53995c3f42cd8ad8",
    "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad",
    "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
    "garbage",
    "",
])
def test_a_header_without_a_valid_root_and_parent_carries_no_context(header: str) -> None:
    assert parse_aws_trace_header(header) is None


def test_a_received_message_carries_its_attributes_and_its_system_attribute() -> None:
    raw = {"MessageId": "m", "Attributes": {"AWSTraceHeader": XRAY, "MessageGroupId": "g"},
           "MessageAttributes": {"traceparent": {"DataType": "String",
                                                 "StringValue": TRACEPARENT},
                                 "other": {"DataType": "String", "StringValue": "x"}}}

    assert TraceCarrier.from_sqs(raw) == TraceCarrier(TRACEPARENT, None, XRAY)
    assert TraceCarrier.from_sqs({"MessageId": "m", "Attributes": {}}) is None


# -- context out: the attribute budget ---------------------------------------------------------
CARRIER = TraceCarrier(TRACEPARENT, "vendor=value", XRAY)


@pytest.mark.parametrize(("own", "sent"), [
    (0, ["traceparent", "tracestate"]),
    (3, ["traceparent", "tracestate"]),  # a DLQ copy's shelver-* attributes
    (8, ["traceparent", "tracestate"]),
    (9, ["traceparent"]),
    (10, []),
])
def test_the_context_fits_within_ten_attributes_and_always_goes_as_aws_trace_header(
        own: int, sent: list[str]) -> None:
    out = outgoing(CARRIER, own)

    assert list(out.message_attributes) == sent
    assert own + len(out.message_attributes) <= 10
    assert out.system_attributes == {
        "AWSTraceHeader": {"DataType": "String", "StringValue": XRAY}}


def test_a_copy_keeps_its_own_attributes_and_its_trace_attributes_are_replaced() -> None:
    own = {"shelver-reason": {"DataType": "String", "StringValue": "invalid_json"},
           "traceparent": {"DataType": "String", "StringValue": "00-old-old-01"}}
    request = {"QueueUrl": DLQ, "MessageBody": "{}", "MessageAttributes": own}

    applied = outgoing(TraceCarrier(TRACEPARENT, None, XRAY), 1).apply(request)

    assert applied["MessageAttributes"] == {
        "shelver-reason": own["shelver-reason"],
        "traceparent": {"DataType": "String", "StringValue": TRACEPARENT}}
    assert applied["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == XRAY
    assert request["MessageAttributes"] is own and "MessageSystemAttributes" not in request
    assert Outgoing().apply(request) == request


def test_sqs_takes_a_full_budget_and_hands_the_context_back(moto: None) -> None:
    # moto does not enforce the limit of 10 (LocalStack and SQS do): this is the round trip.
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="traced.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    own = {f"own-{n}": {"DataType": "String", "StringValue": str(n)} for n in range(8)}

    sqs.send_message(**outgoing(CARRIER, len(own)).apply({
        "QueueUrl": url, "MessageBody": "{}", "MessageGroupId": "g",
        "MessageDeduplicationId": "d", "MessageAttributes": own}))
    raw = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=list(tracing.RECEIVE_SYSTEM_ATTRIBUTE_NAMES),
        )["Messages"][0]

    assert TraceCarrier.from_sqs(raw) == CARRIER
    assert len(raw["MessageAttributes"]) == 10


# -- the spans ----------------------------------------------------------------------------------
class Traced:
    """An OtelTracing whose batch span processor exports to the SDK's in-memory exporter."""

    def __init__(self, **env: str) -> None:
        config = read_config({**ENDPOINT, **env})
        assert config is not None
        self.exporter = InMemorySpanExporter()
        self.tracing = OtelTracing.configure(config, {"shelver.consumer.slot": 1},
                                             exporter=self.exporter)

    def spans(self) -> list[ReadableSpan]:
        self.tracing.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        [found] = [span for span in self.spans() if span.name == name]
        return found


@pytest.fixture
def traced() -> Iterator[Traced]:
    traced = Traced()
    yield traced
    traced.tracing.shutdown(10)


def trace_hex(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def parent_hex(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def linked(span: ReadableSpan) -> list[tuple[int, int]]:
    return [(link.context.trace_id, link.context.span_id) for link in span.links]


def ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def test_a_process_span_continues_the_producers_trace_linked_to_the_receive_span(
        traced: Traced) -> None:
    carrier = TraceCarrier(TRACEPARENT, "vendor=value")
    received = traced.tracing.received(QUEUE, 1_000, [carrier, None])

    with traced.tracing.process(QUEUE, "m-1", "group-1", 2, carrier, received,
                                body_size=120) as span:
        span.book("book-1", "scifi", "scifi-bucket", "Dune.json")
        span.outcome("stored", "created")

    receive = traced.span("receive InputQueue.fifo")
    process = traced.span("process InputQueue.fifo")
    assert receive.kind is SpanKind.CLIENT and receive.start_time == 1_000
    assert receive.parent is None and linked(receive) == [
        (int(PRODUCER_TRACE, 16), int(PRODUCER_SPAN, 16))]
    assert dict(receive.attributes or {}) == {
        "messaging.system": "aws_sqs", "messaging.destination.name": "InputQueue.fifo",
        "messaging.operation.type": "receive", "messaging.operation.name": "receive",
        "aws.sqs.queue.url": QUEUE, "rpc.system": "aws-api", "rpc.service": "SQS",
        "rpc.method": "ReceiveMessage", "messaging.batch.message_count": 2}
    assert process.kind is SpanKind.CONSUMER
    assert (trace_hex(process), parent_hex(process)) == (PRODUCER_TRACE, PRODUCER_SPAN)
    assert linked(process) == [ids(receive)]
    assert process.context.trace_state.to_header() == "vendor=value"
    assert dict(process.attributes or {}) == {
        "messaging.system": "aws_sqs", "messaging.destination.name": "InputQueue.fifo",
        "messaging.operation.type": "process", "messaging.operation.name": "process",
        "aws.sqs.queue.url": QUEUE, "messaging.message.id": "m-1",
        "shelver.group_id": "group-1", "shelver.receive_count": 2,
        "messaging.message.body.size": 120, "shelver.book_id": "book-1",
        "shelver.genre": "scifi", "aws.s3.bucket": "scifi-bucket", "aws.s3.key": "Dune.json",
        "shelver.outcome": "stored", "shelver.reason": "created"}
    assert process.status.status_code is StatusCode.UNSET


def test_an_aws_trace_header_alone_is_continued(traced: Traced) -> None:
    with traced.tracing.process(QUEUE, "m", "g", 1, TraceCarrier(aws_trace_header=XRAY)):
        pass

    process = traced.span("process InputQueue.fifo")
    assert (trace_hex(process), parent_hex(process)) == (XRAY_TRACE, "53995c3f42cd8ad8")


def test_with_both_traceparent_wins_and_a_different_aws_trace_header_is_linked(
        traced: Traced) -> None:
    same = aws_trace_header(SpanIds(PRODUCER_TRACE, PRODUCER_SPAN, True))
    with traced.tracing.process(QUEUE, "m-1", "g", 1, TraceCarrier(TRACEPARENT, None, XRAY)):
        pass
    with traced.tracing.process(QUEUE, "m-2", "g", 1, TraceCarrier(TRACEPARENT, None, same)):
        pass

    first, second = traced.spans()
    assert (trace_hex(first), parent_hex(first)) == (PRODUCER_TRACE, PRODUCER_SPAN)
    assert linked(first) == [(int(XRAY_TRACE, 16), int("53995c3f42cd8ad8", 16))]
    assert (trace_hex(second), linked(second)) == (PRODUCER_TRACE, [])


def test_a_message_without_context_starts_its_own_trace(traced: Traced) -> None:
    with traced.tracing.process(QUEUE, "m", "g", 1, None), traced.tracing.process(
            QUEUE, "n", "g", 1, TraceCarrier("00-junk")):
        pass

    first, second = traced.spans()
    assert first.parent is None and second.parent is None
    assert first.context.trace_id != second.context.trace_id


def test_an_empty_poll_records_nothing_and_a_failed_one_records_its_error(
        traced: Traced) -> None:
    error = ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue",
                                   "Message": "gone"},
                         "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "r-1"}},
                        "ReceiveMessage")

    assert traced.tracing.received(QUEUE, 1, []) is None
    traced.tracing.received(QUEUE, 1, [], error)

    [span] = traced.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert span.attributes["http.response.status_code"] == 400
    assert span.attributes["aws.request_id"] == "r-1"
    assert [event.name for event in span.events] == ["exception"]


def test_a_dead_letter_is_an_error_with_its_reason_and_its_dlq_copy_carries_the_send_span(
        traced: Traced) -> None:
    with traced.tracing.process(QUEUE, "m-1", "g", 1, TraceCarrier(TRACEPARENT)) as span:
        with traced.tracing.send(DLQ) as send:
            out = send.outgoing(3)
            send.sent("dlq-m-1")
        span.outcome("dead_lettered", "invalid_json", "x" * 5000)

    process, send_span = traced.span("process InputQueue.fifo"), traced.span(
        "send DeadLetterQueue.fifo")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["shelver.reason"] == "invalid_json"
    assert process.attributes["error.type"] == "invalid_json"
    assert process.attributes["shelver.detail"] == "x" * 1000
    assert send_span.kind is SpanKind.PRODUCER and send_span.parent == process.context
    assert send_span.attributes is not None
    assert send_span.attributes["messaging.message.id"] == "dlq-m-1"
    assert send_span.attributes["rpc.method"] == "SendMessage"
    # What the DLQ copy carries names the send span, in both forms.
    sent = TraceCarrier.from_sqs({
        "MessageAttributes": out.message_attributes,
        "Attributes": {k: v["StringValue"] for k, v in out.system_attributes.items()}})
    assert sent is not None and sent.traceparent == f"00-{trace_hex(send_span)}-" \
        f"{format(send_span.context.span_id, '016x')}-01"
    assert sent.aws_trace_header == aws_trace_header(
        SpanIds(trace_hex(send_span), format(send_span.context.span_id, "016x"), True))


def test_a_retry_is_an_error_and_a_crash_count_is_an_event(traced: Traced) -> None:
    with traced.tracing.process(QUEUE, "m-1", "g", 3, None) as span:
        span.crashed(2)
        span.failed(TimeoutError("S3 took too long"))
        span.outcome("retry", "TimeoutError")

    process = traced.span("process InputQueue.fifo")
    assert process.status.status_code is StatusCode.ERROR
    crashed, exception = process.events
    assert (crashed.name, dict(crashed.attributes or {})) == (
        "crashed_consumer", {"shelver.crashes": 2})
    assert exception.name == "exception"


def test_s3_requests_are_children_of_the_process_span_with_either_client(
        traced: Traced) -> None:
    class Objects:
        def put(self, bucket: str, key: str, body: bytes, **kwargs: Any) -> str | None:
            if kwargs.get("if_match"):
                raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "no"},
                                   "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject")
            return '"etag"'

        def head(self, bucket: str, key: str, **kwargs: Any) -> ObjectHead:
            return ObjectHead('"etag"', {})

    objects = traced_objects(Objects(), traced.tracing)
    with traced.tracing.process(QUEUE, "m", "g", 1, None):
        objects.put("scifi", "Dune.json", b"{}", content_type="application/json", metadata={},
                    if_none_match=True)
        objects.head("scifi", "Dune.json")
        with pytest.raises(ClientError):
            objects.put("scifi", "Dune.json", b"{}", content_type="application/json",
                        metadata={}, if_match='"etag"')

    put, head, refused, process = traced.spans()
    assert [put.name, head.name, refused.name] == ["S3.PutObject", "S3.HeadObject",
                                                   "S3.PutObject"]
    assert all(span.parent == process.context and span.kind is SpanKind.CLIENT
               for span in (put, head, refused))
    assert dict(put.attributes or {}) == {
        "rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": "PutObject",
        "aws.s3.bucket": "scifi", "aws.s3.key": "Dune.json"}
    assert put.status.status_code is StatusCode.UNSET
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes is not None
    assert (refused.attributes["error.type"], refused.attributes["http.response.status_code"]
            ) == ("PreconditionFailed", 412)


def test_a_batch_send_links_a_create_span_per_book_each_its_own_trace(traced: Traced) -> None:
    created = [traced.tracing.create(QUEUE) for _ in range(3)]
    with traced.tracing.send(QUEUE, [c.carrier() for c in created], message_count=3):
        pass

    spans = traced.spans()
    creates = [s for s in spans if s.name == "create InputQueue.fifo"]
    send = traced.span("send InputQueue.fifo")
    assert len({s.context.trace_id for s in creates}) == 3
    assert all(s.parent is None and s.kind is SpanKind.PRODUCER for s in creates)
    assert linked(send) == [ids(s) for s in creates]
    assert send.attributes is not None
    assert (send.attributes["messaging.batch.message_count"], send.attributes["rpc.method"]) == (
        3, "SendMessageBatch")
    assert created[0].outgoing().message_attributes["traceparent"]["StringValue"].startswith(
        f"00-{trace_hex(creates[0])}-")


def test_a_settle_links_the_process_spans_and_a_hand_back_names_the_crashed_messages(
        traced: Traced) -> None:
    carriers = []
    for message_id in ("m-1", "m-2"):
        with traced.tracing.process(QUEUE, message_id, "g", 1, None) as span:
            carriers.append(span.carrier())
    with traced.tracing.settle("delete", QUEUE, carriers):
        pass
    traced.tracing.hand_back(QUEUE, started_ns=5_000, consumers=1, released=4, crashed=["m-3"])

    first, second, delete, hand_back = traced.spans()
    assert delete.name == "delete InputQueue.fifo" and delete.kind is SpanKind.CLIENT
    assert linked(delete) == [ids(first), ids(second)]
    assert delete.attributes is not None
    assert (delete.attributes["messaging.operation.type"], delete.attributes["rpc.method"],
            delete.attributes["messaging.batch.message_count"]) == (
        "settle", "DeleteMessageBatch", 2)
    assert hand_back.name == "hand_back InputQueue.fifo" and hand_back.parent is None
    assert hand_back.start_time == 5_000
    assert hand_back.attributes is not None
    assert hand_back.attributes["messaging.batch.message_count"] == 4
    assert [(e.name, dict(e.attributes or {})) for e in hand_back.events] == [
        ("crashed_consumer", {"messaging.message.id": "m-3"})]


def test_the_producers_sampling_decision_is_kept_and_the_ratio_applies_to_new_traces() -> None:
    traced = Traced(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    unsampled = XRAY.replace("Sampled=1", "Sampled=0")
    for carrier in (TraceCarrier(TRACEPARENT), None, TraceCarrier(aws_trace_header=unsampled)):
        with traced.tracing.process(QUEUE, "m", "g", 1, carrier) as span:
            # Not recorded, yet its context goes on: the next hop keeps the decision.
            outgoing_context = span.carrier()

    [recorded] = traced.spans()
    assert trace_hex(recorded) == PRODUCER_TRACE
    assert outgoing_context is not None and outgoing_context.traceparent is not None
    assert outgoing_context.traceparent.startswith(f"00-{XRAY_TRACE}-")
    assert outgoing_context.traceparent.endswith("-00")
    traced.tracing.shutdown(10)


def test_the_resource_names_the_service_and_this_process() -> None:
    traced = Traced(OTEL_SERVICE_NAME="shelver-eu",
                    OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=prod")
    with traced.tracing.process(QUEUE, "m", "g", 1, None):
        pass

    attributes = traced.spans()[0].resource.attributes
    assert attributes["service.name"] == "shelver-eu"
    assert attributes["deployment.environment.name"] == "prod"
    assert attributes["shelver.consumer.slot"] == 1
    assert isinstance(attributes["process.pid"], int)
    assert attributes["telemetry.sdk.name"] == "opentelemetry"
    traced.tracing.shutdown(10)


def test_a_graceful_stop_exports_what_the_batch_processor_still_holds() -> None:
    traced = Traced()
    with traced.tracing.process(QUEUE, "m", "g", 1, None):
        pass
    # The batch processor exports every 5 s: nothing yet.
    assert traced.exporter.get_finished_spans() == ()

    assert traced.tracing.shutdown(10)

    assert [span.name for span in traced.exporter.get_finished_spans()] == [
        "process InputQueue.fifo"]


# -- log correlation ----------------------------------------------------------------------------
@pytest.fixture
def record_factory() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_log_records_made_in_a_span_carry_its_ids(traced: Traced, record_factory: None,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    traced.tracing.install_log_fields()
    traced.tracing.install_log_fields()  # idempotent
    log = logging.getLogger("tests.tracing")
    with caplog.at_level(logging.INFO, logger="tests.tracing"):
        log.info("outside")
        with traced.tracing.process(QUEUE, "m", "g", 1, TraceCarrier(TRACEPARENT)) as span:
            log.info("inside")
            carrier = span.carrier()

    outside, inside = caplog.records
    assert carrier is not None and carrier.traceparent is not None
    _, trace_id, span_id, _ = carrier.traceparent.split("-")
    assert (inside.trace_id, inside.span_id) == (trace_id, span_id)  # type: ignore[attr-defined]
    assert inside.trace_text == f" trace_id={trace_id} span_id={span_id}"  # type: ignore[attr-defined]
    assert (outside.trace_id, outside.span_id, outside.trace_text) == (  # type: ignore[attr-defined]
        None, None, "")
    formatted = logging.Formatter("%(message)s%(trace_text)s").format(inside)
    assert formatted == f"inside trace_id={trace_id} span_id={span_id}"
