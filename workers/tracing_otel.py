"""The OpenTelemetry side of `workers.tracing`, imported only when tracing is configured: the
tracer provider of this process (its batch span processor and OTLP/HTTP exporter) and the spans
behind the `Tracing` verbs. The docstring of `workers.tracing` says what each span means."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workers.tracing import (
    NOTHING_OUT,
    TRACEPARENT,
    TRACESTATE,
    Outgoing,
    SpanIds,
    TraceCarrier,
    TracingConfig,
    aws_trace_header,
    install_log_fields,
    outgoing,
    parse_aws_trace_header,
    queue_name,
)

# Semantic-convention attribute names (messaging, AWS SDK, errors) and Shelver's own.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
MESSAGING_BODY_SIZE = "messaging.message.body.size"
SQS_QUEUE_URL = "aws.sqs.queue.url"
S3_BUCKET = "aws.s3.bucket"
S3_KEY = "aws.s3.key"
AWS_REQUEST_ID = "aws.request_id"
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
HTTP_STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
BOOK_ID = "shelver.book_id"
GENRE = "shelver.genre"
GROUP_ID = "shelver.group_id"
RECEIVE_COUNT = "shelver.receive_count"
OUTCOME = "shelver.outcome"
REASON = "shelver.reason"
DETAIL = "shelver.detail"
CRASHES = "shelver.crashes"
CONSUMERS = "shelver.consumers"

SQS = "aws_sqs"
AWS_API = "aws-api"
# Outcomes that are failures of the message's processing: the span's status is an error.
FAILED_OUTCOMES = frozenset({"dead_lettered", "retry"})
# A detail quotes the body (workers.books); a span keeps as much of it as a dead letter does.
MAX_DETAIL = 1000
# Messaging operation type and the SQS call, by the name of a settle operation.
SETTLE_CALLS = {"delete": "DeleteMessageBatch", "change_visibility": "ChangeMessageVisibilityBatch"}

_W3C = TraceContextTextMapPropagator()
_ROOT = otel_context.Context()  # as a parent: none, the span starts a trace


def _shelver_version() -> str:
    try:
        return version("shelver")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _sampler(config: TracingConfig) -> sampling.Sampler:
    ratio = config.sampler_arg if config.sampler_arg is not None else 1.0
    root: sampling.Sampler
    base = config.sampler.removeprefix("parentbased_")
    if base == "always_on":
        root = sampling.ALWAYS_ON
    elif base == "always_off":
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if config.sampler.startswith("parentbased_") else root


# -- contexts: carriers in, carriers out ------------------------------------------------------
def _ids(context: SpanContext) -> SpanIds:
    return SpanIds(format(context.trace_id, "032x"), format(context.span_id, "016x"),
                   context.trace_flags.sampled)


def carrier_of(context: SpanContext) -> TraceCarrier | None:
    """A span context as a message carries it: traceparent, tracestate, AWSTraceHeader."""
    if not context.is_valid:
        return None
    ids = _ids(context)
    return TraceCarrier(
        traceparent=f"00-{ids.trace_id}-{ids.span_id}-{int(context.trace_flags):02x}",
        tracestate=context.trace_state.to_header() or None,
        aws_trace_header=aws_trace_header(ids), span_context=context)


@functools.lru_cache(maxsize=256)
def contexts_of(carrier: TraceCarrier | None) -> tuple[SpanContext | None, SpanContext | None]:
    """(the context to continue, the other one the message carries if it names another span):
    traceparent wins over AWSTraceHeader (`workers.tracing` says why). Cached: a receive span's
    context is linked from each of its up to ten process spans."""
    if carrier is None:
        return None, None
    w3c = None
    if carrier.traceparent:
        headers = {TRACEPARENT: carrier.traceparent}
        if carrier.tracestate:
            headers[TRACESTATE] = carrier.tracestate
        context = trace.get_current_span(_W3C.extract(headers)).get_span_context()
        w3c = context if context.is_valid else None
    xray = None
    if carrier.aws_trace_header and (ids := parse_aws_trace_header(carrier.aws_trace_header)):
        xray = SpanContext(int(ids.trace_id, 16), int(ids.span_id, 16), is_remote=True,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED if ids.sampled else 0))
    if w3c is None:
        return xray, None
    same = xray is None or (xray.trace_id, xray.span_id) == (w3c.trace_id, w3c.span_id)
    return w3c, None if same else xray


def _links(carriers: Sequence[TraceCarrier | None]) -> list[Link]:
    seen = set()
    links = []
    for carrier in carriers:
        context = (carrier.span_context if carrier is not None
                   and carrier.span_context is not None else contexts_of(carrier)[0])
        if context is not None and (context.trace_id, context.span_id) not in seen:
            seen.add((context.trace_id, context.span_id))
            links.append(Link(context))
    return links


def error_type(error: BaseException) -> str:
    """`error.type`: an AWS error answer's code (botocore's ClientError), else the class."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__qualname__


def _record_failure(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
    span.set_attribute(ERROR_TYPE, error_type(error))
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        metadata = response.get("ResponseMetadata", {})
        if metadata.get("HTTPStatusCode"):
            span.set_attribute(HTTP_STATUS, int(metadata["HTTPStatusCode"]))
        if metadata.get("RequestId"):
            span.set_attribute(AWS_REQUEST_ID, str(metadata["RequestId"]))


class OtelSpan:
    """`workers.tracing.Span` on an OpenTelemetry span."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def carrier(self) -> TraceCarrier | None:
        return carrier_of(self.span.get_span_context())

    def outgoing(self, own_attributes: int = 0) -> Outgoing:
        carrier = self.carrier()
        return NOTHING_OUT if carrier is None else outgoing(carrier, own_attributes)

    def book(self, book_id: str, genre: str, bucket: str, key: str | None = None) -> None:
        self.span.set_attributes({BOOK_ID: book_id, GENRE: genre, S3_BUCKET: bucket})
        if key is not None:
            self.span.set_attribute(S3_KEY, key)

    def outcome(self, outcome: str, reason: str = "", detail: str = "") -> None:
        self.span.set_attribute(OUTCOME, outcome)
        if reason:
            self.span.set_attribute(REASON, reason)
        if detail:
            self.span.set_attribute(DETAIL, detail[:MAX_DETAIL])
        if outcome in FAILED_OUTCOMES:
            self.span.set_attribute(ERROR_TYPE, reason or outcome)
            self.span.set_status(Status(StatusCode.ERROR, f"{outcome}: {reason}"))

    def crashed(self, crashes: int) -> None:
        self.span.add_event("crashed_consumer", {CRASHES: crashes})

    def sent(self, message_id: str) -> None:
        self.span.set_attribute(MESSAGING_MESSAGE_ID, message_id)

    def failed(self, error: BaseException) -> None:
        _record_failure(self.span, error)


def _sqs_attributes(queue_url: str, operation_type: str, operation: str,
                    call: str | None = None) -> dict[str, Any]:
    """A messaging span's attributes; with `call`, the SQS API call's (AWS SDK spans')."""
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: SQS, MESSAGING_DESTINATION: queue_name(queue_url),
        MESSAGING_OPERATION_TYPE: operation_type, MESSAGING_OPERATION_NAME: operation,
        SQS_QUEUE_URL: queue_url}
    if call is not None:
        attributes.update({RPC_SYSTEM: AWS_API, RPC_SERVICE: "SQS", RPC_METHOD: call})
    return attributes


class OtelTracing:
    """`workers.tracing.Tracing` for this process: one tracer provider, one batch span
    processor."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("shelver", _shelver_version())

    @classmethod
    def configure(cls, config: TracingConfig, resource: Mapping[str, str | int],
                  exporter: SpanExporter | None = None) -> OtelTracing:
        """With `exporter` (a test's), else the OTLP/HTTP one to the configured endpoint (its
        headers, compression, timeout and certificates from the SDK's own variables)."""
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint)
        attributes = {"service.version": _shelver_version(), "process.pid": os.getpid(),
                      **config.resource, **resource}
        # No exit hook: a consumer leaves with os._exit, and a flush at exit could outlast the
        # stop timeout; `shutdown` flushes, within a bound.
        provider = TracerProvider(resource=Resource.create(attributes),
                                  sampler=_sampler(config), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def received(self, queue_url: str, started_ns: int,
                 carriers: Sequence[TraceCarrier | None], error: BaseException | None = None
                 ) -> TraceCarrier | None:
        if error is None and not carriers:
            return None
        span = self._tracer.start_span(
            f"receive {queue_name(queue_url)}", context=_ROOT, kind=SpanKind.CLIENT,
            attributes={**_sqs_attributes(queue_url, "receive", "receive", "ReceiveMessage"),
                        MESSAGING_BATCH_COUNT: len(carriers)},
            links=_links(carriers), start_time=started_ns)
        if error is not None:
            _record_failure(span, error)
        span.end()
        return carrier_of(span.get_span_context())

    @contextmanager
    def process(self, queue_url: str, message_id: str, group_id: str, receive_count: int,
                carrier: TraceCarrier | None, received: TraceCarrier | None = None,
                body_size: int | None = None) -> Iterator[OtelSpan]:
        parent, other = contexts_of(carrier)
        links = _links([received])
        if other is not None:
            links.append(Link(other))
        attributes = {**_sqs_attributes(queue_url, "process", "process"),
                      MESSAGING_MESSAGE_ID: message_id, GROUP_ID: group_id,
                      RECEIVE_COUNT: receive_count}
        if body_size is not None:
            attributes[MESSAGING_BODY_SIZE] = body_size
        with self._tracer.start_as_current_span(
                f"process {queue_name(queue_url)}",
                context=_ROOT if parent is None else trace.set_span_in_context(
                    NonRecordingSpan(parent)),
                kind=SpanKind.CONSUMER, attributes=attributes, links=links) as span:
            yield OtelSpan(span)

    @contextmanager
    def s3(self, operation: str, bucket: str, key: str) -> Iterator[OtelSpan]:
        with self._tracer.start_as_current_span(
                f"S3.{operation}", kind=SpanKind.CLIENT,
                attributes={RPC_SYSTEM: AWS_API, RPC_SERVICE: "S3", RPC_METHOD: operation,
                            S3_BUCKET: bucket, S3_KEY: key},
                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield OtelSpan(span)
            except BaseException as error:
                _record_failure(span, error)
                raise

    @contextmanager
    def send(self, queue_url: str, links: Sequence[TraceCarrier | None] = (),
             message_count: int = 1) -> Iterator[OtelSpan]:
        call = "SendMessageBatch" if links else "SendMessage"
        attributes = _sqs_attributes(queue_url, "send", "send", call)
        if links:
            attributes[MESSAGING_BATCH_COUNT] = message_count
        with self._sqs_span(f"send {queue_name(queue_url)}", SpanKind.PRODUCER, attributes,
                            _links(links)) as span:
            yield span

    def create(self, queue_url: str) -> OtelSpan:
        span = self._tracer.start_span(
            f"create {queue_name(queue_url)}", context=_ROOT, kind=SpanKind.PRODUCER,
            attributes=_sqs_attributes(queue_url, "create", "create", "SendMessageBatch"))
        span.end()
        return OtelSpan(span)

    @contextmanager
    def settle(self, operation: str, queue_url: str, links: Sequence[TraceCarrier | None]
               ) -> Iterator[OtelSpan]:
        attributes = {**_sqs_attributes(queue_url, "settle", operation, SETTLE_CALLS[operation]),
                      MESSAGING_BATCH_COUNT: len(links)}
        with self._sqs_span(f"{operation} {queue_name(queue_url)}", SpanKind.CLIENT, attributes,
                            _links(links)) as span:
            yield span

    @contextmanager
    def _sqs_span(self, name: str, kind: SpanKind, attributes: Mapping[str, Any],
                  links: list[Link]) -> Iterator[OtelSpan]:
        with self._tracer.start_as_current_span(name, kind=kind, attributes=attributes,
                                                links=links, record_exception=False,
                                                set_status_on_exception=False) as span:
            try:
                yield OtelSpan(span)
            except BaseException as error:
                _record_failure(span, error)
                raise

    def hand_back(self, queue_url: str, started_ns: int, consumers: int, released: int,
                  crashed: Sequence[str]) -> None:
        span = self._tracer.start_span(
            f"hand_back {queue_name(queue_url)}", context=_ROOT, kind=SpanKind.CLIENT,
            attributes={**_sqs_attributes(queue_url, "settle", "hand_back",
                                          SETTLE_CALLS["change_visibility"]),
                        MESSAGING_BATCH_COUNT: released, CONSUMERS: consumers},
            start_time=started_ns)
        for message_id in crashed:
            span.add_event("crashed_consumer", {MESSAGING_MESSAGE_ID: message_id})
        span.end()

    def install_log_fields(self) -> None:
        install_log_fields(current_ids)

    def shutdown(self, timeout: float) -> bool:
        # The SDK's own shutdown waits up to 30 s for the last export: bounded here by a
        # thread, which a process leaving with os._exit does not wait for.
        done = threading.Event()

        def stop() -> None:
            self.provider.shutdown()
            done.set()

        threading.Thread(target=stop, name="tracing-shutdown", daemon=True).start()
        return done.wait(timeout)


def current_ids() -> SpanIds | None:
    """The ids of the span current in this thread, if any (sampled or not: a log line of an
    unsampled trace still shares its ids with its neighbours)."""
    context = trace.get_current_span().get_span_context()
    return _ids(context) if context.is_valid else None
