"""The SQS calls a consumer makes per batch, on AWS's Common Runtime (see `workers.aws.crt`).

ReceiveMessage, DeleteMessageBatch and ChangeMessageVisibilityBatch are two tenths of a call per
message, but each costs botocore about 1.5 ms of CPU, about as much as the whole CRT put: on the
CRT they cost a third of that. `CrtSqs` stands in for a boto3 SQS client: those three methods go
through the CRT, any other method is the boto3 client's own (queue lookup, DLQ sends, depth
samples: rare). What boto3 would do is kept:

- the request: SQS's JSON protocol (AWS JSON 1.0, `X-Amz-Target`, `x-amzn-query-mode` for the
  query-compatible error codes), to the endpoint botocore resolved, SigV4 for `sqs` in the
  client's region with the boto3 session's credentials, plain HTTP or TLS as the URL says;
- the answer: the JSON body, which for these operations is what botocore's parser returns; an
  error through botocore's own parser and exception classes. A 2xx whose body is no JSON object
  (empty, a proxy's page, cut short) raises botocore's ResponseParserError, like any answer
  botocore cannot read. boto3 itself reads such a body as an empty answer, which for
  DeleteMessageBatch would claim every delete done: here it is a failed call, which the caller
  backs off from (`workers.aws.AWS_ERRORS`);
- retries: botocore's standard mode itself (its retry conditions, backoff and retry quota), with
  the attempts of the boto3 client it stands in for; its connect timeout, and its read timeout
  as a deadline per attempt, after which the connection is dropped.

One keep-alive connection per calling thread (the main loop's receives, the processing threads'
deletes, the keeper's visibility changes), made again after any failure.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from awscrt.auth import AwsSignatureType, AwsSigningAlgorithm, AwsSigningConfig, aws_sign_request
from awscrt.exceptions import AwsCrtError
from awscrt.http import HttpClientConnection, HttpHeaders, HttpRequest
from awscrt.io import SocketOptions
from botocore.exceptions import BotoCoreError, ConnectTimeoutError, ReadTimeoutError
from botocore.parsers import ResponseParserError
from botocore.retries.quota import RetryQuota
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryEventAdapter,
    RetryQuotaChecker,
    StandardRetryConditions,
    ThrottlingErrorDetector,
)

from workers.aws.crt import CrtRuntime, ErrorAnswers, check_no_proxy, network_error, raise_failure


def check_supported(sqs: Any) -> None:
    """Raise `UnsupportedByCrt` if boto3 would reach SQS through a proxy."""
    check_no_proxy(sqs.meta.endpoint_url)


@dataclass
class _Answer:
    """An HTTP answer, filled in by the CRT's event-loop thread."""

    status_code: int = 0  # the name botocore's retry checks read of a response
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    def on_response(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status_code, self.headers = status_code, {k.lower(): v for k, v in headers}

    def on_body(self, chunk: bytes, **_: Any) -> None:
        self.chunks.append(bytes(chunk))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class _Connections:
    """One keep-alive HTTP connection per calling thread to one endpoint."""

    def __init__(self, runtime: CrtRuntime, url: str, connect_timeout: float) -> None:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        self.url = url
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if https else 80)
        self._bootstrap = runtime.bootstrap
        self._tls = runtime.tls_options(self._host) if https else None
        self._socket = SocketOptions()
        self._socket.connect_timeout_ms = int(connect_timeout * 1000)
        self._socket.keep_alive = True
        self._connect_timeout = connect_timeout
        self._local = threading.local()

    def get(self) -> HttpClientConnection:
        connection: HttpClientConnection | None = getattr(self._local, "connection", None)
        if connection is None or not connection.is_open():
            connecting = HttpClientConnection.new(
                host_name=self._host, port=self._port, bootstrap=self._bootstrap,
                socket_options=self._socket, tls_connection_options=self._tls)
            try:
                # The CRT's own connect timeout is the same: whichever ends first, the call
                # stays within the connect timeout boto3 would keep (receive_call_limit).
                failure = connecting.exception(self._connect_timeout)  # see _send
            except TimeoutError:
                connecting.add_done_callback(_close_late_connection)
                raise ConnectTimeoutError(endpoint_url=self.url) from None
            if failure is not None:
                raise_failure(failure, functools.partial(network_error, url=self.url))
            connection = connecting.result()
            self._local.connection = connection
        return connection

    def drop(self) -> None:
        """Close this thread's connection: after a failure its state is unknown."""
        connection: HttpClientConnection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()


def _close_late_connection(connecting: Future[HttpClientConnection]) -> None:
    if connecting.exception() is None:
        connecting.result().close()


class CrtSqs:
    """A boto3 SQS client whose per-batch calls go through the CRT."""

    def __init__(self, boto: Any, runtime: CrtRuntime, connect_timeout: float,
                 read_timeout: float, attempts: int) -> None:
        self._boto = boto
        self._credentials = runtime.credentials
        self._connections = _Connections(runtime, boto.meta.endpoint_url, connect_timeout)
        parts = urlsplit(boto.meta.endpoint_url)
        self._host, self._path = parts.netloc, parts.path or "/"
        self._signing = AwsSigningConfig(
            algorithm=AwsSigningAlgorithm.V4,
            signature_type=AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=runtime.credentials.provider,
            region=boto.meta.region_name, service="sqs")
        self._read_timeout = read_timeout
        self._errors = ErrorAnswers(boto)
        # botocore's standard retry mode, the objects a boto3 client builds for itself.
        throttling = ThrottlingErrorDetector(RetryEventAdapter())
        self._conditions = StandardRetryConditions(max_attempts=attempts)
        self._backoff = ExponentialBackoff(service_name="sqs", throttling_detector=throttling)
        self._quota = RetryQuotaChecker(RetryQuota(), throttling)

    def receive_message(self, **params: Any) -> dict[str, Any]:
        return self._call("ReceiveMessage", params)

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("DeleteMessageBatch", params)

    def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("ChangeMessageVisibilityBatch", params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._boto, name)  # every other call: boto3's

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps(params)
        request_context: dict[str, Any] = {}
        attempt = 0
        while True:
            attempt += 1
            answer: _Answer | None = None
            parsed: dict[str, Any] | None = None
            failure: Exception | None = None
            try:
                answer = self._send(operation, body)
            except BotoCoreError as exc:  # the network: botocore's exceptions, retried as such
                failure = exc
            if answer is not None and answer.status_code < 300:
                self._quota.release_retry_quota(request_context, answer)
                return _json_object(operation, answer)
            if answer is not None:
                parsed = self._errors.parse(operation, answer.status_code, answer.headers,
                                            answer.body)
                failure = self._errors.exception(parsed, operation)
            model = self._boto.meta.service_model.operation_model(operation)
            context = RetryContext(attempt, model, parsed_response=parsed, http_response=answer,
                                   caught_exception=failure, request_context=request_context)
            if not (self._conditions.is_retryable(context)
                    and self._quota.acquire_retry_quota(context)):
                assert failure is not None
                raise failure
            time.sleep(self._backoff.delay_amount(context))

    def _send(self, operation: str, body: bytes) -> _Answer:
        """One attempt: sign, send on this thread's connection, wait for the whole answer."""
        self._credentials.refresh()
        request = HttpRequest("POST", self._path, HttpHeaders([
            ("Host", self._host), ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amz-Target", f"AmazonSQS.{operation}"), ("x-amzn-query-mode", "true"),
            ("Content-Length", str(len(body)))]), io.BytesIO(body))
        answer = _Answer()
        url = self._connections.url
        try:
            aws_sign_request(request, self._signing).result()  # signed in C, in this thread
            stream = self._connections.get().request(request, answer.on_response,
                                                     answer.on_body)
            stream.activate()
            # Taken, not raised, as in workers.aws.s3crt (where raising it leaked the request).
            failure = stream.completion_future.exception(self._read_timeout)
        except TimeoutError:
            self._connections.drop()
            raise ReadTimeoutError(endpoint_url=url) from None
        except AwsCrtError as error:  # refused at once: the connection was closed
            self._connections.drop()
            raise network_error(error, url) from error
        except BaseException:  # a failed connect, or a stop abandoning a long poll
            self._connections.drop()
            raise
        if failure is not None:
            self._connections.drop()
            raise_failure(failure, functools.partial(network_error, url=url))
        return answer


def _json_object(operation: str, answer: _Answer) -> dict[str, Any]:
    """The body of a 2xx answer, which is a JSON object or a malformed answer."""
    try:
        result = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        result, reason = None, f"not JSON ({exc})"
    else:
        reason = f"a JSON {type(result).__name__}, not an object"
    if isinstance(result, dict):
        return result
    # What the body is, not the body itself: it may hold messages' bodies.
    raise ResponseParserError(
        f"{operation}: unreadable HTTP {answer.status_code} answer of {len(answer.body)} bytes "
        f"({answer.headers.get('content-type', 'no Content-Type')}): {reason}")
