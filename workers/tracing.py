"""Tracing: each book followed from its producer to its S3 object with OpenTelemetry.

Off by default, and free when off: this module imports nothing from OpenTelemetry, and `start`
returns `OFF`, whose verbs do nothing (a shared no-op context manager, no allocation). The SDK
(`workers.tracing_otel`) is imported only when tracing is configured.

Configured means an OTLP endpoint is set: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL,
used as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` appended), unless
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. `OTEL_SERVICE_NAME` alone turns nothing
on: an exporter with nowhere to send would only queue and drop. The other standard variables:
`OTEL_SERVICE_NAME` (default "shelver"), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`: a producer's sampling decision is
kept), `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` (only `http/protobuf`: the image carries the
OTLP/HTTP exporter, not gRPC's 25 MB). They are validated here, once, with errors that name the
variable; the SDK's own (headers, compression, timeout, certificates, `OTEL_BSP_*`) it reads
itself. `OTEL_PROPAGATORS` is not read: what a message carries is fixed (below).

Context in: a message may carry its producer's context in two places,
- the W3C `traceparent` and `tracestate` message attributes, which OpenTelemetry instrumentations
  and `shelver send` write; and
- the `AWSTraceHeader` system attribute (X-Ray format,
  `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`), which AWS
  services and X-Ray instrumented senders set, and which SQS also fills from a SendMessage's
  `X-Amzn-Trace-Id` HTTP header. An X-Ray trace id is a W3C one with a dash after its first 8
  digits, so it converts both ways without loss; `Sampled=1` is sampled, anything else (0, the
  undecided `?`, none) is not.
With both, `traceparent` wins: it is what the producing code itself put on the message, while
`AWSTraceHeader` may be infrastructure's: inside Lambda, botocore sends the function's own X-Ray
context (`_X_AMZN_TRACE_ID`) as `X-Amzn-Trace-Id` with every call, which SQS then stores, so a
producer's span context in `traceparent` sits beside its Lambda's, at best the same and usually
its parent; and only the W3C form carries `tracestate`. A different `AWSTraceHeader` context is
not dropped: the process span links to it.

Context out (the DLQ copy of a message, `shelver send`): SQS takes at most 10 message attributes.
The context always goes as `AWSTraceHeader`, which counts toward neither that limit nor the
message size, and also as `traceparent` (then `tracestate`) if the message's other attributes
leave room (`outgoing`); a copy's own `traceparent`/`tracestate` are replaced, never added to. The
DLQ copy carries 3 `shelver-*` attributes today: room for both.

Spans, after the OpenTelemetry messaging and AWS SDK semantic conventions (`messaging.system`
`aws_sqs`; span names `<operation> <queue>`, S3 ones `S3.<Operation>`):
- receive (CLIENT), one per ReceiveMessage that returned messages, linked to each message's
  context; an empty long poll records nothing (it would be most spans of an idle consumer);
- process (CONSUMER), one per message, in its producer's trace (a new trace when it carries no
  context), linked to the receive span: the book, its bucket and key, what became of it;
- S3 (CLIENT), one per request, as children of the process span (`workers.aws.s3.traced_objects`
  wraps either S3 client);
- send (PRODUCER): the DLQ copy, a child of the process span; `shelver send`'s batches, linked to
  a create (PRODUCER) span per book, each the root of that book's trace;
- settle (CLIENT): a batch delete or visibility change, linked to the messages' process spans;
- the hand-back of a dead consumer's messages, a span of its own; and on the message's next
  process span, an event with how many consumers died on it.
Shelver's own attributes mirror its log fields: `shelver.book_id`, `shelver.genre`,
`shelver.group_id` (a FIFO MessageGroupId is an ordering key, which the conventions name per
system, e.g. `messaging.gcp_pubsub.message.ordering_key`, and not yet for SQS; their
`messaging.message.conversation_id` is a correlation id, something else), `shelver.outcome`,
`shelver.reason`, `shelver.detail`, `shelver.receive_count`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from workers.settings import ConfigError

# The standard variables this module reads (the SDK reads its other OTEL_* ones itself).
SDK_DISABLED = "OTEL_SDK_DISABLED"
TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
SERVICE_NAME = "OTEL_SERVICE_NAME"
RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
SAMPLER = "OTEL_TRACES_SAMPLER"
SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
VARIABLES = (SDK_DISABLED, TRACES_EXPORTER, ENDPOINT, TRACES_ENDPOINT, PROTOCOL, TRACES_PROTOCOL,
             SERVICE_NAME, RESOURCE_ATTRIBUTES, SAMPLER, SAMPLER_ARG)

DEFAULT_SERVICE_NAME = "shelver"
PROTOCOLS = ("http/protobuf",)
DEFAULT_SAMPLER = "parentbased_always_on"
# The SDK's built-in samplers; those taking a ratio read OTEL_TRACES_SAMPLER_ARG (default 1.0).
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")

# What a message carries its context in.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
AWS_TRACE_HEADER = "AWSTraceHeader"
# For ReceiveMessage: MessageAttributeNames and MessageSystemAttributeNames.
RECEIVE_ATTRIBUTE_NAMES = (TRACEPARENT, TRACESTATE)
RECEIVE_SYSTEM_ATTRIBUTE_NAMES = (AWS_TRACE_HEADER,)
SQS_MAX_ATTRIBUTES = 10


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str  # where spans go: the OTLP/HTTP traces URL
    service_name: str
    resource: Mapping[str, str]  # OTEL_RESOURCE_ATTRIBUTES, service.name set
    sampler: str
    sampler_arg: float | None  # for the ratio samplers only


def read_config(env: Mapping[str, str]) -> TracingConfig | None:
    """The tracing configuration, None when tracing is off; ConfigError naming the variable when
    a value cannot be used."""
    if _flag(env, SDK_DISABLED) or _value(env, TRACES_EXPORTER) == "none":
        return None
    if (exporter := _value(env, TRACES_EXPORTER)) not in ("", "otlp"):
        raise ConfigError(f"{TRACES_EXPORTER}={exporter!r} is not valid: expected otlp or none "
                          "(Shelver carries the OTLP exporter only)")
    endpoint = _traces_endpoint(env)
    if endpoint is None:
        return None
    for variable in (TRACES_PROTOCOL, PROTOCOL):
        if (protocol := _value(env, variable)) not in ("", *PROTOCOLS):
            raise ConfigError(f"{variable}={protocol!r} is not valid: expected http/protobuf "
                              "(Shelver carries the OTLP/HTTP exporter, not gRPC's)")
    resource = _resource_attributes(env.get(RESOURCE_ATTRIBUTES, ""))
    service_name = (env.get(SERVICE_NAME, "").strip() or resource.get("service.name")
                    or DEFAULT_SERVICE_NAME)
    sampler = _value(env, SAMPLER) or DEFAULT_SAMPLER
    if sampler not in SAMPLERS:
        raise ConfigError(f"{SAMPLER}={sampler!r} is not valid: expected one of "
                          f"{', '.join(SAMPLERS)}")
    return TracingConfig(endpoint=endpoint, service_name=service_name,
                         resource={**resource, "service.name": service_name},
                         sampler=sampler,
                         sampler_arg=_ratio(env) if sampler in RATIO_SAMPLERS else None)


def _value(env: Mapping[str, str], variable: str) -> str:
    return env.get(variable, "").strip().lower()


def _flag(env: Mapping[str, str], variable: str) -> bool:
    value = _value(env, variable)
    if value not in ("", "true", "false"):
        raise ConfigError(f"{variable}={env[variable]!r} is not valid: expected true or false")
    return value == "true"


def _traces_endpoint(env: Mapping[str, str]) -> str | None:
    for variable, suffix in ((TRACES_ENDPOINT, ""), (ENDPOINT, "/v1/traces")):
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{variable}={raw!r} is not valid: expected an http:// or https:// "
                              "URL, such as http://otel-collector:4318")
        return raw.rstrip("/") + suffix if suffix else raw
    return None


def _resource_attributes(raw: str) -> dict[str, str]:
    """`key=value` pairs separated by commas, values percent-encoded (the W3C Baggage form)."""
    attributes: dict[str, str] = {}
    for pair in filter(None, (item.strip() for item in raw.split(","))):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"{RESOURCE_ATTRIBUTES}={raw!r} is not valid: expected key=value "
                              f"pairs separated by commas, got {pair!r}")
        attributes[key.strip()] = unquote(value.strip())
    return attributes


def _ratio(env: Mapping[str, str]) -> float:
    raw = env.get(SAMPLER_ARG, "").strip()
    if not raw:
        return 1.0
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:  # also rejects nan
        raise ConfigError(f"{SAMPLER_ARG}={raw!r} is not valid: expected a sampling ratio from "
                          "0 to 1, such as 0.01")
    return ratio


# -- a message's context, as it travels: strings only ------------------------------------------
@dataclass(frozen=True)
class TraceCarrier:
    """The trace context a message carries (or a span's, to link to or to send on)."""

    traceparent: str | None = None
    tracestate: str | None = None
    aws_trace_header: str | None = None
    # A span of this process: its SDK context, so that linking to it parses nothing. Not part of
    # what travels, nor of what the carrier equals.
    span_context: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_sqs(cls, raw: Mapping[str, Any]) -> TraceCarrier | None:
        """From a ReceiveMessage answer's message (boto3's or the CRT client's, the same JSON):
        its MessageAttributes and its Attributes (system attributes); None if it carries none."""
        attributes = raw.get("MessageAttributes") or {}
        carrier = cls(_string(attributes.get(TRACEPARENT)), _string(attributes.get(TRACESTATE)),
                      (raw.get("Attributes") or {}).get(AWS_TRACE_HEADER) or None)
        return None if carrier == _EMPTY_CARRIER else carrier


_EMPTY_CARRIER = TraceCarrier()


def _string(attribute: Mapping[str, Any] | None) -> str | None:
    return (attribute or {}).get("StringValue") or None


@dataclass(frozen=True)
class SpanIds:
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16
    sampled: bool


_XRAY_ROOT = re.compile(r"1-([0-9a-f]{8})-([0-9a-f]{24})")
_HEX16 = re.compile(r"[0-9a-f]{16}")


def parse_aws_trace_header(header: str) -> SpanIds | None:
    """The context of an X-Ray trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;
    Sampled=1`, fields in any order, others such as Lineage ignored); None without a valid Root
    and Parent: a Root alone names no span to continue."""
    fields = {}
    for item in header.split(";"):
        key, _, value = item.partition("=")
        fields[key.strip().lower()] = value.strip().lower()
    root = _XRAY_ROOT.fullmatch(fields.get("root", ""))
    parent = fields.get("parent", "")
    if root is None or not _HEX16.fullmatch(parent) or set(parent) == {"0"}:
        return None
    trace_id = root.group(1) + root.group(2)
    if set(trace_id) == {"0"}:
        return None
    return SpanIds(trace_id, parent, fields.get("sampled") == "1")


def aws_trace_header(ids: SpanIds) -> str:
    return (f"Root=1-{ids.trace_id[:8]}-{ids.trace_id[8:]};Parent={ids.span_id};"
            f"Sampled={int(ids.sampled)}")


@dataclass(frozen=True)
class Outgoing:
    """The trace context to send with a message: SendMessage's MessageAttributes and
    MessageSystemAttributes (also the field names of a SendMessageBatch entry)."""

    message_attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    system_attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def apply(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """`request` (SendMessage's keyword arguments, or a SendMessageBatch entry) with the
        context added: its own MessageAttributes kept, a traceparent/tracestate it had (its
        producer's context, not this send's) replaced or dropped. Unchanged with no context."""
        applied = dict(request)
        if not (self.message_attributes or self.system_attributes):
            return applied
        attributes = {name: value for name, value in request.get("MessageAttributes", {}).items()
                      if name not in RECEIVE_ATTRIBUTE_NAMES}
        attributes.update(self.message_attributes)
        if attributes:
            applied["MessageAttributes"] = attributes
        else:
            applied.pop("MessageAttributes", None)
        if self.system_attributes:
            applied["MessageSystemAttributes"] = {**request.get("MessageSystemAttributes", {}),
                                                  **self.system_attributes}
        return applied


NOTHING_OUT = Outgoing()


def outgoing(carrier: TraceCarrier, own_attributes: int) -> Outgoing:
    """What to send `carrier` (a span's context) in, beside `own_attributes` other message
    attributes (traceparent and tracestate not counted): always AWSTraceHeader, then traceparent
    and tracestate as far as SQS's 10 attributes leave room."""
    room = SQS_MAX_ATTRIBUTES - own_attributes
    attributes = {}
    for name, value in ((TRACEPARENT, carrier.traceparent), (TRACESTATE, carrier.tracestate)):
        if value and room > 0:
            attributes[name] = {"DataType": "String", "StringValue": value}
            room -= 1
    system = ({AWS_TRACE_HEADER: {"DataType": "String", "StringValue": carrier.aws_trace_header}}
              if carrier.aws_trace_header else {})
    return Outgoing(attributes, system)


def queue_name(url: str) -> str:
    """`messaging.destination.name`: a queue URL's last path segment (a name passes as it is)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


# -- the verbs the consumer, the transport and `shelver send` call ------------------------------
class Span(Protocol):
    """A span in progress; when tracing is off, one whose methods do nothing."""

    def carrier(self) -> TraceCarrier | None:
        """Its context: for links, and to send on (`outgoing`)."""

    def outgoing(self, own_attributes: int = 0) -> Outgoing:
        """Its context, to send with a message that has `own_attributes` others."""

    def book(self, book_id: str, genre: str, bucket: str, key: str | None = None) -> None:
        """The book a message holds (process spans)."""

    def outcome(self, outcome: str, reason: str = "", detail: str = "") -> None:
        """What became of a message (process spans): stored (reason created, replaced,
        superseded), dead_lettered (its reason and detail: an error), retry (an error),
        released."""

    def crashed(self, crashes: int) -> None:
        """Consumers died this many times while processing this message (an event)."""

    def sent(self, message_id: str) -> None:
        """The id SQS gave the message a send span sent."""

    def failed(self, error: BaseException) -> None:
        """The operation failed with this (recorded, status error) and was handled."""


class Tracing(Protocol):
    enabled: bool

    def received(self, queue_url: str, started_ns: int,
                 carriers: Sequence[TraceCarrier | None], error: BaseException | None = None
                 ) -> TraceCarrier | None:
        """Record a finished ReceiveMessage call begun at `started_ns` (time.time_ns()) that
        returned messages carrying `carriers` (None for one without), or failed with `error`;
        the receive span's context, for the process spans to link to. Nothing for an empty
        poll."""

    def process(self, queue_url: str, message_id: str, group_id: str, receive_count: int,
                carrier: TraceCarrier | None, received: TraceCarrier | None = None,
                body_size: int | None = None) -> AbstractContextManager[Span]:
        """One message processed, in its producer's trace; the current span inside."""

    def s3(self, operation: str, bucket: str, key: str) -> AbstractContextManager[Span]:
        """One S3 request (PutObject, HeadObject, HeadBucket); an exception leaving it is
        recorded with its error code, and raised on."""

    def send(self, queue_url: str, links: Sequence[TraceCarrier | None] = (),
             message_count: int = 1) -> AbstractContextManager[Span]:
        """A SendMessage (the DLQ copy: a child of the current process span) or a
        SendMessageBatch of `message_count` (linked to its messages' create spans)."""

    def create(self, queue_url: str) -> Span:
        """A book about to be sent: a finished create span, the root of the book's trace; send
        its `outgoing()` with it."""

    def settle(self, operation: str, queue_url: str, links: Sequence[TraceCarrier | None]
               ) -> AbstractContextManager[Span]:
        """A batch delete ("delete") or visibility change ("change_visibility") of these
        messages' (their process spans' contexts)."""

    def hand_back(self, queue_url: str, started_ns: int, consumers: int, released: int,
                  crashed: Sequence[str]) -> None:
        """Record a finished hand-back, begun at `started_ns`, of what dead consumers held: how
        many consumers, how many messages released, and the ids of those in processing when
        theirs died."""

    def install_log_fields(self) -> None:
        """Give every log record of this process the ids of the current span (see
        `install_log_fields`); nothing when tracing is off."""

    def shutdown(self, timeout: float) -> bool:
        """Flush what is queued and stop exporting, within `timeout` seconds (a graceful stop;
        spans a killed process had queued are lost); False if it did not finish in time."""


class _NoSpan:
    def carrier(self) -> TraceCarrier | None:
        return None

    def outgoing(self, own_attributes: int = 0) -> Outgoing:
        return NOTHING_OUT

    def book(self, book_id: str, genre: str, bucket: str, key: str | None = None) -> None:
        pass

    def outcome(self, outcome: str, reason: str = "", detail: str = "") -> None:
        pass

    def crashed(self, crashes: int) -> None:
        pass

    def sent(self, message_id: str) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass


NO_SPAN = _NoSpan()
# Reusable and reentrant: entering it costs no allocation.
_NO_SPAN_CONTEXT = nullcontext(NO_SPAN)


class TracingOff:
    """Every verb does nothing."""

    enabled = False

    def received(self, queue_url: str, started_ns: int,
                 carriers: Sequence[TraceCarrier | None], error: BaseException | None = None
                 ) -> TraceCarrier | None:
        return None

    def process(self, queue_url: str, message_id: str, group_id: str, receive_count: int,
                carrier: TraceCarrier | None, received: TraceCarrier | None = None,
                body_size: int | None = None) -> AbstractContextManager[Span]:
        return _NO_SPAN_CONTEXT

    def s3(self, operation: str, bucket: str, key: str) -> AbstractContextManager[Span]:
        return _NO_SPAN_CONTEXT

    def send(self, queue_url: str, links: Sequence[TraceCarrier | None] = (),
             message_count: int = 1) -> AbstractContextManager[Span]:
        return _NO_SPAN_CONTEXT

    def create(self, queue_url: str) -> Span:
        return NO_SPAN

    def settle(self, operation: str, queue_url: str, links: Sequence[TraceCarrier | None]
               ) -> AbstractContextManager[Span]:
        return _NO_SPAN_CONTEXT

    def hand_back(self, queue_url: str, started_ns: int, consumers: int, released: int,
                  crashed: Sequence[str]) -> None:
        pass

    def install_log_fields(self) -> None:
        pass

    def shutdown(self, timeout: float) -> bool:
        return True


OFF = TracingOff()


def start(config: TracingConfig | None, **resource: str | int) -> Tracing:
    """This process's tracing: `OFF` without a configuration, else a tracer provider with a
    batch span processor exporting over OTLP/HTTP. `resource`: attributes of this process
    (`shelver.consumer.slot`, say) beside the configured ones. Once per process."""
    if config is None:
        return OFF
    from workers.tracing_otel import OtelTracing  # the SDK is imported only when on

    return OtelTracing.configure(config, resource)


# -- log correlation --------------------------------------------------------------------------
# The fields every log record gets once `install_log_fields` ran: trace_id and span_id (None
# outside a span, so the JSON formatter leaves them out), and trace_text, " trace_id=...
# span_id=..." or "", for a text format ending in %(trace_text)s.
LOG_FIELDS = ("trace_id", "span_id")


def install_log_fields(current_ids: Callable[[], SpanIds | None]) -> None:
    """Make every log record carry the ids of the span current where it is made (wrapping the
    record factory, so records of any logger and any handler get them). Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_shelver_trace_fields", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        ids = current_ids()
        if ids is None:
            record.trace_id = record.span_id = None
            record.trace_text = ""
        else:
            record.trace_id, record.span_id = ids.trace_id, ids.span_id
            record.trace_text = f" trace_id={ids.trace_id} span_id={ids.span_id}"
        return record

    make_record._shelver_trace_fields = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
