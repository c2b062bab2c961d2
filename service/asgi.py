"""Shelver's Flask app behind gunicorn's asyncio worker (`worker_class = "asgi"`): the bridge.

Why not gthread, which serves Flask directly: a gthread worker reads each request on one of its
few threads, with no deadline, so a handful of clients that connect and send half a request (or
nothing) hold every thread, and the kubelet's probes wait behind them until they time out
(docs/reliability.md, "Slow clients"). gunicorn's asyncio worker reads every connection on one
event loop, where an idle or half-sent connection costs a little memory and no thread. This
bridge hands Flask a request only once all of it has arrived, on a thread pool of its own, so a
slow client never holds a thread either.

Flask stays a WSGI app (PEP 3333); the bridge speaks ASGI 3 to gunicorn. Each request's body is
read whole before Flask sees it (no route of Shelver's reads one; bodies are bounded), and each
response is collected whole before it is sent (JSON and Prometheus text, a few KiB).
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.types import WSGIApplication

import orjson
from werkzeug.exceptions import RequestEntityTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]

# No route reads a body; `POST /` from a load balancer's check carries none. Anything larger is
# refused before it is buffered.
MAX_BODY_BYTES = 64 * 1024


class Bridge:
    """An ASGI application running the WSGI app `app` on `threads` threads."""

    def __init__(self, app: WSGIApplication, threads: int) -> None:
        self.app = app
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Made on first use, in the worker (gunicorn forks after importing this module only
        # with preload_app, which Shelver does not use; threads do not survive a fork anyway).
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="flask")
        return self._executor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:  # websocket: Shelver has none
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._executor is not None:
                    # The worker waited for its connections (graceful_timeout) before this.
                    self._executor.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            error = RequestEntityTooLarge()
            status, headers, chunks = (
                f"{error.code} {error.name}", [("Content-Type", "application/json")],
                [orjson.dumps({"error": error.name, "status": error.code})])
        else:
            loop = asyncio.get_running_loop()
            status, headers, chunks = await loop.run_in_executor(
                self.executor, call_wsgi, self.app, wsgi_environ(scope, body))
        await send({"type": "http.response.start", "status": int(status.split(" ", 1)[0]),
                    "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                for name, value in headers]})
        await send({"type": "http.response.body", "body": b"".join(chunks)})


async def read_body(receive: Receive) -> bytes | None:
    """The request's whole body, or None once it exceeds MAX_BODY_BYTES."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts)  # nobody to answer; the app's answer is dropped
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """PEP 3333's environ for an ASGI HTTP scope (strings carry bytes as latin-1)."""
    root = scope.get("root_path", "")
    path = scope["path"]
    if root and path.startswith(root):
        path = path[len(root):]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    variables: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client:
        variables["REMOTE_ADDR"], variables["REMOTE_PORT"] = str(client[0]), str(client[1])
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        # A header sent twice is one comma-separated value (RFC 9110, 5.3).
        variables[key] = f"{variables[key]},{value}" if key in variables else value
    return variables


def call_wsgi(app: WSGIApplication, environ: dict[str, Any]) -> tuple[str, Headers, list[bytes]]:
    """Run the WSGI app to the end: (status line, headers, body chunks)."""
    answer: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: Headers,
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and answer:
            raise exc_info[1].with_traceback(exc_info[2])
        answer["status"], answer["headers"] = status, headers
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return answer["status"], answer["headers"], chunks


def create_asgi_app(threads: int) -> Bridge:
    """gunicorn.conf.py's `wsgi_app`: Shelver's Flask app, on `threads` (WEB_THREADS) threads."""
    from service.app import create_app

    return Bridge(create_app(), threads)
