from __future__ import annotations

import logging
import signal
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from workers.settings import AWS_CLIENTS

_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_S3",
                       "AWS_PROFILE")


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process AWS, with fake credentials so nothing can ever reach a real account
    and no emulator endpoint from the environment in the way."""
    for name in _ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGALRM)


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """Lets a test install a consumer's signal handlers in this process, and undoes them."""
    saved = {s: signal.getsignal(s) for s in _HANDLED}
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.set_wakeup_fd(-1)
    for signum, handler in saved.items():
        signal.signal(signum, handler)
@pytest.fixture
def aws_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point the AWS clients this process creates next at an HTTP endpoint, with fake
    credentials, as an operator would with AWS_ENDPOINT_URL."""
    def point(url: str) -> None:
        for name in (*_ENDPOINT_VARIABLES, "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
    return point


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's AWS (S3, SQS) served over HTTP on 127.0.0.1: a real endpoint for clients that
    in-process moto cannot intercept (the CRT sends from C)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def empty_moto_server(moto_server: str) -> str:
    """The session's moto server, emptied."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"),
                           timeout=10).close()
    return moto_server


@pytest.fixture(params=AWS_CLIENTS)
def s3_client(request: pytest.FixtureRequest) -> str:
    """Each S3_CLIENT in turn: both must pass the same tests."""
    return str(request.param)


@pytest.fixture(params=AWS_CLIENTS)
def sqs_client(request: pytest.FixtureRequest) -> str:
    """Each SQS_CLIENT in turn: both must pass the same tests."""
    return str(request.param)
