from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.proxy import FaultProxy

TIMEOUT = 30.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with what it received; /chunked answers chunked, HEAD gives a length only."""

    protocol_version = "HTTP/1.1"
    upstream: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.upstream.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        if self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Length", "1234")
            self.send_header("ETag", '"abc"')
            self.end_headers()
            return
        payload = json.dumps({"method": self.command, "path": self.path,
                              "body": body.decode("latin-1")}).encode()
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(payload), 7):
                piece = payload[start:start + 7]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        status = 201 if self.path.startswith("/created") else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    up = Upstream(server)
    EchoHandler.upstream = up
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield up
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url, seed=1) as started:
        yield started


def connect(proxy: FaultProxy, timeout: float = TIMEOUT) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)


def call(proxy: FaultProxy, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = connect(proxy)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# -- forwarding ----------------------------------------------------------------------------------

def test_a_request_is_forwarded_with_path_query_headers_and_body(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    body = bytes(range(256)) * 3
    status, headers, payload = call(proxy, "PUT", "/created/bucket/key%20x?versionId=3&a=b",
                                    body=body, headers={"X-Amz-Meta-Book-Id": "b-1"})

    assert status == 201
    assert headers["X-Upstream"] == "yes"
    assert json.loads(payload)["method"] == "PUT"
    [seen] = upstream.seen
    assert (seen.method, seen.path) == ("PUT", "/created/bucket/key%20x?versionId=3&a=b")
    assert seen.body == body
    assert seen.headers["X-Amz-Meta-Book-Id"] == "b-1"
    # The Host the client used (and signed) reaches the upstream unchanged.
    assert seen.headers["Host"] == f"127.0.0.1:{proxy.port}"
    assert proxy.counters()["forwarded"] == 1


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH", "OPTIONS"])
def test_every_method_is_forwarded(proxy: FaultProxy, upstream: Upstream, method: str) -> None:
    status, _, payload = call(proxy, method, "/x", body=b"data" if method == "POST" else None)

    assert status == 200
    assert json.loads(payload)["method"] == method
    assert [s.method for s in upstream.seen] == [method]


def test_a_chunked_upstream_response_is_returned_whole(proxy: FaultProxy) -> None:
    status, headers, payload = call(proxy, "GET", "/chunked?n=1")

    assert status == 200
    assert json.loads(payload) == {"method": "GET", "path": "/chunked?n=1", "body": ""}
    assert headers["Content-Length"] == str(len(payload))
    assert "Transfer-Encoding" not in headers


def test_a_chunked_request_body_is_forwarded_whole(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    conn = connect(proxy)
    try:
        conn.request("POST", "/up", body=iter([b"hello ", b"chunked ", b"world"]),
                     encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()

    assert response.status == 200
    assert upstream.seen[0].body == b"hello chunked world"
    assert upstream.seen[0].headers["Content-Length"] == str(len(b"hello chunked world"))


def test_head_keeps_the_upstream_content_length_without_a_body(proxy: FaultProxy) -> None:
    conn = connect(proxy)
    try:
        conn.request("HEAD", "/bucket/key")
        response = conn.getresponse()
        assert response.read() == b""
        assert response.getheader("Content-Length") == "1234"
        assert response.getheader("ETag") == '"abc"'
        # The connection is still in sync: a second request on it works.
        conn.request("GET", "/after-head")
        assert json.loads(conn.getresponse().read())["path"] == "/after-head"
    finally:
        conn.close()


def test_a_client_connection_is_kept_alive_across_requests(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    conn = connect(proxy)
    try:
        conn.request("GET", "/1")
        conn.getresponse().read()
        sock = conn.sock
        for path in ("/2", "/3", "/4"):
            conn.request("POST", path, body=b"x")
            assert conn.getresponse().read()
        assert sock is not None
        assert conn.sock is sock
    finally:
        conn.close()
    assert [s.path for s in upstream.seen] == ["/1", "/2", "/3", "/4"]


def test_concurrent_clients_are_all_served_and_counted(proxy: FaultProxy) -> None:
    failures: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(5):
                status, _, payload = call(proxy, "POST", f"/c{n}/{i}", body=f"{n}-{i}".encode())
                assert status == 200
                assert json.loads(payload)["body"] == f"{n}-{i}"
        except BaseException as exc:  # reported below, from the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)

    assert failures == []
    assert proxy.counters()["requests"] == 40
    assert proxy.counters()["forwarded"] == 40


def test_an_unreachable_upstream_is_a_502(upstream: Upstream) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{closed_port}") as proxy:
        status, _, payload = call(proxy, "GET", "/x")

        assert status == 502
        assert b"upstream failed" in payload
        assert proxy.counters()["upstream_failures"] == 1


# -- delay ---------------------------------------------------------------------------------------

def test_delay_applies_only_to_the_chosen_methods(proxy: FaultProxy) -> None:
    proxy.configure(delay_seconds=0.3, delay_methods={"put"})

    call(proxy, "GET", "/read")
    assert proxy.counters()["delayed"] == 0

    started = time.monotonic()
    status, _, _ = call(proxy, "PUT", "/write", body=b"x")
    elapsed = time.monotonic() - started

    assert status == 200
    assert elapsed >= 0.3  # a lower bound: the proxy waits at least this long
    assert proxy.counters()["delayed"] == 1


def test_delay_with_jitter_applies_to_every_method_by_default(proxy: FaultProxy) -> None:
    proxy.configure(delay_seconds=0.1, jitter_seconds=0.1)

    started = time.monotonic()
    call(proxy, "GET", "/a")
    call(proxy, "DELETE", "/b")

    assert time.monotonic() - started >= 0.2
    assert proxy.counters()["delayed"] == 2


# -- injected errors -----------------------------------------------------------------------------

def test_error_rate_one_answers_every_request_locally(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.configure(error_rate=1.0)

    results = [call(proxy, "PUT", f"/bucket/k{i}", body=b"x") for i in range(10)]

    assert {status for status, _, _ in results} <= {500, 503}
    for status, headers, payload in results:
        assert headers["Content-Type"] == "application/xml"
        assert b"<Error><Code>" in payload
        assert (b"<Code>SlowDown</Code>" in payload) == (status == 503)
    assert upstream.seen == []
    assert proxy.counters()["errors_injected"] == 10


def test_an_injected_error_for_a_json_protocol_request_is_json(proxy: FaultProxy) -> None:
    proxy.configure(error_rate=1.0, error_statuses=(503,))

    status, headers, payload = call(
        proxy, "POST", "/", body=b"{}",
        headers={"Content-Type": "application/x-amz-json-1.0",
                 "X-Amz-Target": "AmazonSQS.ReceiveMessage"},
    )

    assert status == 503
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert json.loads(payload)["__type"] == "ServiceUnavailable"


def test_a_connection_stays_usable_after_an_injected_error(proxy: FaultProxy) -> None:
    proxy.configure(error_rate=1.0)
    conn = connect(proxy)
    try:
        conn.request("POST", "/a", body=b"x")
        assert conn.getresponse().read()
        proxy.configure(error_rate=0.0)
        conn.request("GET", "/b")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["path"] == "/b"
    finally:
        conn.close()


def boto_client(service: str, proxy: FaultProxy) -> Any:
    return boto3.client(
        service, region_name="us-east-1", endpoint_url=proxy.url,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def s3_and_sqs_errors(proxy: FaultProxy) -> list[tuple[str, int]]:
    """(error code, HTTP status) botocore makes of the proxy's answers to an S3 put, then to an
    SQS call."""
    calls: list[Callable[[], object]] = [
        lambda: boto_client("s3", proxy).put_object(Bucket="scifi", Key="k.json", Body=b"{}"),
        lambda: boto_client("sqs", proxy).get_queue_url(QueueName="in.fifo"),
    ]
    errors = []
    for call_aws in calls:
        with pytest.raises(ClientError) as error:
            call_aws()
        response = error.value.response
        errors.append((response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]))
    return errors


def test_botocore_reads_injected_errors_as_aws_errors(proxy: FaultProxy) -> None:
    proxy.configure(error_rate=1.0, error_statuses=(503,))

    assert s3_and_sqs_errors(proxy) == [("SlowDown", 503), ("ServiceUnavailable", 503)]


def test_throttling_speaks_each_service_s_own_error(proxy: FaultProxy,
                                                    upstream: Upstream) -> None:
    proxy.configure(throttle_rate=1.0)

    assert s3_and_sqs_errors(proxy) == [("SlowDown", 503), ("RequestThrottled", 400)]
    assert upstream.seen == []
    counters = proxy.counters()
    assert counters["throttles_injected"] == counters["requests"] >= 2
    assert proxy.faults() == counters["requests"]


def test_an_s3_put_of_a_json_file_gets_s3_s_xml_errors(proxy: FaultProxy) -> None:
    proxy.configure(throttle_rate=1.0)

    with pytest.raises(ClientError) as error:
        boto_client("s3", proxy).put_object(Bucket="scifi", Key="k.json", Body=b"{}",
                                            ContentType="application/json")

    assert error.value.response["Error"]["Code"] == "SlowDown"


# -- resets and outages --------------------------------------------------------------------------

def test_a_late_reset_lets_the_upstream_do_the_work_but_never_answers(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.configure(late_reset_rate=1.0)
    conn = connect(proxy)
    try:
        conn.request("POST", "/done-anyway", body=b"x")
        with pytest.raises(ConnectionError):
            conn.getresponse()
    finally:
        conn.close()

    assert [s.path for s in upstream.seen] == ["/done-anyway"]
    assert proxy.counters()["late_resets_injected"] == 1
    assert proxy.counters()["forwarded"] == 1


def test_reset_rate_one_closes_the_connection_without_a_response(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.configure(reset_rate=1.0)

    with pytest.raises(ConnectionError):
        call(proxy, "PUT", "/bucket/key", body=b"x")

    assert upstream.seen == []
    assert proxy.counters()["resets_injected"] == 1
    proxy.heal()
    assert call(proxy, "GET", "/again")[0] == 200


def test_a_refusing_outage_drops_requests_until_it_ends(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.outage_for(600)

    with pytest.raises(ConnectionError):
        call(proxy, "GET", "/during")
    assert proxy.counters()["outage_dropped"] == 1

    proxy.configure(outage_until=0.0)
    assert call(proxy, "GET", "/after")[0] == 200
    assert [s.path for s in upstream.seen] == ["/after"]


def test_a_black_hole_outage_never_answers(proxy: FaultProxy, upstream: Upstream) -> None:
    proxy.outage_for(600, mode="blackhole")
    conn = connect(proxy, timeout=0.3)
    try:
        conn.request("GET", "/void")
        with pytest.raises(TimeoutError):
            conn.getresponse()
    finally:
        conn.close()

    proxy.heal()
    assert call(proxy, "GET", "/back")[0] == 200
    assert [s.path for s in upstream.seen] == ["/back"]


def test_a_trap_sees_each_request_first_and_drops_those_it_catches(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    seen: list[tuple[str, str]] = []

    def trap(method: str, path: str) -> bool:
        seen.append((method, path))
        return path.startswith("/bucket/Caught")

    proxy.configure(trap=trap, error_rate=1.0)  # a caught request is not even planned

    with pytest.raises(ConnectionError):
        call(proxy, "PUT", "/bucket/Caught.json?x=1", body=b"x")
    proxy.configure(error_rate=0.0)
    assert call(proxy, "PUT", "/bucket/Free.json", body=b"y")[0] == 200

    assert seen == [("PUT", "/bucket/Caught.json?x=1"), ("PUT", "/bucket/Free.json")]
    assert [s.path for s in upstream.seen] == ["/bucket/Free.json"]
    assert proxy.counters()["trapped"] == 1
    assert proxy.counters()["requests"] == 2
    assert proxy.faults() == 1
    proxy.heal()
    assert proxy.trap is None


def test_a_denied_request_is_answered_403_access_denied_unforwarded(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.configure(deny=lambda method, path: method == "PUT" and "Denied" in path)

    with pytest.raises(ClientError) as error:
        boto_client("s3", proxy).put_object(Bucket="scifi", Key="Denied.json", Body=b"{}")
    assert call(proxy, "PUT", "/scifi/Free.json", body=b"y")[0] == 200
    assert call(proxy, "GET", "/scifi/Denied.json")[0] == 200

    assert (error.value.response["Error"]["Code"],
            error.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("AccessDenied", 403)
    assert [s.path for s in upstream.seen] == ["/scifi/Free.json", "/scifi/Denied.json"]
    assert proxy.counters()["denied"] == 1 == proxy.faults()
    proxy.heal()
    assert proxy.deny is None


def test_botocore_sees_a_reset_as_a_connection_error(proxy: FaultProxy) -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    proxy.configure(reset_rate=1.0)

    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        boto_client("sqs", proxy).get_queue_url(QueueName="in.fifo")


# -- lifecycle and controls ----------------------------------------------------------------------

def test_stop_closes_the_port_and_wakes_held_requests(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url).start()
    port = proxy.port
    proxy.outage_for(600, mode="blackhole")
    conn = connect(proxy)
    conn.request("GET", "/held")

    proxy.stop()

    with pytest.raises(ConnectionError):  # the held request ends, unanswered
        conn.getresponse()
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    with pytest.raises(RuntimeError):
        _ = proxy.url


def test_the_journal_records_each_answered_request_while_it_is_on(proxy: FaultProxy) -> None:
    call(proxy, "GET", "/before")
    proxy.configure(journal=True, delay_seconds=0.2, delay_methods={"PUT"})
    call(proxy, "PUT", "/created/bucket/key", body=b"x", headers={"If-None-Match": "*"})
    call(proxy, "HEAD", "/bucket/key")
    proxy.configure(error_rate=1.0)
    call(proxy, "GET", "/answered-by-the-proxy")

    put, head = proxy.exchanges()
    assert (put.method, put.path, put.status) == ("PUT", "/created/bucket/key", 201)
    assert put.headers["if-none-match"] == "*"
    # Arrival is when the client sent it, before the delay: the span covers the whole wait.
    assert put.answered - put.arrived >= 0.2
    assert (head.method, head.path, head.status) == ("HEAD", "/bucket/key", 200)
    assert put.answered <= head.arrived


def test_unknown_controls_are_rejected(proxy: FaultProxy) -> None:
    with pytest.raises(TypeError, match="error_rte"):
        proxy.configure(error_rte=1.0)


def test_counters_can_be_reset(proxy: FaultProxy) -> None:
    call(proxy, "GET", "/x")
    assert proxy.counters()["requests"] == 1

    proxy.reset_counters()

    assert set(proxy.counters().values()) == {0}


def test_only_http_upstreams_are_accepted() -> None:
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("https://example.com")
