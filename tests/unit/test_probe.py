"""The image's HEALTHCHECK probe (service/probe.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from service.probe import check, main, probe_address


@pytest.mark.parametrize(("bind", "address"), [
    ("0.0.0.0:8000", ("127.0.0.1", 8000)),
    ("127.0.0.1:9001", ("127.0.0.1", 9001)),
    (":8080", ("127.0.0.1", 8080)),
    ("[::]:8000", ("::1", 8000)),
    ("[::1]:7000", ("::1", 7000)),
    ("shelver.internal", ("shelver.internal", 8000)),
    ("0.0.0.0:8000,unix:/run/shelver.sock", ("127.0.0.1", 8000)),
])
def test_the_probe_dials_the_first_bind_address_on_loopback_for_a_wildcard(
        bind: str, address: tuple[str, int]) -> None:
    assert probe_address(bind) == address


def test_a_unix_socket_bind_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="TCP address"):
        probe_address("unix:/run/shelver.sock")


class _Answers(BaseHTTPRequestHandler):
    statuses: ClassVar[dict[str, int]] = {"/health/live": 200, "/health": 503}

    def do_GET(self) -> None:
        status = self.statuses.get(self.path, 404)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"status": "%d"}\n' % status)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_200_is_healthy_and_anything_else_is_not(server: str) -> None:
    assert check("/health/live", server) == (True, '200 {"status": "200"}')
    assert check("/health", server) == (False, '503 {"status": "503"}')


def test_nothing_listening_is_unhealthy_and_says_where_it_dialled() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    healthy, line = check("/health/live", f"127.0.0.1:{port}")
    assert not healthy
    assert f"http://127.0.0.1:{port}/health/live" in line


def test_main_exits_0_only_when_healthy(server: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BIND", server)
    assert main([]) == 0
    assert main(["/health"]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("503")


def test_the_probe_does_not_import_the_app() -> None:
    # It runs every few seconds in the container: Flask and boto3 stay out of it.
    code = "import sys, service.probe; print(sorted({'flask', 'boto3'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
