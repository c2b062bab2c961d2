"""Checking a request's SigV4 signature with botocore's own signer, as the request arrived."""

from __future__ import annotations

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.http_stub import Recorded


def signed_by(recorded: Recorded) -> dict[str, str]:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., ...` header."""
    algorithm, _, parts = recorded.headers["authorization"].partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    return dict(part.strip().split("=", 1) for part in parts.split(","))


def botocore_signature(recorded: Recorded, secret_key: str, region: str, service: str) -> str:
    """What botocore's signer for `service` computes for this request: the headers the client
    signed, its timestamp, its payload hash (its own header for S3, else the body's)."""
    signed = signed_by(recorded)
    names = signed["SignedHeaders"].split(";")
    request = AWSRequest(method=recorded.method, url=f"http://{recorded.headers['host']}"
                         f"{recorded.path}", headers={n: recorded.headers[n] for n in names},
                         data=recorded.body)
    request.context["timestamp"] = recorded.headers["x-amz-date"]
    access_key = signed["Credential"].split("/")[0]
    signer_class = S3SigV4Auth if service == "s3" else SigV4Auth
    signer = signer_class(Credentials(access_key, secret_key), service, region)
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))
