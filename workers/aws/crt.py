"""What Shelver's clients on AWS's Common Runtime (awscrt) share within one consumer process.

boto3 spends one to two milliseconds of CPU on every call, nearly all of it in botocore's Python
(serialising, signing, urllib3, parsing); the CRT signs and sends the same request in C for a
fraction of that. The calls a consumer makes per message (PutObject, HeadObject:
`workers.aws.s3crt`; ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch:
`workers.aws.sqscrt`) go through it; everything else stays on boto3, and so does all
configuration: the CRT is told what boto3 would do, never left to work it out itself.

- `CrtRuntime`: one event-loop thread and the boto3 session's credentials for every CRT client
  of the process. The CRT runs C threads of its own: create it in the process that uses it,
  never before a fork (the consumers create theirs after they start);
- `SessionCredentials`: the boto3 session's credential chain, refreshed as boto3 refreshes it;
- `ErrorAnswers`: an error answer, as boto3 parses and raises it;
- `network_error`: a CRT failure without an answer, as the exception botocore raises for it;
- `check_no_proxy`: the CRT clients do not go through HTTP(S)_PROXY.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from awscrt.auth import AwsCredentials, AwsCredentialsProvider
from awscrt.exceptions import AwsCrtError
from awscrt.io import (
    ClientBootstrap,
    ClientTlsContext,
    DefaultHostResolver,
    EventLoopGroup,
    TlsConnectionOptions,
    TlsContextOptions,
)
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path
from botocore.parsers import create_parser
from botocore.utils import get_environ_proxies

# CRT failures that carry no answer -> what botocore raises for the same failure of urllib3.
_NETWORK_FAILURES: dict[str, Callable[..., Exception]] = {
    **dict.fromkeys(("AWS_IO_SOCKET_CONNECTION_REFUSED", "AWS_IO_SOCKET_NO_ROUTE_TO_HOST",
                     "AWS_IO_SOCKET_NETWORK_DOWN", "AWS_IO_SOCKET_CONNECT_ABORTED",
                     "AWS_IO_DNS_QUERY_FAILED", "AWS_IO_DNS_INVALID_NAME",
                     "AWS_IO_DNS_NO_ADDRESS_FOR_HOST"), EndpointConnectionError),
    "AWS_IO_SOCKET_TIMEOUT": ConnectTimeoutError,  # connecting took too long
    **dict.fromkeys(("AWS_ERROR_HTTP_CHANNEL_THROUGHPUT_FAILURE",
                     "AWS_ERROR_HTTP_RESPONSE_FIRST_BYTE_TIMEOUT"), ReadTimeoutError),
    **dict.fromkeys(("AWS_IO_SOCKET_CLOSED", "AWS_ERROR_HTTP_CONNECTION_CLOSED",
                     "AWS_ERROR_HTTP_SERVER_CLOSED", "AWS_IO_BROKEN_PIPE",
                     "AWS_IO_SOCKET_NOT_CONNECTED"), ConnectionClosedError),
}


class UnsupportedByCrt(ValueError):
    """boto3 would reach AWS in a way the CRT clients do not (through a proxy, a special
    endpoint): the operator must choose boto3 for that service."""


class ErrorAnswers:
    """Error answers read as boto3 reads them: botocore's parser for the service's protocol,
    then the exception class boto3 raises for the code: a modeled one (NoSuchBucket,
    QueueDoesNotExist...) or ClientError."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._parser = create_parser(client.meta.service_model.protocol)

    def parse(self, operation: str, status: int, headers: Mapping[str, str], body: bytes
              ) -> dict[str, Any]:
        model = self._client.meta.service_model.operation_model(operation)
        parsed: dict[str, Any] = self._parser.parse(
            {"status_code": status, "headers": {k.lower(): v for k, v in headers.items()},
             "body": body, "context": {"operation_name": operation}}, model.output_shape)
        return parsed

    def exception(self, parsed: dict[str, Any], operation: str) -> Exception:
        error = parsed.get("Error", {})
        # As botocore picks the class: the query-compatible code (SQS) first.
        error_class: type[Exception] = self._client.exceptions.from_code(
            error.get("QueryErrorCode") or error.get("Code"))
        return error_class(parsed, operation)


def network_error(error: AwsCrtError, url: str) -> Exception:
    failure = _NETWORK_FAILURES.get(error.name)
    if failure is None:
        # botocore's names for a TLS failure, and for any other failure of its HTTP client.
        failure = SSLError if error.name.startswith("AWS_IO_TLS") else HTTPClientError
    return failure(endpoint_url=url, error=error)


def raise_failure(failure: BaseException,
                  translate: Callable[[AwsCrtError], Exception]) -> NoReturn:
    """Raise what a CRT future failed with: the CRT's own errors as `translate` makes them
    (botocore's exceptions), anything else (a MemoryError, say) as it is."""
    if isinstance(failure, AwsCrtError):
        raise translate(failure) from failure
    raise failure


def check_no_proxy(url: str) -> None:
    """The CRT clients connect directly: refuse an endpoint boto3 would reach through a proxy."""
    if get_environ_proxies(url):
        raise UnsupportedByCrt(f"boto3 would reach {url} through a proxy "
                               "(HTTP_PROXY/HTTPS_PROXY), which the CRT clients do not use")


class SessionCredentials:
    """The boto3 session's credentials, lent to the CRT signer.

    `refresh` runs in the requesting thread before every request: when boto3's refreshable
    credentials are due (STS web identity, container or instance role, SSO...), the refresh
    happens there, with boto3's own errors, and never blocks the CRT's event loop. The CRT's
    delegate then only reads the latest set.
    """

    def __init__(self, source: Any) -> None:
        self._source = source  # botocore Credentials, RefreshableCredentials, or None
        self._frozen: Any = None
        self._current: AwsCredentials | None = None
        self.provider = AwsCredentialsProvider.new_delegate(self._for_crt)

    def refresh(self) -> None:
        if self._source is None:
            raise NoCredentialsError()
        frozen = self._source.get_frozen_credentials()
        if frozen != self._frozen:
            self._current = AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)
            self._frozen = frozen

    def _for_crt(self) -> AwsCredentials:
        if self._current is None:  # only if a request skipped refresh(): a bug
            raise NoCredentialsError()
        return self._current


@dataclass(frozen=True)
class CrtRuntime:
    session: Any  # the boto3 session the CRT clients follow
    bootstrap: ClientBootstrap
    credentials: SessionCredentials

    @classmethod
    def create(cls, session: Any) -> CrtRuntime:
        # One event-loop thread: it only moves bytes and signs; the consumer's Python threads,
        # not the CRT's, are what a consumer's CPU goes to.
        loops = EventLoopGroup(1)
        return cls(session, ClientBootstrap(loops, DefaultHostResolver(loops)),
                   SessionCredentials(session.get_credentials()))

    @functools.cached_property
    def _tls_context(self) -> ClientTlsContext:
        """TLS as boto3 does it: trusting AWS_CA_BUNDLE / the profile's ca_bundle, else
        botocore's own bundle (read from the botocore session under the boto3 one, as boto3's
        clients do). Made once, on first use: it reads and parses the bundle."""
        options = TlsContextOptions()
        ca_bundle = self.session._session.get_config_variable("ca_bundle")
        options.override_default_trust_store_from_path(None, get_cert_path(ca_bundle or True))
        return ClientTlsContext(options)

    def tls_options(self, server_name: str | None = None) -> TlsConnectionOptions:
        """Options for one client's connections; `server_name` for SNI and the certificate
        check of a direct connection."""
        connection = self._tls_context.new_connection_options()
        if server_name is not None:
            connection.set_server_name(server_name)
        return connection
