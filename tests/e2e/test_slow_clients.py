"""Slow or idle clients on the HTTP port cannot keep the probes, the scrape or `/` from their
answers. The timed figures (500 connections, probe latencies) are `python -m bench.slow_clients`'s.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Stack
from tests.support.shelver import REPO

HALF_A_REQUEST = b"GET /health HTTP/1.1\r\nHost: shelver\r\n"  # never the blank line
# Generous: an answer comes in milliseconds; on the unfixed gthread workers none ever came.
ANSWER_TIMEOUT_SECONDS = 60.0


@contextlib.contextmanager
def slow_clients(port: int, idle: int, partial: int) -> Iterator[list[socket.socket]]:
    """`idle` connections that send nothing and `partial` ones that send half a request, held
    open until the block ends."""
    held: list[socket.socket] = []
    try:
        for n in range(idle + partial):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            held.append(sock)
            if n >= idle:
                sock.sendall(HALF_A_REQUEST)
        yield held
    finally:
        for sock in held:
            sock.close()


def answer(port: int, method: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_TIMEOUT_SECONDS)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_slow_clients_do_not_keep_the_probes_waiting(stack: Stack,
                                                    shelver_factory: ShelverFactory) -> None:
    shelver = shelver_factory(stack)
    shelver.wait_healthy()

    with slow_clients(shelver.port, idle=50, partial=50):
        answers = {(method, path): answer(shelver.port, method, path)[0]
                   for method, path in (("GET", "/health"), ("GET", "/health/live"),
                                        ("GET", "/metrics"), ("POST", "/"))}
        # The image's HEALTHCHECK (Dockerfile), as the engine runs it.
        healthcheck = subprocess.run(
            [sys.executable, "-m", "service.probe", "/health/live"], cwd=REPO,
            env={**os.environ, "BIND": f"127.0.0.1:{shelver.port}"}, capture_output=True,
            text=True, timeout=ANSWER_TIMEOUT_SECONDS)

    assert answers == {("GET", "/health"): 200, ("GET", "/health/live"): 200,
                       ("GET", "/metrics"): 200, ("POST", "/"): 202}
    assert (healthcheck.returncode, healthcheck.stdout.split()[:1]) == (0, ["200"])
