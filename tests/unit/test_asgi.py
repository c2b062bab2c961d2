"""service/asgi.py: Flask (WSGI) behind gunicorn's asyncio worker answers as it did under gthread.
The bridge under a real gunicorn: tests/e2e (every HTTP test), tests/e2e/test_slow_clients.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import create_app
from service.asgi import MAX_BODY_BYTES, Bridge, Message, Scope, create_asgi_app
from service.http_worker import Worker
from workers.settings import Settings

Answer = tuple[int, dict[str, str], bytes]


def scope(method: str = "GET", path: str = "/", query: bytes = b"",
          headers: Iterable[tuple[bytes, bytes]] = (), root_path: str = "") -> Scope:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query, "root_path": root_path, "headers": list(headers),
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 54321)}


def call(bridge: Bridge, request: Scope, body: Iterable[bytes] = (b"",)) -> Answer:
    """One request through the bridge, its body in the given parts: (status, headers, body)."""
    parts = list(body)
    incoming: list[Message] = [{"type": "http.request", "body": part,
                                "more_body": n < len(parts) - 1}
                               for n, part in enumerate(parts)]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(bridge(request, receive, send))
    start, content = sent
    assert start["type"] == "http.response.start" and content["type"] == "http.response.body"
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, content["body"]


@pytest.fixture
def bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bridge]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = Settings(consumers=2, state_dir=str(tmp_path))
    bridge = Bridge(create_app({"SHELVER_SETTINGS": settings}), 2)
    yield bridge
    bridge.executor.shutdown()


def test_the_routes_answer_through_the_bridge(bridge: Bridge) -> None:
    status, headers, body = call(bridge, scope(path="/health/live"))
    assert status == 503  # no consumers in this state dir
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {"status": "down", "alive": 0, "expected": 2}

    status, headers, body = call(bridge, scope(path="/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"shelver_build_info" in body

    assert call(bridge, scope("POST", "/"))[:1] == (202,)
    assert call(bridge, scope("HEAD", "/health/live"))[0::2] == (503, b"")


def test_errors_are_the_app_s_json_with_allow(bridge: Bridge) -> None:
    status, _, body = call(bridge, scope(path="/nowhere"))
    assert (status, orjson.loads(body)) == (404, {"error": "Not Found", "status": 404})

    status, headers, _ = call(bridge, scope("DELETE", "/health"))
    assert status == 405
    assert set(headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def _echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A WSGI app answering with what it was given."""
    start_response("200 OK", [("Content-Type", "application/json")])
    given = {k: v for k, v in environ.items() if isinstance(v, str)}
    given["body"] = environ["wsgi.input"].read().decode()
    return [orjson.dumps(given)]


def test_the_environ_is_pep_3333_s() -> None:
    request = scope("POST", "/shelver/health", b"a=1&b=%C3%A9",
                    [(b"content-type", b"text/plain"), (b"content-length", b"5"),
                     (b"x-seen", b"one"), (b"x-seen", b"two")], root_path="/shelver")

    status, _, body = call(Bridge(_echo, 1), request, [b"he", b"llo"])

    environ = orjson.loads(body)
    assert status == 200
    assert {k: environ[k] for k in (
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
        "CONTENT_LENGTH", "HTTP_X_SEEN", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
        "REMOTE_ADDR", "wsgi.url_scheme", "body")} == {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/shelver", "PATH_INFO": "/health",
        "QUERY_STRING": "a=1&b=%C3%A9", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "5",
        "HTTP_X_SEEN": "one,two", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "body": "hello"}


def test_a_body_over_the_limit_is_refused_unread_by_the_app() -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        called.append(True)
        return _echo(environ, start_response)

    chunk = b"x" * (MAX_BODY_BYTES // 2 + 1)
    status, _, body = call(Bridge(app, 1), scope("POST", "/"), [chunk, chunk])

    assert (status, orjson.loads(body)) == (413, {"error": "Request Entity Too Large",
                                                  "status": 413})
    assert called == []
    assert call(Bridge(app, 1), scope("POST", "/"), [chunk])[0] == 200


def test_the_app_s_answer_is_closed_after_it_was_read() -> None:
    closed: list[bool] = []

    class Answer(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Answer:
        start_response("204 No Content", [])
        return Answer([b""])

    assert call(Bridge(app, 1), scope())[0] == 204
    assert closed == [True]


def test_lifespan_starts_and_shuts_the_threads_down() -> None:
    bridge = Bridge(_echo, 1)
    call(bridge, scope())  # the threads exist once a request came
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(bridge({"type": "lifespan"}, receive, send))

    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    with pytest.raises(RuntimeError, match="shutdown"):
        bridge.executor.submit(print)


def test_the_factory_serves_shelver_s_app_on_the_threads_asked_for(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHELVER_STATE_DIR", str(tmp_path))
    bridge = create_asgi_app(threads=3)
    try:
        assert bridge.threads == 3
        assert call(bridge, scope(path="/health/live"))[0] == 503
    finally:
        bridge.executor.shutdown()


# -- service/http_worker.py ----------------------------------------------------------------------

class _Serving:
    """Stands for the task running the worker's serving loop."""

    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1


def _worker(servers: list[object]) -> tuple[Worker, _Serving]:
    worker = Worker.__new__(Worker)  # its state only: no sockets, no loop
    serving = _Serving()
    worker.alive, worker.servers = True, servers
    worker._serving = serving  # type: ignore[assignment]
    return worker, serving


def test_a_stop_ends_the_serving_loop_s_wait_once() -> None:
    worker, serving = _worker(servers=["listener"])

    worker.handle_exit_signal()
    worker.handle_exit_signal()  # a second SIGTERM: the graceful shutdown is not cut short

    assert worker.alive is False
    assert serving.cancels == 1


def test_a_stop_during_start_up_is_left_to_the_loop() -> None:
    worker, serving = _worker(servers=[])  # listeners not up yet

    worker.handle_exit_signal()

    assert worker.alive is False
    assert serving.cancels == 0
