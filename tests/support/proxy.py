"""A fault-injecting HTTP reverse proxy for tests (stdlib only).

Put it between boto3 and an emulator (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SQS`` set to
``proxy.url``) to add latency, answer with AWS-style 500/503 or throttling errors, drop
connections (before or after the upstream did the work), or simulate an outage, all changeable
while requests flow::

    with FaultProxy("http://127.0.0.1:4566") as proxy:
        proxy.configure(delay_seconds=2.0, delay_methods={"PUT"})  # slow S3 writes only
        ...
        proxy.configure(error_rate=0.2)  # one request in five fails
        proxy.outage_for(10)  # refuse everything for ten seconds

Each request is read fully (S3 and SQS bodies are small) and forwarded on a fresh upstream
connection, so client keep-alive works independently of the upstream's. Faults are decided per
request in this order: trap, deny, outage, delay, reset, error, throttle, forward (then, maybe, a
late reset instead of the answer).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) are never forwarded; Expect is answered by this proxy
# (http.server sends "100 Continue") and Content-Length is recomputed from the body it read.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect",
    "content-length",
})
_ERROR_CODES = {500: ("InternalError", "InternalFailure"), 503: ("SlowDown", "ServiceUnavailable")}
_COUNTERS = ("requests", "forwarded", "delayed", "errors_injected", "resets_injected",
             "throttles_injected", "late_resets_injected", "outage_dropped", "trapped", "denied",
             "upstream_failures")
# The counters that are faults this proxy caused (the others count traffic).
FAULT_COUNTERS = ("errors_injected", "resets_injected", "throttles_injected",
                  "late_resets_injected", "outage_dropped", "trapped", "denied")

OutageMode = Literal["refuse", "blackhole"]


@dataclass
class FaultProxy:
    """Reverse proxy to ``upstream`` on ``host``:``port`` (0 = a free port) with faults.

    Controls (change them with ``configure``, or by plain assignment, at any time):
    - ``delay_seconds`` + a random ``0..jitter_seconds``: added before a request is handled, for
      requests whose method is in ``delay_methods`` (None = every method);
    - ``error_rate``: share of requests answered here with 500 or 503 (from ``error_statuses``)
      and an AWS-style error body: JSON for JSON-protocol requests (SQS), XML otherwise (S3);
    - ``reset_rate``: share of requests whose connection is closed with a TCP reset, no response;
    - ``throttle_rate``: share answered with the service's throttling error: S3 ``503 SlowDown``,
      SQS ``400 RequestThrottled`` (botocore retries both as throttling, with its own backoff);
    - ``late_reset_rate``: share forwarded, done by the upstream, then reset instead of answered:
      the nastiest network fault, since the client cannot tell the call took effect (a receive
      whose messages are now invisible, a write that landed);
    - ``outage_until``: ``time.monotonic()`` value until which every request is dropped:
      ``outage_mode="refuse"`` resets the connection at once, ``"blackhole"`` holds it without
      answering until the outage ends (or the client gives up), then resets it;
    - ``trap``: called with each request's method and path (query included) before anything
      else, in the request's handler thread; True resets the connection, nothing forwarded.
      A test acts at the exact moment a client sends a given request (say, kills the client);
    - ``deny``: called with each request's method and path after the trap; True answers it
      ``403 AccessDenied``, nothing forwarded: a request the credentials may not make, which
      botocore does not retry (say, every write of one key);
    - ``journal``: keep an `Exchange` (method, path, headers, status, times, the AWS
      ``operation`` asked for, body sizes) of every request the upstream answered, read with
      ``exchanges()``: who asked what, when, and the answer.
    """

    upstream: str
    delay_seconds: float = 0.0
    jitter_seconds: float = 0.0
    delay_methods: frozenset[str] | set[str] | None = None
    error_rate: float = 0.0
    reset_rate: float = 0.0
    throttle_rate: float = 0.0
    late_reset_rate: float = 0.0
    outage_until: float = 0.0
    outage_mode: OutageMode = "refuse"
    trap: Callable[[str, str], bool] | None = None
    deny: Callable[[str, str], bool] | None = None
    error_statuses: tuple[int, ...] = (500, 503)
    journal: bool = False
    upstream_timeout: float = 120.0
    host: str = "127.0.0.1"
    port: int = 0
    seed: int | None = None
    # Counters, updated under the lock; read them with `counters()` for a consistent snapshot.
    requests: int = field(default=0, init=False)
    forwarded: int = field(default=0, init=False)
    delayed: int = field(default=0, init=False)
    errors_injected: int = field(default=0, init=False)
    resets_injected: int = field(default=0, init=False)
    throttles_injected: int = field(default=0, init=False)
    late_resets_injected: int = field(default=0, init=False)
    outage_dropped: int = field(default=0, init=False)
    trapped: int = field(default=0, init=False)
    denied: int = field(default=0, init=False)
    upstream_failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {self.upstream!r}")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._upstream_prefix = parts.path.rstrip("/")
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)
        self._stopped = threading.Event()
        self._connections: set[socket.socket] = set()
        self._exchanges: list[Exchange] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._stopped.clear()
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake delayed and black-holed requests, close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://{self.host}:{self.port}"

    # -- controls ------------------------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Change several controls at once; a request sees all of them or none."""
        controls = {f.name for f in fields(self) if f.init} - {"upstream", "host", "port", "seed"}
        unknown = set(changes) - controls
        if unknown:
            raise TypeError(f"unknown proxy control(s): {sorted(unknown)}")
        with self._lock:
            for name, value in changes.items():
                if name == "delay_methods" and value is not None:
                    value = frozenset(m.upper() for m in value)
                setattr(self, name, value)

    def outage_for(self, seconds: float, mode: OutageMode | None = None) -> None:
        self.configure(outage_until=time.monotonic() + seconds,
                       **({} if mode is None else {"outage_mode": mode}))

    def heal(self) -> None:
        """Back to a transparent proxy (counters are kept)."""
        self.configure(delay_seconds=0.0, jitter_seconds=0.0, delay_methods=None,
                       error_rate=0.0, reset_rate=0.0, throttle_rate=0.0, late_reset_rate=0.0,
                       outage_until=0.0, trap=None, deny=None)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {name: getattr(self, name) for name in _COUNTERS}

    def faults(self) -> int:
        """How many requests this proxy has failed on purpose so far (delays not counted)."""
        counters = self.counters()
        return sum(counters[name] for name in FAULT_COUNTERS)

    def exchanges(self) -> list[Exchange]:
        """The requests the upstream answered while ``journal`` was on, in answer order."""
        with self._lock:
            return list(self._exchanges)

    def reset_counters(self) -> None:
        with self._lock:
            for name in _COUNTERS:
                setattr(self, name, 0)

    # -- used by the handler -------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            if self.journal:
                self._exchanges.append(exchange)

    def _plan(self, method: str) -> _Plan:
        """Decide every fault for one request under the lock, from one view of the controls."""
        with self._lock:
            self.requests += 1
            now = time.monotonic()
            if now < self.outage_until:
                self.outage_dropped += 1
                return _Plan(outage_until=self.outage_until, outage_mode=self.outage_mode)
            delay = 0.0
            methods = self.delay_methods
            if methods is None or method.upper() in {m.upper() for m in methods}:
                delay = self.delay_seconds + self._random.uniform(0, self.jitter_seconds)
                if delay > 0:
                    self.delayed += 1
            reset = self._random.random() < self.reset_rate
            error_status = None
            if not reset and self._random.random() < self.error_rate:
                error_status = self._random.choice(self.error_statuses)
            throttle = not reset and error_status is None and \
                self._random.random() < self.throttle_rate
            late_reset = self._random.random() < self.late_reset_rate
            return _Plan(delay=delay, reset=reset, error_status=error_status, throttle=throttle,
                         late_reset=late_reset)

    def _wait(self, seconds: float) -> bool:
        """Sleep at least `seconds` (monotonic); False if the proxy stopped meanwhile."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stopped.wait(remaining):
                return False
        return True


@dataclass(frozen=True)
class Exchange:
    """One request forwarded to the upstream, and its answer (the journal's entry)."""

    method: str
    path: str
    headers: dict[str, str]  # the request's, names in lower case
    status: int  # as the upstream answered, whether or not the client got it (late reset)
    arrived: float  # time.monotonic() when the whole request had reached the proxy
    answered: float  # time.monotonic() when the upstream's answer was read
    operation: Operation | None = None  # the AWS operation asked for
    request_bytes: int = 0  # of the request's body
    response_bytes: int = 0  # of the answer's body


class Operation(NamedTuple):
    """An AWS operation: its service ("SQS" or "S3") and AWS's name for it."""

    service: str
    name: str

    def __str__(self) -> str:
        return f"{self.service} {self.name}"


# S3 operations by method, on an object (a key) and on a bucket (the query refines a few of the
# bucket's). What none of these names is called "<METHOD> object" / "<METHOD> bucket".
_S3_OBJECT = {"PUT": "PutObject", "HEAD": "HeadObject", "GET": "GetObject",
              "DELETE": "DeleteObject"}
_S3_BUCKET = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "GET": "ListObjects",
              "DELETE": "DeleteBucket"}


def operation(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Operation:
    """The AWS operation a request asks for, by the name AWS gives it.

    SQS speaks two protocols: JSON (botocore since 1.31, and Shelver's CRT client) names the
    operation in ``X-Amz-Target: AmazonSQS.<Operation>``; the query protocol (older SDKs) in an
    ``Action`` parameter of the form body or of the URL. Anything else is S3, told by method and
    path: path-style (``/<bucket>/<key>``) or virtual-hosted (the bucket in the Host name,
    ``<bucket>.s3.<region>.amazonaws.com``)."""
    lower = {name.lower(): value for name, value in headers.items()}
    target = lower.get("x-amz-target", "")
    if target:
        return Operation("SQS", target.rpartition(".")[2])
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) \
        if "x-www-form-urlencoded" in lower.get("content-type", "") else {}
    action = (form.get("Action") or query.get("Action") or [""])[0]
    if action:
        return Operation("SQS", action)
    return Operation("S3", _s3_operation(method.upper(), parts.path, query,
                                         lower.get("host", "").split(":", 1)[0]))


def _s3_operation(method: str, path: str, query: dict[str, list[str]], host: str) -> str:
    virtual_hosted = (".s3." in host or ".s3-" in host) and not host.startswith(("s3.", "s3-"))
    bucket, _, key = (host.partition(".")[0] + path if virtual_hosted
                      else path.lstrip("/")).partition("/")
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} service"
    if key:
        return _S3_OBJECT.get(method, f"{method} object")
    if method == "GET" and query.get("list-type") == ["2"]:
        return "ListObjectsV2"
    if method == "GET" and "location" in query:
        return "GetBucketLocation"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return _S3_BUCKET.get(method, f"{method} bucket")


@dataclass(frozen=True)
class _Plan:
    delay: float = 0.0
    reset: bool = False
    error_status: int | None = None
    throttle: bool = False
    late_reset: bool = False
    outage_until: float | None = None
    outage_mode: OutageMode = "refuse"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.to_reset: set[socket.socket] = set()
        self.reset_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn): skip it, loopback only.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def shutdown_request(self, request: Any) -> None:
        with self.reset_lock:
            reset = request in self.to_reset
            self.to_reset.discard(request)
        if reset:
            # SO_LINGER 0 + close, without the usual shutdown(SHUT_WR) first: a TCP RST, no FIN.
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fault proxy: error handling a request from %s", client_address,
                  exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy

    def setup(self) -> None:
        super().setup()
        # An answer's head and body are written apart: with Nagle's algorithm the body would
        # wait for the client's ACK of the head, which a keep-alive client delays (40 ms on
        # Linux), adding that much to every answer with a body on a reused connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.proxy._lock:
            self.proxy._connections.add(self.connection)

    def finish(self) -> None:
        with self.proxy._lock:
            self.proxy._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fault proxy: " + format, *args)

    def __getattr__(self, name: str) -> Any:
        # Every method (do_GET, do_PUT, do_PATCH, ...) is proxied the same way.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # -- one request ---------------------------------------------------------------------------
    def _handle(self) -> None:
        proxy = self.proxy
        if proxy._stopped.is_set():
            self._reset()
            return
        body = self._read_body()
        trap = proxy.trap
        if trap is not None and trap(self.command, self.path):
            proxy._count("requests")
            proxy._count("trapped")
            self._reset()
            return
        deny = proxy.deny
        if deny is not None and deny(self.command, self.path):
            proxy._count("requests")
            proxy._count("denied")
            self._send_error(403, "fault proxy: access denied", "AccessDenied")
            return
        arrived = time.monotonic()
        plan = proxy._plan(self.command)
        if plan.outage_until is not None:
            if plan.outage_mode == "blackhole":
                proxy._wait(plan.outage_until - time.monotonic())
            self._reset()
            return
        if plan.delay > 0 and not proxy._wait(plan.delay):
            self._reset()
            return
        if plan.reset:
            proxy._count("resets_injected")
            self._reset()
            return
        if plan.error_status is not None:
            proxy._count("errors_injected")
            self._send_error(plan.error_status)
            return
        if plan.throttle:
            proxy._count("throttles_injected")
            self._send_throttle()
            return
        self._forward(body, arrived, late_reset=plan.late_reset)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers: dropped
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _forward(self, body: bytes, arrived: float, late_reset: bool = False) -> None:
        proxy = self.proxy
        connection_tokens = {t.strip().lower()
                             for t in self.headers.get("Connection", "").split(",")}
        had_body = bool(body) or "Content-Length" in self.headers or \
            "Transfer-Encoding" in self.headers
        upstream = http.client.HTTPConnection(proxy._upstream_host, proxy._upstream_port,
                                              timeout=proxy.upstream_timeout)
        try:
            # Host is passed through: SigV4 signed it, and emulators build URLs from it.
            upstream.putrequest(self.command, proxy._upstream_prefix + self.path,
                                skip_host="Host" in self.headers, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() not in connection_tokens:
                    upstream.putheader(name, value)
            if had_body:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body if body else None)
            response = upstream.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            proxy._count("upstream_failures")
            log.debug("fault proxy: upstream %s failed: %r", proxy.upstream, exc)
            self._send_error(502, f"fault proxy: upstream failed: {exc!r}")
            return
        finally:
            upstream.close()
        proxy._count("forwarded")
        if proxy.journal:  # naming the operation parses the body: only when it is kept
            headers = {name.lower(): value for name, value in self.headers.items()}
            proxy._record(Exchange(self.command, self.path, headers, response.status, arrived,
                                   time.monotonic(),
                                   operation(self.command, self.path, headers, body),
                                   len(body), len(payload)))
        if late_reset:
            proxy._count("late_resets_injected")
            self._reset()
            return
        self._respond(response.status, response.reason, response.getheaders(), payload)

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]],
                 payload: bytes) -> None:
        bodiless = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        try:
            self.send_response_only(status, reason)
            for name, value in headers:
                lower = name.lower()
                if lower in _HOP_BY_HOP and not (bodiless and lower == "content-length"):
                    continue
                self.send_header(name, value)
            if not bodiless:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not bodiless:
                self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _is_json_protocol(self) -> bool:
        # Not any JSON content type: an S3 PutObject of a .json file says application/json.
        return "X-Amz-Target" in self.headers or self.headers.get(
            "Content-Type", "").startswith("application/x-amz-json")

    def _send_throttle(self) -> None:
        # S3 throttles with 503 SlowDown; SQS (JSON or query protocol) with 400 RequestThrottled.
        if self._is_json_protocol() or "x-www-form-urlencoded" in self.headers.get(
                "Content-Type", ""):
            self._send_error(400, "fault proxy: injected throttling", "RequestThrottled")
        else:
            self._send_error(503, "fault proxy: injected throttling", "SlowDown")

    def _send_error(self, status: int, message: str | None = None,
                    code: str | None = None) -> None:
        xml_code, json_code = _ERROR_CODES.get(status, ("InternalError", "InternalFailure"))
        if code is not None:
            xml_code = json_code = code
        text = message or f"fault proxy: injected {status}"
        message = escape(text)
        request_id = str(uuid.uuid4())
        content_type = self.headers.get("Content-Type", "")
        if self._is_json_protocol():
            # AWS JSON protocol (SQS since botocore 1.31): the error code is __type.
            payload = json.dumps({"__type": json_code, "message": text}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.0"),
                       ("x-amzn-RequestId", request_id)]
        elif "x-www-form-urlencoded" in content_type:
            # AWS query protocol.
            payload = (f"<ErrorResponse><Error><Type>Receiver</Type><Code>{json_code}</Code>"
                       f"<Message>{message}</Message></Error>"
                       f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
            headers = [("Content-Type", "text/xml")]
        else:
            # REST-XML (S3).
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{xml_code}</Code>'
                       f"<Message>{message}</Message><RequestId>{request_id}</RequestId>"
                       "</Error>").encode()
            headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        reason = http.client.responses.get(status, "Error")
        self._respond(status, reason, headers, payload)

    def _reset(self) -> None:
        self.close_connection = True
        with self.server.reset_lock:
            self.server.to_reset.add(self.connection)
