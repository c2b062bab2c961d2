"""Configuration: environment variables, and an optional file re-read on every reload.

Every error names the variable and the form it accepts, so a bad deploy stops at start-up with a
message an operator can act on, never later inside a consumer.

`SHELVER_CONFIG_FILE` names a file of `VARIABLE=VALUE` lines (the settings variables below) whose
values override the environment's. It exists because a running process's environment cannot be
changed from outside: gunicorn's SIGHUP reload reads the file again, as a systemd EnvironmentFile
or a mounted Kubernetes ConfigMap is meant to be used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from workers import destinations
from workers.destinations import Destination, Encryption
from workers.logs import LOG_FORMATS, parse_log_format

T = TypeVar("T")

# SQS limits that bound several settings.
MAX_WAIT_TIME_SECONDS = 20
MAX_VISIBILITY_SECONDS = 43_200
# The keeper extends a held message when half its lease is left, checking every second: a lease
# much shorter than this would be extended almost continuously.
MIN_LEASE_SECONDS = 5
# S3_CLIENT and SQS_CLIENT: AWS's Common Runtime for the per-message calls, or boto3 alone.
AWS_CLIENTS = ("crt", "boto3")
# PAYLOAD_MAX_BYTES: the largest payload offloaded by the Amazon SQS Extended Client that is read
# (whole, into memory: a book is one PutObject) and filed; larger ones are dead-lettered.
DEFAULT_PAYLOAD_MAX_BYTES = 10 * 1024 * 1024
MAX_PAYLOAD_MAX_BYTES = 256 * 1024 * 1024
# The AWS clients' connect timeout, and how much longer than WaitTimeSeconds a long poll may take
# to answer before it counts as hung (workers.aws.clients builds the clients with both): the
# longest a receive call can block a consumer's main loop, which does not beat meanwhile, so
# CONSUMER_HEARTBEAT_TIMEOUT_SECONDS is checked against it.
CONNECT_TIMEOUT_SECONDS = 3
RECEIVE_READ_MARGIN_SECONDS = 5


CONFIG_FILE_VARIABLE = "SHELVER_CONFIG_FILE"


class ConfigError(ValueError):
    """A configuration variable has a value Shelver cannot use."""


@dataclass(frozen=True)
class Settings:
    input_queue: str = "InputQueue.fifo"
    genre_buckets: Mapping[str, str] = field(
        default_factory=lambda: {"scifi": "scifi", "romance": "romance"}
    )
    # Made for real AWS, where the latency of an S3 write, not CPU, binds first: 32 groups in
    # flight per replica (README, "Configuration"; docs/deploy.md, "Sizing replicas").
    consumers: int = 4
    consumer_threads: int = 8
    wait_time_seconds: int = 20
    poll_interval_seconds: float = 0.0
    visibility_ceiling_seconds: int = 3_600
    visibility_lease_seconds: int = 15
    retry_backoff_base_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0
    heartbeat_timeout_seconds: float = 60.0
    stop_timeout_seconds: float = 30.0
    health_max_poll_age_seconds: float = 60.0
    queue_sample_seconds: float = 15.0
    crash_dead_letter_after: int = 3
    state_dir: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    s3_client: str = "crt"
    sqs_client: str = "crt"
    # Each genre's destination besides its bucket (workers.destinations): empty, none set.
    genre_key_prefixes: Mapping[str, str] = field(default_factory=dict)
    genre_encryption: Mapping[str, Encryption] = field(default_factory=dict)
    genre_bucket_owners: Mapping[str, str] = field(default_factory=dict)
    genre_storage_classes: Mapping[str, str] = field(default_factory=dict)
    # Payloads offloaded by the Amazon SQS Extended Client (workers.books.payloads): the buckets
    # a pointer may name (none: every pointer is dead-lettered), the largest payload read, and
    # whether a filed payload's object is deleted after its message.
    payload_buckets: frozenset[str] = frozenset()
    payload_max_bytes: int = DEFAULT_PAYLOAD_MAX_BYTES
    payload_delete: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The environment's settings, overridden by those of SHELVER_CONFIG_FILE if it is set."""
        env = os.environ if env is None else env
        path = env.get(CONFIG_FILE_VARIABLE, "").strip()
        from_file = read_config_file(path) if path else {}
        defaults = cls()
        values = {}
        for field_name, (variable, form) in _VARIABLES.items():
            default = getattr(defaults, field_name)
            if variable not in from_file:
                values[field_name] = _parse(variable, env.get(variable), form, default)
                continue
            line = from_file[variable]
            try:
                values[field_name] = _parse(variable, line.value, form, default)
            except ConfigError as exc:
                raise ConfigError(f"{path} line {line.number}: {exc}") from None
        settings = cls(**values, state_dir=env.get("SHELVER_STATE_DIR", ""))
        settings.check_consistency()
        return settings

    @property
    def destinations(self) -> dict[str, Destination]:
        """Each genre's destination: its bucket, and how its books are written there."""
        return destinations.destinations(
            self.genre_buckets, key_prefixes=self.genre_key_prefixes,
            encryption=self.genre_encryption, bucket_owners=self.genre_bucket_owners,
            storage_classes=self.genre_storage_classes)

    def check_consistency(self) -> None:
        """Cross-variable rules: each names both variables involved."""
        try:
            self.destinations  # noqa: B018 (a genre named but not in GENRE_BUCKETS)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # A consumer blocked in a long poll does not beat; the timeouts must leave room for it.
        longest_receive = receive_call_limit(self.wait_time_seconds)
        if self.heartbeat_timeout_seconds <= longest_receive:
            margin = longest_receive - self.wait_time_seconds
            raise ConfigError(
                f"CONSUMER_HEARTBEAT_TIMEOUT_SECONDS must exceed WAIT_TIME_SECONDS + {margin:g} s, "
                "the longest a receive call may block "
                f"(got {self.heartbeat_timeout_seconds:g} and {self.wait_time_seconds})"
            )
        poll_gap = self.wait_time_seconds + self.poll_interval_seconds
        if self.health_max_poll_age_seconds <= poll_gap:
            raise ConfigError(
                "HEALTH_MAX_POLL_AGE_SECONDS must exceed WAIT_TIME_SECONDS + POLL_INTERVAL_SECONDS "
                f"(got {self.health_max_poll_age_seconds:g} and {poll_gap:g})"
            )
        if self.retry_backoff_max_seconds < self.retry_backoff_base_seconds:
            raise ConfigError(
                "RETRY_BACKOFF_MAX_SECONDS must be at least RETRY_BACKOFF_BASE_SECONDS "
                f"(got {self.retry_backoff_max_seconds:g} and {self.retry_backoff_base_seconds:g})"
            )


# S3 bucket naming (the general-purpose subset the operators can type into GENRE_BUCKETS).
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_genre_buckets(spec: str) -> dict[str, str]:
    """Parse ``"scifi=scifi-books, romance=romance-books"`` into ``{genre: bucket}``.

    Genres are stripped and lower-cased (lookups are case-insensitive); bucket names are taken
    as written and must be valid S3 bucket names.
    """
    if not spec.strip():
        raise ValueError("genre mapping is empty: expected genre=bucket pairs separated by commas")
    mapping: dict[str, str] = {}
    for position, entry in enumerate(spec.split(","), start=1):
        item = entry.strip()
        if not item:
            raise ValueError(f"entry {position} is empty (stray comma?)")
        genre_text, sep, bucket_text = item.partition("=")
        if not sep:
            raise ValueError(f"entry {position} {item!r} has no '=': expected genre=bucket")
        genre = genre_text.strip().lower()
        bucket = bucket_text.strip()
        if not genre:
            raise ValueError(f"entry {position} {item!r} has an empty genre")
        if not bucket:
            raise ValueError(f"entry {position} {item!r} has an empty bucket")
        if genre in mapping:
            raise ValueError(f"entry {position}: genre {genre!r} is given more than once")
        if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"entry {position}: {bucket!r} is not a valid S3 bucket name "
                "(3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter "
                "or digit, no '..')"
            )
        mapping[genre] = bucket
    return mapping


def receive_call_limit(wait_time_seconds: int) -> float:
    """The longest a ReceiveMessage call can block the consumer's main loop."""
    return CONNECT_TIMEOUT_SECONDS + wait_time_seconds + RECEIVE_READ_MARGIN_SECONDS


@dataclass(frozen=True)
class _Form:
    """How a variable is parsed, and how its accepted form is told to the operator."""

    parse: Callable[[str], Any]
    accepted: str


def _parse(name: str, raw: str | None, form: _Form, default: T) -> T:
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(T, form.parse(raw.strip()))
    except ValueError as exc:
        raise ConfigError(
            f"{name}={raw!r} is not valid: expected {form.accepted} ({exc})") from None


def _non_empty(raw: str) -> str:
    if not raw:
        raise ValueError("empty")
    return raw


def _int_between(low: int, high: int) -> _Form:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range")
        return value

    return _Form(parse, f"an integer from {low} to {high}")


def _seconds(low: float, high: float) -> _Form:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:  # also rejects nan
            raise ValueError(f"{raw} is out of range")
        return value

    return _Form(parse, f"seconds from {low:g} to {high:g}")


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"unknown level {raw}")
    return level


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value not in {"true", "false"}:
        raise ValueError(f"{raw!r} is neither true nor false")
    return value == "true"


def _aws_client(raw: str) -> str:
    client = raw.lower()
    if client not in AWS_CLIENTS:
        raise ValueError(f"unknown client {raw}")
    return client


# Settings field -> (environment variable, accepted form).
_VARIABLES: dict[str, tuple[str, _Form]] = {
    "input_queue": ("INPUT_QUEUE", _Form(_non_empty, "a queue name or URL")),
    "genre_buckets": ("GENRE_BUCKETS", _Form(
        parse_genre_buckets,
        "genre=bucket pairs separated by commas, e.g. scifi=scifi,romance=romance")),
    "consumers": ("CONSUMERS", _int_between(1, 64)),
    "consumer_threads": ("CONSUMER_THREADS", _int_between(1, 64)),
    "wait_time_seconds": ("WAIT_TIME_SECONDS", _int_between(0, MAX_WAIT_TIME_SECONDS)),
    "poll_interval_seconds": ("POLL_INTERVAL_SECONDS", _seconds(0, 3600)),
    "visibility_lease_seconds": ("VISIBILITY_LEASE_SECONDS",
                                 _int_between(MIN_LEASE_SECONDS, MAX_VISIBILITY_SECONDS)),
    "visibility_ceiling_seconds": ("VISIBILITY_CEILING_SECONDS",
                                   _int_between(1, MAX_VISIBILITY_SECONDS)),
    "retry_backoff_base_seconds": ("RETRY_BACKOFF_BASE_SECONDS",
                                   _seconds(0, MAX_VISIBILITY_SECONDS)),
    "retry_backoff_max_seconds": ("RETRY_BACKOFF_MAX_SECONDS",
                                  _seconds(0, MAX_VISIBILITY_SECONDS)),
    "heartbeat_timeout_seconds": ("CONSUMER_HEARTBEAT_TIMEOUT_SECONDS", _seconds(1, 86_400)),
    "stop_timeout_seconds": ("CONSUMER_STOP_TIMEOUT_SECONDS", _seconds(1, 3600)),
    "health_max_poll_age_seconds": ("HEALTH_MAX_POLL_AGE_SECONDS", _seconds(1, 86_400)),
    "queue_sample_seconds": ("QUEUE_SAMPLE_SECONDS", _seconds(1, 3600)),
    "crash_dead_letter_after": ("CRASH_DEAD_LETTER_AFTER", _int_between(1, 1000)),
    "log_level": ("LOG_LEVEL", _Form(_log_level, "one of DEBUG, INFO, WARNING, ERROR")),
    "log_format": ("LOG_FORMAT", _Form(parse_log_format, " or ".join(LOG_FORMATS))),
    "s3_client": ("S3_CLIENT", _Form(_aws_client, "crt or boto3")),
    "sqs_client": ("SQS_CLIENT", _Form(_aws_client, "crt or boto3")),
    "genre_key_prefixes": (destinations.KEY_PREFIXES_VARIABLE, _Form(
        destinations.parse_key_prefixes, destinations.KEY_PREFIXES_FORM)),
    "genre_encryption": (destinations.ENCRYPTION_VARIABLE, _Form(
        destinations.parse_encryption, destinations.ENCRYPTION_FORM)),
    "genre_bucket_owners": (destinations.BUCKET_OWNERS_VARIABLE, _Form(
        destinations.parse_bucket_owners, destinations.BUCKET_OWNERS_FORM)),
    "genre_storage_classes": (destinations.STORAGE_CLASSES_VARIABLE, _Form(
        destinations.parse_storage_classes, destinations.STORAGE_CLASSES_FORM)),
    "payload_buckets": ("PAYLOAD_BUCKETS", _Form(
        destinations.parse_bucket_names, "bucket names separated by commas, e.g. "
        "acme-payloads,acme-payloads-eu")),
    "payload_max_bytes": ("PAYLOAD_MAX_BYTES", _int_between(1024, MAX_PAYLOAD_MAX_BYTES)),
    "payload_delete": ("PAYLOAD_DELETE", _Form(_boolean, "true or false")),
}


@dataclass(frozen=True)
class _FileLine:
    value: str
    number: int


def read_config_file(path: str) -> dict[str, _FileLine]:
    """The variables a SHELVER_CONFIG_FILE sets: `VARIABLE=VALUE` lines, blank lines and `#`
    comment lines ignored, a value optionally in matching quotes. Only the settings variables
    are accepted: the others (AWS_*, BIND, SHELVER_STATE_DIR, ...) are read once, at start, from
    the environment, so a reload could not apply them; a line setting one is an error, as is a
    variable set twice. Errors name the file and the line."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().split("\n")  # text mode: \r\n and \r are \n already
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}={path!r} cannot be read: {exc}") from None
    found: dict[str, _FileLine] = {}
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = (part.strip() for part in stripped.partition("="))
        where = f"{path} line {number}"
        if not equals or not name:
            raise ConfigError(f"{where}: expected VARIABLE=VALUE, got {stripped!r}")
        if name not in _FILE_VARIABLES:
            raise ConfigError(
                f"{where}: {name} cannot be set in {CONFIG_FILE_VARIABLE} (it accepts "
                f"{', '.join(_FILE_VARIABLES)}; anything else is read from the environment)")
        if name in found:
            raise ConfigError(f"{where}: {name} is already set on line {found[name].number}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[name] = _FileLine(value, number)
    return found


_FILE_VARIABLES = tuple(variable for variable, _ in _VARIABLES.values())


# Read outside the table above: the configuration file (whose own lines are the table's
# variables), the two working directories (gunicorn.conf.py creates and empties
# them; the consumers and the HTTP workers find them there) and gunicorn's own settings.
PROCESS_VARIABLES = (
    CONFIG_FILE_VARIABLE,
    "SHELVER_STATE_DIR",
    "PROMETHEUS_MULTIPROC_DIR",
    "BIND",
    "WEB_CONCURRENCY",
    "WEB_THREADS",
    "ACCESS_LOG",
)

# Every environment variable Shelver reads, the one list to extend when a variable is added (the
# tests hold the code, README's Configuration table and the Kubernetes manifests to it). The AWS
# SDK's standard variables (AWS_REGION, AWS_ENDPOINT_URL*, the credentials chain, IRSA's
# AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE...) are boto3's, see `is_read`.
ENVIRONMENT_VARIABLES: frozenset[str] = frozenset(
    [variable for variable, _ in _VARIABLES.values()] + list(PROCESS_VARIABLES))
AWS_VARIABLE_PREFIX = "AWS_"
# OpenTelemetry's standard variables (tracing, workers/tracing.py and the SDK): read at start
# from the environment, as the AWS ones are.
OTEL_VARIABLE_PREFIX = "OTEL_"


def is_read(variable: str) -> bool:
    """True if setting `variable` can change what Shelver does."""
    return (variable in ENVIRONMENT_VARIABLES
            or variable.startswith((AWS_VARIABLE_PREFIX, OTEL_VARIABLE_PREFIX)))


def read_log_format(env: Mapping[str, str] | None = None) -> str:
    """LOG_FORMAT alone, for gunicorn's logger, which is made before the settings are validated;
    "text" for a bad value, which `Settings.from_env` then reports, stopping start-up."""
    variable, form = _VARIABLES["log_format"]
    try:
        raw = (os.environ if env is None else env).get(variable)
        return _parse(variable, raw, form, Settings.log_format)
    except ConfigError:
        return Settings.log_format


def changed_variables(old: Settings, new: Settings) -> dict[str, tuple[Any, Any]]:
    """The variables whose values differ from `old` to `new`, by name: what a reload logs."""
    return {variable: (getattr(old, name), getattr(new, name))
            for name, (variable, _) in _VARIABLES.items()
            if getattr(old, name) != getattr(new, name)}
