"""Destinations: where, and how, the book files of each genre are written.

A genre's destination is its bucket (``GENRE_BUCKETS``, as before) and, optionally, a key
prefix, server-side encryption, the account that must own the bucket, and a storage class. Each
of those is a variable of its own, written like ``GENRE_BUCKETS`` (``genre=value`` entries
separated by commas), where ``*`` stands for every genre and a genre's own entry wins over it::

    GENRE_BUCKETS=scifi=acme-scifi,romance=acme-romance
    GENRE_KEY_PREFIXES=scifi=books/scifi/,romance=books/romance/
    GENRE_ENCRYPTION=*=SSE-KMS:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
    GENRE_BUCKET_OWNERS=*=111122223333
    GENRE_STORAGE_CLASSES=*=STANDARD_IA,romance=STANDARD

In YAML (a Kubernetes ConfigMap) quote a value that starts with ``*``, which YAML reads as an
alias: ``GENRE_BUCKET_OWNERS: "*=111122223333"``; a SHELVER_CONFIG_FILE line needs no quotes.

- ``GENRE_KEY_PREFIXES``: a prefix ending in ``/``, of ``A-Z a-z 0-9 ! - _ . ' ( ) /`` (S3's
  safe characters but ``*``, which an IAM resource would read as a wildcard), no empty, ``.`` or
  ``..`` segment, at most 256 bytes (the book's own key keeps 768); the book's key follows it.
  An empty value (``scifi=``) writes at the bucket's root, against a ``*`` entry.
- ``GENRE_ENCRYPTION``: ``SSE-S3``, or ``SSE-KMS:<key ARN>`` (always with an S3 Bucket Key, which
  cuts the KMS requests, and so their cost and throttling, by up to 99%). The key's ARN, not an
  alias or a bare key id: S3 reports the key's ARN on the object, the IAM grant is on the key,
  and an alias can be pointed at another key. Without an entry, the bucket's default encryption
  applies.
- ``GENRE_BUCKET_OWNERS``: the 12-digit account id every S3 request about the bucket expects to
  own it (``x-amz-expected-bucket-owner``): S3 refuses the request with 403 if another account
  owns the bucket, so a deleted bucket's name taken over by someone else is never written.
- ``GENRE_STORAGE_CLASSES``: one of `STORAGE_CLASSES`; S3's default, STANDARD, without one.

Why variables of their own rather than one longer ``GENRE_BUCKETS`` value
(``scifi=acme-scifi;prefix=books/scifi/;sse=...``): a configuration file or a ConfigMap holds one
line per variable, and a KMS key ARN is 75 characters, so a destination per genre on one line
soon makes a line hundreds of characters long, whose diff shows the whole line for any change;
an ARN would be repeated for every genre that shares it, where ``*`` says it once; each variable
is checked on its own, and its errors name it; and ``GENRE_BUCKETS`` itself, its parser and its
messages stay as they are. The price, a genre's destination spread over several lines, is paid
back at start: Shelver logs each genre's whole destination (`Destination.describe`), and a
genre named in one of these variables but not in ``GENRE_BUCKETS`` (a typo) is an error naming
both.

`request_headers` is the one place that says which headers each S3 request of a destination
carries: the CRT client adds them as they are, the boto3 client passes `boto3_parameters` of
them, which botocore writes as the same headers (a unit test holds the two together).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

T = TypeVar("T")

BUCKETS_VARIABLE = "GENRE_BUCKETS"
KEY_PREFIXES_VARIABLE = "GENRE_KEY_PREFIXES"
ENCRYPTION_VARIABLE = "GENRE_ENCRYPTION"
BUCKET_OWNERS_VARIABLE = "GENRE_BUCKET_OWNERS"
STORAGE_CLASSES_VARIABLE = "GENRE_STORAGE_CLASSES"

EVERY_GENRE = "*"

# The accepted forms, as a ConfigError tells them (settings' `_Form.accepted`).
KEY_PREFIXES_FORM = ("genre=prefix pairs separated by commas, each prefix ending in '/', "
                     "* for every genre, e.g. scifi=books/scifi/,romance=books/romance/")
ENCRYPTION_FORM = ("genre=encryption pairs separated by commas, each SSE-S3 or "
                   "SSE-KMS:<KMS key ARN>, * for every genre, e.g. "
                   "*=SSE-KMS:arn:aws:kms:eu-west-1:111122223333:key/<key id>,romance=SSE-S3")
BUCKET_OWNERS_FORM = ("genre=account pairs separated by commas, each a 12-digit AWS account id, "
                      "* for every genre, e.g. *=111122223333")

# Classes whose objects can be read at once, as a book's readers expect: GLACIER and
# DEEP_ARCHIVE need a restore first, and belong in a lifecycle rule, not in every write.
# REDUCED_REDUNDANCY is left out as AWS advises; the rest are for other kinds of bucket.
STORAGE_CLASSES = ("STANDARD", "INTELLIGENT_TIERING", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR")
STORAGE_CLASSES_FORM = ("genre=class pairs separated by commas, * for every genre, e.g. "
                        "*=STANDARD_IA,romance=STANDARD; a class is one of "
                        + ", ".join(STORAGE_CLASSES))

MAX_KEY_PREFIX_BYTES = 256
_KEY_PREFIX_CHARS = re.compile(r"[A-Za-z0-9!_.'()/-]*")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
# The pattern of S3's own API reference for a KMS key ARN (SSEKMSEncryption.KMSKeyArn).
_KMS_KEY_ARN = re.compile(r"arn:aws[a-zA-Z0-9-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+")
_KMS_ALIAS_ARN = re.compile(r"arn:aws[a-zA-Z0-9-]*:kms:[a-z0-9-]+:[0-9]{12}:alias/.+")
# S3 bucket naming (the general-purpose subset), as workers/settings.py checks GENRE_BUCKETS.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# The request headers a destination sets, and the boto3 parameter botocore writes each from.
SSE_HEADER = "x-amz-server-side-encryption"
KMS_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
BUCKET_KEY_HEADER = "x-amz-server-side-encryption-bucket-key-enabled"
STORAGE_CLASS_HEADER = "x-amz-storage-class"
OWNER_HEADER = "x-amz-expected-bucket-owner"
BOTO3_PARAMETERS = {
    SSE_HEADER: "ServerSideEncryption",
    KMS_KEY_HEADER: "SSEKMSKeyId",
    BUCKET_KEY_HEADER: "BucketKeyEnabled",
    STORAGE_CLASS_HEADER: "StorageClass",
    OWNER_HEADER: "ExpectedBucketOwner",
}


class Sse(Enum):
    """Server-side encryption, by the value of S3's `x-amz-server-side-encryption` header."""

    S3 = "AES256"
    KMS = "aws:kms"


@dataclass(frozen=True)
class Encryption:
    sse: Sse
    kms_key_arn: str | None = None  # SSE-KMS only

    def __post_init__(self) -> None:
        if (self.sse is Sse.KMS) != (self.kms_key_arn is not None):
            raise ValueError("SSE-KMS takes a key ARN, and SSE-S3 none")

    def __str__(self) -> str:
        """As GENRE_ENCRYPTION spells it."""
        return "SSE-S3" if self.sse is Sse.S3 else f"SSE-KMS:{self.kms_key_arn}"


@dataclass(frozen=True)
class Destination:
    """Where the books of one genre are written, and how."""

    genre: str
    bucket: str
    key_prefix: str = ""
    encryption: Encryption | None = None  # None: the bucket's default encryption
    expected_owner: str | None = None  # None: any account's bucket of that name
    storage_class: str | None = None  # None: S3's default, STANDARD

    def key(self, object_key: str) -> str:
        """The full key of a book whose key by the key rule (`books.object_key`) is given."""
        return self.key_prefix + object_key

    def describe(self) -> str:
        """One line for the start-up log: the whole destination, its defaults said."""
        encryption = str(self.encryption) if self.encryption else "the bucket's default"
        return (f"{self.genre}: s3://{self.bucket}/{self.key_prefix} encryption {encryption}, "
                f"owner {self.expected_owner or 'not checked'}, "
                f"storage class {self.storage_class or 'STANDARD'}")


class S3Request(Enum):
    """The S3 requests made about a destination."""

    PUT_OBJECT = "PutObject"
    HEAD_OBJECT = "HeadObject"
    HEAD_BUCKET = "HeadBucket"
    DELETE_OBJECT = "DeleteObject"


def request_headers(destination: Destination, request: S3Request) -> dict[str, str]:
    """The headers `request` carries for `destination`, names in lower case.

    Every request carries the expected owner. Only a PutObject carries the encryption and the
    storage class: they are how an object is written, and S3 answers 400 to a HeadObject that
    names SSE-S3 or SSE-KMS."""
    headers = owner_headers(destination.expected_owner)
    if request is not S3Request.PUT_OBJECT:
        return headers
    encryption = destination.encryption
    if encryption is not None:
        headers[SSE_HEADER] = encryption.sse.value
        if encryption.kms_key_arn is not None:
            headers[KMS_KEY_HEADER] = encryption.kms_key_arn
            headers[BUCKET_KEY_HEADER] = "true"
    if destination.storage_class is not None:
        headers[STORAGE_CLASS_HEADER] = destination.storage_class
    return headers


def owner_headers(expected_owner: str | None) -> dict[str, str]:
    """The expected-owner header alone: for a request about any bucket Shelver is told the
    owner of (a payload bucket too)."""
    return {} if expected_owner is None else {OWNER_HEADER: expected_owner}


def boto3_parameters(headers: Mapping[str, str]) -> dict[str, str | bool]:
    """`request_headers` as the keyword arguments of a boto3 call, which botocore sends as the
    same headers."""
    return {BOTO3_PARAMETERS[name]: (value == "true" if name == BUCKET_KEY_HEADER else value)
            for name, value in headers.items()}


# --- parsing -------------------------------------------------------------------------------


def parse_genre_map(spec: str, what: str, parse_value: Callable[[str], T]) -> dict[str, T]:
    """Parse ``genre=value`` entries separated by commas into ``{genre: value}``; ``*`` is a
    genre like any other here, which `destinations` reads as every genre.

    Genres are stripped and lower-cased, values stripped and given to `parse_value`, whose
    ValueError is reported with the entry and its genre."""
    if not spec.strip():
        raise ValueError(f"empty: expected genre={what} pairs separated by commas")
    mapping: dict[str, T] = {}
    for position, entry in enumerate(spec.split(","), start=1):
        item = entry.strip()
        if not item:
            raise ValueError(f"entry {position} is empty (stray comma?)")
        genre_text, sep, value_text = item.partition("=")
        if not sep:
            raise ValueError(f"entry {position} {item!r} has no '=': expected genre={what}")
        genre = genre_text.strip().lower()
        if not genre:
            raise ValueError(f"entry {position} {item!r} has an empty genre")
        if genre in mapping:
            raise ValueError(f"entry {position}: genre {genre!r} is given more than once")
        try:
            mapping[genre] = parse_value(value_text.strip())
        except ValueError as exc:
            raise ValueError(f"entry {position} (genre {genre!r}): {exc}") from None
    return mapping


def check_bucket_name(name: str) -> str:
    """`name` if it is a valid S3 bucket name (the general-purpose rules), else ValueError."""
    if not name:
        raise ValueError("empty bucket")
    if not _BUCKET_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{name!r} is not a valid S3 bucket name (3-63 characters of a-z, 0-9, '.' and "
            "'-', starting and ending with a letter or digit, no '..')")
    return name


def parse_bucket_names(spec: str) -> frozenset[str]:
    """``"acme-payloads, acme-payloads-2"``: bucket names separated by commas (PAYLOAD_BUCKETS)."""
    if not spec.strip():
        raise ValueError("empty: expected bucket names separated by commas")
    buckets: set[str] = set()
    for position, entry in enumerate(spec.split(","), start=1):
        name = entry.strip()
        if not name:
            raise ValueError(f"entry {position} is empty (stray comma?)")
        try:
            check_bucket_name(name)
        except ValueError as exc:
            raise ValueError(f"entry {position}: {exc}") from None
        if name in buckets:
            raise ValueError(f"entry {position}: bucket {name!r} is given more than once")
        buckets.add(name)
    return frozenset(buckets)


def key_prefix(raw: str) -> str:
    """A GENRE_KEY_PREFIXES value: "" (the bucket's root) or a prefix by the module's rules."""
    if not raw:
        return ""
    if not _KEY_PREFIX_CHARS.fullmatch(raw):
        raise ValueError(f"prefix {raw!r} has a character other than A-Z a-z 0-9 ! - _ . ' ( ) /")
    if len(raw) > MAX_KEY_PREFIX_BYTES:
        raise ValueError(f"prefix {raw[:40]!r}... is {len(raw)} bytes, more than "
                         f"{MAX_KEY_PREFIX_BYTES}")
    if not raw.endswith("/"):
        raise ValueError(f"prefix {raw!r} does not end with '/' (did you mean {raw + '/'!r}?)")
    if any(segment in ("", ".", "..") for segment in raw[:-1].split("/")):
        raise ValueError(f"prefix {raw!r} has an empty, '.' or '..' segment")
    return raw


def encryption(raw: str) -> Encryption:
    """A GENRE_ENCRYPTION value: SSE-S3, or SSE-KMS:<KMS key ARN>."""
    scheme, colon, key = raw.partition(":")
    if scheme.upper() == "SSE-S3" and not colon:
        return Encryption(Sse.S3)
    if scheme.upper() != "SSE-KMS":
        raise ValueError(f"{raw!r} is neither SSE-S3 nor SSE-KMS:<KMS key ARN>")
    if not key:
        raise ValueError("SSE-KMS names no key: expected SSE-KMS:<KMS key ARN>")
    if _KMS_ALIAS_ARN.fullmatch(key):
        raise ValueError(f"{key!r} is an alias: name the key's ARN (S3 reports the key on each "
                         "object, and the IAM grant is on the key)")
    if not _KMS_KEY_ARN.fullmatch(key):
        raise ValueError(f"{key!r} is not a KMS key ARN "
                         "(arn:aws:kms:<region>:<account>:key/<key id>)")
    return Encryption(Sse.KMS, key)


def account_id(raw: str) -> str:
    """A 12-digit AWS account id."""
    if not _ACCOUNT_ID.fullmatch(raw):
        raise ValueError(f"{raw!r} is not a 12-digit AWS account id")
    return raw


def storage_class(raw: str) -> str:
    """One of `STORAGE_CLASSES`, in any case."""
    name = raw.upper()
    if name not in STORAGE_CLASSES:
        raise ValueError(f"{raw!r} is not one of {', '.join(STORAGE_CLASSES)}")
    return name


def parse_key_prefixes(spec: str) -> dict[str, str]:
    return parse_genre_map(spec, "prefix", key_prefix)


def parse_encryption(spec: str) -> dict[str, Encryption]:
    return parse_genre_map(spec, "encryption", encryption)


def parse_bucket_owners(spec: str) -> dict[str, str]:
    return parse_genre_map(spec, "account", account_id)


def parse_storage_classes(spec: str) -> dict[str, str]:
    return parse_genre_map(spec, "class", storage_class)


def destinations(buckets: Mapping[str, str], *,
                 key_prefixes: Mapping[str, str] | None = None,
                 encryption: Mapping[str, Encryption] | None = None,
                 bucket_owners: Mapping[str, str] | None = None,
                 storage_classes: Mapping[str, str] | None = None) -> dict[str, Destination]:
    """Each genre's `Destination`, from the parsed variables. A genre named in one of the
    optional variables but not in GENRE_BUCKETS is an error naming both."""
    key_prefixes = key_prefixes or {}
    encryption = encryption or {}
    bucket_owners = bucket_owners or {}
    storage_classes = storage_classes or {}
    for variable, named in ((KEY_PREFIXES_VARIABLE, key_prefixes),
                            (ENCRYPTION_VARIABLE, encryption),
                            (BUCKET_OWNERS_VARIABLE, bucket_owners),
                            (STORAGE_CLASSES_VARIABLE, storage_classes)):
        unknown = sorted(set(named) - set(buckets) - {EVERY_GENRE})
        if unknown:
            raise ValueError(
                f"{variable} names genre {unknown[0]!r}, which {BUCKETS_VARIABLE} does not "
                f"(it names {', '.join(sorted(buckets))})")

    def chosen(mapping: Mapping[str, T], genre: str) -> T | None:
        return mapping[genre] if genre in mapping else mapping.get(EVERY_GENRE)

    return {genre: Destination(genre=genre, bucket=bucket,
                               key_prefix=chosen(key_prefixes, genre) or "",
                               encryption=chosen(encryption, genre),
                               expected_owner=chosen(bucket_owners, genre),
                               storage_class=chosen(storage_classes, genre))
            for genre, bucket in buckets.items()}
