"""A scripted HTTP server for client tests (stdlib only): it records every request as it came
over the wire and answers each with the next scripted answer.

    with HttpStub() as stub:
        stub.script(Answer(412, body=s3_error("PreconditionFailed")), Answer(200, etag='"e1"'))
        ...  # a client pointed at stub.url
        stub.requests[0].headers["if-none-match"]

When the script runs out, every request gets `default` (200 with an ETag). A `responder` answers
from the request itself (a server with rules, say S3's regions), before any script; None from it
leaves the request to the script. With an `ssl.SSLContext` it serves TLS, for clients that must
trust it through their CA bundle.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    etag: str | None = None

    def all_headers(self) -> list[tuple[str, str]]:
        extra = [("ETag", self.etag)] if self.etag is not None else []
        return [*self.headers, *extra, ("Content-Length", str(len(self.body)))]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower case
    body: bytes


def s3_error(code: str, message: str = "scripted") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>stub</RequestId></Error>").encode()


@dataclass
class HttpStub:
    tls: ssl.SSLContext | None = None
    default: Answer = Answer(200, etag='"stub-etag"')
    requests: list[Recorded] = field(default_factory=list)
    responder: Callable[[Recorded], Answer | None] | None = None

    def __post_init__(self) -> None:
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HttpStub:
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        if self.tls is not None:
            # The handshake in the handler thread: in accept() a stalled one would block them all.
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True,
                                                       do_handshake_on_connect=False)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="http-stub", daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, recorded: Recorded) -> Answer:
        with self._lock:
            self.requests.append(recorded)
            answer = self.responder(recorded) if self.responder is not None else None
            if answer is not None:
                return answer
            return self._answers.popleft() if self._answers else self.default


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 stub: HttpStub) -> None:
        self.stub = stub
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no getfqdn(): loopback only

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a TLS handshake it refused, say) is no test failure


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.stub._answer(Recorded(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response_only(answer.status)
        for name, value in answer.all_headers():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)
