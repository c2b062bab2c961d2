"""`S3Objects` on AWS's Common Runtime (see `workers.aws.crt`): PutObject and HeadObject through the
CRT's S3 client, for a third of boto3's CPU per call or less.

- where: botocore resolves each bucket's URL once (`_Endpoints`), so the endpoint settings
  (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, profile, region) and the addressing style are
  boto3's: path-style on a custom endpoint, plain HTTP or TLS as its URL says; virtual-hosted
  style and TLS on AWS's own endpoints;
- which region: the bucket's own, asked of S3 once per bucket (HeadBucket's
  `x-amz-bucket-region`, `workers.aws.s3.look_up_bucket`), for the URL and the signature.
  boto3 follows S3's redirect to a bucket's region by itself; the CRT does not, and a write
  signed for the client's region into a bucket elsewhere is refused every time
  (PermanentRedirect, AuthorizationHeaderMalformed);
- how hard: three attempts, the same connect timeout, a connection per processing thread, and a
  deadline per call, so a put that hangs ends as a `ReadTimeoutError` instead of stalling its
  message group. The CRT retries by itself, with one backoff scale for every error: boto3's for
  throttling (a random 0-1 s, doubling, 20 s cap), as 503 SlowDown is S3's most common transient
  answer (boto3 waits at most 50 ms, doubling, before retrying other errors);
- failures: as botocore reports them (`_Errors`), see `workers.aws.s3`. An untrusted
  certificate shows late: s2n, the CRT's TLS, delays its report of a refused handshake by
  10-30 s (blinding, against timing attacks), so it may end at the deadline instead.
"""

from __future__ import annotations

import functools
import io
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt.auth import AwsSigningConfig
from awscrt.exceptions import AwsCrtError
from awscrt.http import HttpHeaders, HttpRequest
from awscrt.s3 import (
    S3Client,
    S3RequestTlsMode,
    S3RequestType,
    S3ResponseError,
    S3RetryConfig,
    create_default_s3_signing_config,
)
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from workers.aws.crt import (
    CrtRuntime,
    ErrorAnswers,
    SessionCredentials,
    UnsupportedByCrt,
    check_no_proxy,
    network_error,
    raise_failure,
)
from workers.aws.s3 import NO_HEADERS, ObjectHead, look_up_bucket, object_head

# boto3's standard-mode backoff for throttling: the first retry waits a random 0-1 s, each next
# one up to twice as long, never more than 20 s.
BACKOFF_SCALE_MS = 1000
MAX_BACKOFF_SECONDS = 20
# A bucket whose region S3 did not name is asked about again after this long.
UNNAMED_REGION_SECONDS = 60.0
# After this long the cancel of a timed-out request is not waited for any more.
_CANCEL_WAIT_SECONDS = 5.0
# A key botocore is asked to place; its URL minus this key is where any key of the bucket goes.
_PROBE_KEY = "k"
_META_PREFIX = "x-amz-meta-"

# Answers the CRT retries itself: after the last attempt it reports the class of the answer, not
# the answer. These are S3's codes for them (and what the boto3 path reports for the same faults).
_RETRIED_ANSWERS = {
    "AWS_ERROR_S3_INTERNAL_ERROR": ("InternalError", 500),
    "AWS_ERROR_S3_SLOW_DOWN": ("SlowDown", 503),
    "AWS_ERROR_S3_REQUEST_TIMEOUT": ("RequestTimeout", 400),
    "AWS_ERROR_S3_REQUEST_TIME_TOO_SKEWED": ("RequestTimeTooSkewed", 403),
}


@dataclass(frozen=True)
class _Location:
    """Where the keys of one bucket go, and the region they are signed for, as botocore
    resolved them."""

    scheme: str
    host: str  # the Host header: host[:port]
    prefix: str  # the path before the key: "/<bucket>/" (path style) or "/" (virtual-hosted)
    region: str

    def path(self, key: str) -> str:
        # botocore's encoding of the {Key+} label: UTF-8, percent-encoded, '/' and '~' kept.
        return self.prefix + quote(key, safe="/~")

    def url(self, key: str) -> str:
        return f"{self.scheme}://{self.host}{self.path(key)}"


class _Endpoints:
    """Asks botocore where it would send a request for a bucket, once per bucket.

    Given `regions` (a boto3 S3 client for HeadBucket), for the bucket's own region as S3 names
    it (`look_up_bucket`): the URL and the signature of a bucket elsewhere are those of a boto3
    client of its region (made from `session`, with the configuration of `s3`). A lookup that
    gets no answer raises boto3's exception, as the write would have. An answer that names no
    region (no such bucket yet, a 5xx) leaves the bucket in `s3`'s region for
    `UNNAMED_REGION_SECONDS`, where its writes fail as they would have, before S3 is asked
    again: a lookup per write would double the requests of an S3 that is failing already.
    Without `regions`, every bucket is taken to be in `s3`'s region.

    The HeadObject is answered by a `before-call` handler (as botocore's Stubber does): it never
    leaves the process and needs no credentials, yet its URL went through every endpoint rule
    and setting of botocore.
    """

    def __init__(self, s3: Any, session: Any = None, regions: Any = None) -> None:
        self._s3 = s3
        self._session = session
        self._regions = regions
        self._clients: dict[str, Any] = {s3.meta.region_name: s3}
        # bucket -> where it goes, until when (monotonic; inf once S3 named its region)
        self._known: dict[str, tuple[_Location, float]] = {}
        self._lock = threading.Lock()

    def locate(self, bucket: str) -> _Location:
        known = self._known.get(bucket)
        if known is None or known[1] < time.monotonic():
            with self._lock:
                known = self._known.get(bucket)
                if known is None or known[1] < time.monotonic():
                    known = self._find(bucket)
                    self._known[bucket] = known
        return known[0]

    def _find(self, bucket: str) -> tuple[_Location, float]:
        own = self._s3.meta.region_name
        if self._regions is None:
            return self._resolve(bucket, own), math.inf
        region = look_up_bucket(self._regions, bucket).region
        if region is None:
            return self._resolve(bucket, own), time.monotonic() + UNNAMED_REGION_SECONDS
        return self._resolve(bucket, region), math.inf

    def _client(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            client = self._session.client("s3", region_name=region, config=self._s3.meta.config)
            self._clients[region] = client
        return client

    def _resolve(self, bucket: str, region: str) -> _Location:
        client = self._client(region)
        seen: dict[str, Any] = {}

        def capture(params: dict[str, Any], context: dict[str, Any], **_: Any
                    ) -> tuple[AWSResponse, dict[str, Any]]:
            seen.update(url=params["url"], signing=context.get("signing") or {},
                        auth=context.get("auth_type"))
            return AWSResponse(params["url"], 200, {}, None), {}

        event, unique_id = "before-call.s3.HeadObject", "shelver-locate-bucket"
        client.meta.events.register_first(event, capture, unique_id=unique_id)
        try:
            client.head_object(Bucket=bucket, Key=_PROBE_KEY)
        finally:
            client.meta.events.unregister(event, unique_id=unique_id)
        signing = seen["signing"]
        # "s3v4": SigV4 for S3, as a client made with another's configuration names it.
        if seen["auth"] not in (None, "v4", "s3v4") or \
                signing.get("signing_name", "s3") != "s3" or \
                signing.get("region", region) != region:
            raise UnsupportedByCrt(
                f"bucket {bucket!r} is reached with {seen['auth']} signing for "
                f"{signing.get('signing_name')} in {signing.get('region')}, which the CRT "
                f"client does not do")
        url = urlsplit(seen["url"])
        if not url.path.endswith("/" + _PROBE_KEY) or url.query:
            raise UnsupportedByCrt(f"bucket {bucket!r} is reached at {seen['url']}, where "
                                   "the CRT client cannot place keys")
        return _Location(url.scheme, url.netloc, url.path[:-len(_PROBE_KEY)], region)


def check_supported(s3: Any, buckets: Mapping[str, str]) -> None:
    """Raise `UnsupportedByCrt` if boto3 would reach any of `buckets` in a way the CRT client
    cannot: through an HTTP(S) proxy (the CRT's S3 client takes no proxy), or with anything but
    SigV4 for S3 in the client's region (S3 Express directory buckets...)."""
    endpoints = _Endpoints(s3)
    for bucket in buckets.values():
        check_no_proxy(endpoints.locate(bucket).url(_PROBE_KEY))


@dataclass
class _Answer:
    """What the CRT reported of an S3 answer (from its event-loop thread)."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status, self.headers = status_code, headers

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class _Errors:
    """CRT failures turned into the exceptions the boto3 client raises for the same failure."""

    def __init__(self, s3: Any) -> None:
        self._answers = ErrorAnswers(s3)

    def translate(self, error: AwsCrtError, operation: str, url: str) -> Exception:
        if isinstance(error, S3ResponseError) and error.status_code:
            # The same code and message boto3 reads from the answer, including a HEAD's
            # body-less 404 (code "404").
            parsed = self._answers.parse(operation, error.status_code,
                                         dict(error.headers or []), error.body or b"")
            return self._answers.exception(parsed, operation)
        if error.name in _RETRIED_ANSWERS:
            code, status = _RETRIED_ANSWERS[error.name]
            return self._answers.exception(
                {"Error": {"Code": code, "Message": f"{error.name}: {error.message}"},
                 "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}},
                operation)
        return network_error(error, url)


class CrtObjects:
    """`S3Objects` on one CRT S3 client; thread-safe, one request per calling thread."""

    def __init__(self, client: S3Client, endpoints: _Endpoints, errors: _Errors,
                 credentials: SessionCredentials, timeout: float) -> None:
        self._client = client
        self._endpoints = endpoints
        self._errors = errors
        self._credentials = credentials
        self._signing: dict[str, AwsSigningConfig] = {}
        self._timeout = timeout

    @classmethod
    def create(cls, runtime: CrtRuntime, s3: Any, connections: int, connect_timeout: float,
               timeout: float, attempts: int, regions: Any = None) -> CrtObjects:
        """A CRT client configured as `s3`, a boto3 client of `runtime.session`, is; given
        `regions`, a boto3 client to ask S3 with, signing for each bucket's own region (see
        `_Endpoints`)."""
        if attempts < 2:
            raise ValueError("the CRT takes max_retries=0 for its default of 5: at least two "
                             "attempts")
        https = urlsplit(s3.meta.endpoint_url).scheme == "https"
        region = s3.meta.region_name
        client = S3Client(
            bootstrap=runtime.bootstrap, region=region,
            tls_mode=S3RequestTlsMode.ENABLED if https else S3RequestTlsMode.DISABLED,
            tls_connection_options=runtime.tls_options() if https else None,
            signing_config=create_default_s3_signing_config(
                region=region, credential_provider=runtime.credentials.provider),
            max_active_connections_override=connections,
            retry_config=S3RetryConfig(max_retries=attempts - 1,
                                       backoff_scale_factor_ms=BACKOFF_SCALE_MS,
                                       max_backoff_secs=MAX_BACKOFF_SECONDS),
            connect_timeout_ms=int(connect_timeout * 1000),
        )
        return cls(client, _Endpoints(s3, runtime.session, regions), _Errors(s3),
                   runtime.credentials, timeout)

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str,
            metadata: Mapping[str, str], if_none_match: bool = False,
            if_match: str | None = None, headers: Mapping[str, str] = NO_HEADERS
            ) -> str | None:
        location = self._endpoints.locate(bucket)
        sent = HttpHeaders([("Host", location.host), ("Content-Length", str(len(body))),
                            ("Content-Type", content_type), *headers.items()])
        for name, value in metadata.items():
            sent.add(_META_PREFIX + name, value)
        if if_none_match:
            sent.add("If-None-Match", "*")
        if if_match is not None:
            sent.add("If-Match", if_match)
        request = HttpRequest("PUT", location.path(key), sent, io.BytesIO(body))
        return self._send("PutObject", location, key, request).header("etag")

    def head(self, bucket: str, key: str, *, headers: Mapping[str, str] = NO_HEADERS
             ) -> ObjectHead:
        location = self._endpoints.locate(bucket)
        request = HttpRequest("HEAD", location.path(key),
                              HttpHeaders([("Host", location.host), *headers.items()]))
        answer = self._send("HeadObject", location, key, request)
        metadata = {name.lower()[len(_META_PREFIX):]: value for name, value in answer.headers
                    if name.lower().startswith(_META_PREFIX)}
        return object_head(answer.header("etag"), metadata, bucket, key)

    def _signing_for(self, region: str) -> AwsSigningConfig:
        signing = self._signing.get(region)
        if signing is None:  # made twice by two threads at worst: the same configuration
            signing = create_default_s3_signing_config(
                region=region, credential_provider=self._credentials.provider)
            self._signing[region] = signing
        return signing

    def _send(self, operation: str, location: _Location, key: str, request: HttpRequest
              ) -> _Answer:
        """Send and wait; the URL (for error reports only) is made only when one is raised."""
        self._credentials.refresh()
        answer = _Answer()
        # DEFAULT, not PUT_OBJECT, for puts too: one request whatever the size (PUT_OBJECT would
        # switch to a multipart upload, which If-None-Match does not cover) and no part buffer.
        sent = self._client.make_request(type=S3RequestType.DEFAULT, operation_name=operation,
                                         request=request, on_headers=answer.on_headers,
                                         signing_config=self._signing_for(location.region))
        # The future's exception is taken, never raised here: raised, its traceback would hold
        # this frame, whose `sent` holds the future: a cycle through the CRT, out of the garbage
        # collector's reach (measured: about 10 KB leaked per failed request).
        try:
            error = sent.finished_future.exception(self._timeout)
        except TimeoutError:
            sent.cancel()
            wait([sent.finished_future], _CANCEL_WAIT_SECONDS)
            raise ReadTimeoutError(endpoint_url=location.url(key), error="no answer in time"
                                   ) from None
        if error is None:
            return answer
        raise_failure(error, functools.partial(self._errors.translate, operation=operation,
                                               url=location.url(key)))
