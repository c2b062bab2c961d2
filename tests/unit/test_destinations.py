"""workers/destinations.py: the destination variables parsed and checked, the headers each S3
request of a destination carries, and boto3's parameters for them sent as the same headers."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers import destinations
from workers import settings as shelver_settings
from workers.destinations import (
    BUCKET_KEY_HEADER,
    KMS_KEY_HEADER,
    OWNER_HEADER,
    SSE_HEADER,
    STORAGE_CLASS_HEADER,
    STORAGE_CLASSES,
    Destination,
    Encryption,
    S3Request,
    Sse,
    boto3_parameters,
    check_bucket_name,
    parse_bucket_owners,
    parse_encryption,
    parse_key_prefixes,
    parse_storage_classes,
    request_headers,
)
from workers.settings import parse_genre_buckets, read_config_file

KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = "arn:aws-us-gov:kms:us-gov-west-1:444455556666:key/mrk-1234abcd12ab34cd56ef1234567890ab"

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                    suppress_health_check=[HealthCheck.too_slow])
# Each example is a botocore request built and signed: few, over a small space.
WIRE_PROPERTY = settings(PROPERTY, max_examples=40)


def parse(env: dict[str, str]) -> dict[str, Destination]:
    """Every destination variable of `env`, as settings will read them."""
    parsers = {"GENRE_KEY_PREFIXES": ("key_prefixes", parse_key_prefixes),
               "GENRE_ENCRYPTION": ("encryption", parse_encryption),
               "GENRE_BUCKET_OWNERS": ("bucket_owners", parse_bucket_owners),
               "GENRE_STORAGE_CLASSES": ("storage_classes", parse_storage_classes)}
    options: dict[str, Any] = {argument: parser(env[variable])
                               for variable, (argument, parser) in parsers.items()
                               if variable in env}
    return destinations.destinations(parse_genre_buckets(env["GENRE_BUCKETS"]), **options)


# --- the syntax --------------------------------------------------------------------------------


def test_todays_genre_buckets_alone_are_destinations_with_no_options() -> None:
    found = parse({"GENRE_BUCKETS": "scifi=scifi,romance=romance"})
    assert found == {"scifi": Destination("scifi", "scifi"),
                     "romance": Destination("romance", "romance")}
    for destination in found.values():
        for request in S3Request:
            assert request_headers(destination, request) == {}
        assert destination.key("Dune.json") == "Dune.json"


def _docstring_example() -> str:
    """The variables the module docstring shows, one per line."""
    assert destinations.__doc__ is not None
    block = destinations.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return "\n".join(line.strip() for line in block.splitlines())


def _example_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in _docstring_example().splitlines())


def test_the_module_docstrings_example_parses_as_it_says() -> None:
    env = _example_env()
    assert set(env) == {"GENRE_BUCKETS", "GENRE_KEY_PREFIXES", "GENRE_ENCRYPTION",
                        "GENRE_BUCKET_OWNERS", "GENRE_STORAGE_CLASSES"}
    assert parse(env) == {
        "scifi": Destination("scifi", "acme-scifi", "books/scifi/", Encryption(Sse.KMS, KEY),
                             "111122223333", "STANDARD_IA"),
        "romance": Destination("romance", "acme-romance", "books/romance/",
                               Encryption(Sse.KMS, KEY), "111122223333", "STANDARD"),
    }


def test_the_example_fits_a_config_file_and_a_configmap_with_star_values_quoted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Until workers/settings.py reads these variables, its file reader is told of them here:
    # what is tested is that its line syntax carries their values unchanged.
    monkeypatch.setattr(shelver_settings, "_FILE_VARIABLES", tuple(_example_env()))
    example = _docstring_example()
    config = tmp_path / "shelver.env"
    config.write_text(example + "\n")
    from_file = {name: line.value for name, line in read_config_file(str(config)).items()}
    assert from_file == _example_env()
    quoted = "data:\n" + "".join(f"  {name}: {value!r}\n".replace("'", '"')
                                  for name, value in _example_env().items())
    assert yaml.safe_load(quoted)["data"] == _example_env()
    with pytest.raises(yaml.YAMLError):  # unquoted, a value starting with * is an alias
        yaml.safe_load("data:\n  GENRE_BUCKET_OWNERS: *=111122223333\n")


def test_a_genres_own_entry_wins_over_every_genre() -> None:
    found = parse({"GENRE_BUCKETS": "scifi=a-scifi,romance=a-romance,crime=a-crime",
                   "GENRE_KEY_PREFIXES": "*=books/,crime=",
                   "GENRE_ENCRYPTION": f"*=SSE-KMS:{KEY},ROMANCE=sse-s3"})
    assert {genre: (d.key_prefix, str(d.encryption)) for genre, d in found.items()} == {
        "scifi": ("books/", f"SSE-KMS:{KEY}"), "romance": ("books/", "SSE-S3"),
        "crime": ("", f"SSE-KMS:{KEY}")}
    assert found["scifi"].key("Dune.json") == "books/Dune.json"


def test_describe_says_the_whole_destination_and_its_defaults() -> None:
    full = Destination("scifi", "acme-scifi", "books/scifi/", Encryption(Sse.KMS, KEY),
                       "111122223333", "STANDARD_IA")
    assert full.describe() == (f"scifi: s3://acme-scifi/books/scifi/ encryption SSE-KMS:{KEY}, "
                               "owner 111122223333, storage class STANDARD_IA")
    assert Destination("romance", "acme-romance").describe() == (
        "romance: s3://acme-romance/ encryption the bucket's default, owner not checked, "
        "storage class STANDARD")


@pytest.mark.parametrize(("parser", "spec", "message"), [
    (parse_key_prefixes, "", "empty: expected genre=prefix"),
    (parse_key_prefixes, "scifi=books/,", "entry 2 is empty"),
    (parse_key_prefixes, "books/", "entry 1 'books/' has no '=': expected genre=prefix"),
    (parse_key_prefixes, "=books/", "has an empty genre"),
    (parse_key_prefixes, "scifi=a/,SCIFI=b/", "genre 'scifi' is given more than once"),
    (parse_key_prefixes, "scifi=books/scifi",
     "entry 1 (genre 'scifi'): prefix 'books/scifi' does not end with '/' (did you mean "
     "'books/scifi/'?)"),
    (parse_key_prefixes, "scifi=/books/", "an empty, '.' or '..' segment"),
    (parse_key_prefixes, "scifi=books//scifi/", "an empty, '.' or '..' segment"),
    (parse_key_prefixes, "scifi=books/../", "an empty, '.' or '..' segment"),
    (parse_key_prefixes, "scifi=./", "an empty, '.' or '..' segment"),
    (parse_key_prefixes, "scifi=books*/", "a character other than"),
    (parse_key_prefixes, "scifi=livres/sci fi/", "a character other than"),
    (parse_key_prefixes, "scifi=bücher/", "a character other than"),
    (parse_key_prefixes, "scifi=" + "a/" * 129, "is 258 bytes, more than 256"),
    (parse_encryption, "scifi=AES256", "'AES256' is neither SSE-S3 nor SSE-KMS:<KMS key ARN>"),
    (parse_encryption, "scifi=SSE-KMS", "SSE-KMS names no key"),
    (parse_encryption, "scifi=SSE-KMS:", "SSE-KMS names no key"),
    (parse_encryption, "scifi=SSE-S3:x", "neither SSE-S3 nor SSE-KMS"),
    (parse_encryption, "scifi=SSE-KMS:1234abcd-12ab-34cd-56ef-1234567890ab",
     "is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key id>)"),
    (parse_encryption, "scifi=SSE-KMS:arn:aws:kms:eu-west-1:111122223333:alias/books",
     "is an alias: name the key's ARN"),
    (parse_encryption, "scifi=SSE-KMS:arn:aws:s3:::bucket", "is not a KMS key ARN"),
    (parse_encryption, "scifi=SSE-KMS:arn:aws:kms:eu-west-1:1111:key/abc",
     "is not a KMS key ARN"),
    (parse_bucket_owners, "scifi=11112222333", "'11112222333' is not a 12-digit AWS account id"),
    (parse_bucket_owners, "scifi=1111-2222-3333", "is not a 12-digit AWS account id"),
    (parse_bucket_owners, "*=", "'' is not a 12-digit AWS account id"),
    (parse_storage_classes, "scifi=GLACIER", "'GLACIER' is not one of STANDARD, "
     "INTELLIGENT_TIERING, STANDARD_IA, ONEZONE_IA, GLACIER_IR"),
    (parse_storage_classes, "scifi=DEEP_ARCHIVE", "is not one of"),
    (parse_storage_classes, "scifi=REDUCED_REDUNDANCY", "is not one of"),
])
def test_errors_name_the_entry_the_genre_and_the_accepted_form(
        parser: Any, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parser(spec)


def test_values_are_trimmed_and_classes_and_schemes_read_in_any_case() -> None:
    assert parse_storage_classes(" Scifi = standard_ia ") == {"scifi": "STANDARD_IA"}
    assert parse_encryption(f"scifi= sse-kms:{OTHER_KEY} ") == {
        "scifi": Encryption(Sse.KMS, OTHER_KEY)}
    assert parse_key_prefixes("scifi=Books/Sci-Fi_(1)/'s!/") == {"scifi": "Books/Sci-Fi_(1)/'s!/"}
    assert parse_key_prefixes("scifi=" + "a/" * 128) == {"scifi": "a/" * 128}


@pytest.mark.parametrize("variable", ["GENRE_KEY_PREFIXES", "GENRE_ENCRYPTION",
                                      "GENRE_BUCKET_OWNERS", "GENRE_STORAGE_CLASSES"])
def test_a_genre_genre_buckets_does_not_name_is_an_error_naming_both(variable: str) -> None:
    value = {"GENRE_KEY_PREFIXES": "books/", "GENRE_ENCRYPTION": "SSE-S3",
             "GENRE_BUCKET_OWNERS": "111122223333", "GENRE_STORAGE_CLASSES": "STANDARD"}[variable]
    env = {"GENRE_BUCKETS": "scifi=a-scifi,romance=a-romance", variable: f"scfi={value}"}
    with pytest.raises(ValueError, match=re.escape(
            f"{variable} names genre 'scfi', which GENRE_BUCKETS does not "
            "(it names romance, scifi)")):
        parse(env)


def test_an_encryption_is_sse_kms_with_a_key_or_sse_s3_without() -> None:
    with pytest.raises(ValueError):
        Encryption(Sse.KMS)
    with pytest.raises(ValueError):
        Encryption(Sse.S3, KEY)


# --- round trips -------------------------------------------------------------------------------

_genres = st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=12)
_buckets = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
_segments = st.text(string.ascii_letters + string.digits + "!-_'()", min_size=1, max_size=10)
_prefixes = st.one_of(st.just(""), st.lists(_segments, min_size=1, max_size=5).map(
    lambda parts: "/".join(parts) + "/"))
_keys = st.from_regex(r"arn:aws(-cn|-us-gov)?:kms:[a-z]{2}-[a-z]+-[1-9]:[0-9]{12}:"
                      r"key/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                      fullmatch=True)
_encryptions = st.one_of(st.none(), st.just(Encryption(Sse.S3)),
                         _keys.map(lambda key: Encryption(Sse.KMS, key)))
_owners = st.one_of(st.none(), st.from_regex(r"[0-9]{12}", fullmatch=True))
_classes = st.one_of(st.none(), st.sampled_from(STORAGE_CLASSES))


@st.composite
def _destinations(draw: st.DrawFn) -> dict[str, Destination]:
    genres = draw(st.lists(_genres, min_size=1, max_size=5, unique=True))
    return {genre: Destination(genre, draw(_buckets), draw(_prefixes), draw(_encryptions),
                               draw(_owners), draw(_classes)) for genre in genres}


_OPTIONS: dict[str, Callable[[Destination], object]] = {
    "GENRE_KEY_PREFIXES": lambda d: d.key_prefix or None,
    "GENRE_ENCRYPTION": lambda d: d.encryption,
    "GENRE_BUCKET_OWNERS": lambda d: d.expected_owner,
    "GENRE_STORAGE_CLASSES": lambda d: d.storage_class,
}


def _variables(found: dict[str, Destination], shared: bool) -> dict[str, str]:
    """The variables that say `found`: an option every genre has the same written once with
    `*` when `shared`, else per genre; a genre without an option has no entry."""
    env = {"GENRE_BUCKETS": ",".join(f"{g}={d.bucket}" for g, d in found.items())}
    for variable, value_of in _OPTIONS.items():
        present = {genre: value for genre, d in found.items()
                   if (value := value_of(d)) is not None}
        if not present:
            continue
        if shared and len(present) == len(found) and len(set(map(str, present.values()))) == 1:
            env[variable] = f"*={next(iter(present.values()))}"
        else:
            env[variable] = ",".join(f"{genre}={value}" for genre, value in present.items())
    return env


@PROPERTY
@given(_destinations(), st.booleans())
def test_destinations_written_as_variables_parse_back_to_themselves(
        found: dict[str, Destination], shared: bool) -> None:
    assert parse(_variables(found, shared)) == found


# --- the headers -------------------------------------------------------------------------------


def test_a_put_carries_encryption_storage_class_and_owner_every_other_request_the_owner() -> None:
    locked = Destination("scifi", "acme-scifi", "books/scifi/", Encryption(Sse.KMS, KEY),
                         "111122223333", "STANDARD_IA")
    assert request_headers(locked, S3Request.PUT_OBJECT) == {
        SSE_HEADER: "aws:kms", KMS_KEY_HEADER: KEY, BUCKET_KEY_HEADER: "true",
        STORAGE_CLASS_HEADER: "STANDARD_IA", OWNER_HEADER: "111122223333"}
    for request in (S3Request.HEAD_OBJECT, S3Request.HEAD_BUCKET, S3Request.DELETE_OBJECT):
        assert request_headers(locked, request) == {OWNER_HEADER: "111122223333"}
    sse_s3 = Destination("romance", "acme-romance", encryption=Encryption(Sse.S3))
    assert request_headers(sse_s3, S3Request.PUT_OBJECT) == {SSE_HEADER: "AES256"}
    assert request_headers(sse_s3, S3Request.HEAD_OBJECT) == {}


class _Sent(Exception):
    """Raised from botocore's before-send: the request as it would go on the wire."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("captured")
        self.headers = headers


def _capture(request: Any, **_: Any) -> None:
    raise _Sent({name.lower(): value.decode() if isinstance(value, bytes) else value
                 for name, value in request.headers.items()})


@functools.cache
def _capturing_client() -> Any:
    """An S3 client whose requests stop just before the wire (made once: making one is slow)."""
    client = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x",
                                   region_name="eu-west-1").client("s3")
    client.meta.events.register("before-send.s3", _capture)
    return client


def _wire_headers(operation: str, **parameters: Any) -> dict[str, str]:
    """The headers botocore sends for one S3 call, among those a destination sets."""
    with pytest.raises(_Sent) as sent:
        getattr(_capturing_client(), operation)(**parameters)
    return {name: value for name, value in sent.value.headers.items()
            if name in destinations.BOTO3_PARAMETERS}


_OPERATIONS: dict[S3Request, tuple[str, dict[str, Any]]] = {
    S3Request.PUT_OBJECT: ("put_object", {"Key": "k.json", "Body": b"{}"}),
    S3Request.HEAD_OBJECT: ("head_object", {"Key": "k.json"}),
    S3Request.HEAD_BUCKET: ("head_bucket", {}),
    S3Request.DELETE_OBJECT: ("delete_object", {"Key": "k.json"})}


@WIRE_PROPERTY
@given(_destinations().map(lambda found: next(iter(found.values()))),
       st.sampled_from(list(S3Request)))
def test_boto3_sends_the_parameters_as_exactly_the_headers_the_crt_client_adds(
        destination: Destination, request: S3Request) -> None:
    headers = request_headers(destination, request)
    operation, parameters = _OPERATIONS[request]
    assert request.value == "".join(part.title() for part in operation.split("_"))
    assert _wire_headers(operation, Bucket=destination.bucket, **parameters,
                         **boto3_parameters(headers)) == headers


def test_every_storage_class_offered_is_one_s3_knows() -> None:
    model = boto3.session.Session(region_name="eu-west-1").client("s3").meta.service_model
    known = model.operation_model("PutObject").input_shape.members["StorageClass"].enum
    assert set(STORAGE_CLASSES) <= set(known)


# --- bucket names: the same rule as GENRE_BUCKETS' ----------------------------------------------


@PROPERTY
@given(st.text(string.ascii_letters + string.digits + ".-_", min_size=0, max_size=70))
def test_a_bucket_name_is_valid_here_exactly_when_genre_buckets_accepts_it(name: str) -> None:
    def accepted(check: Any) -> bool:
        try:
            check()
        except ValueError:
            return False
        return True

    assert accepted(lambda: check_bucket_name(name)) == accepted(
        lambda: parse_genre_buckets(f"g={name}"))
