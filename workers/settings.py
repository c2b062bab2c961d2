"""Configuration: environment variables only, validated once at start-up.

Every error names the variable and the form it accepts, so a bad deploy stops at start-up with a
message an operator can act on, never later inside a consumer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from workers.books import parse_genre_buckets

T = TypeVar("T")

# SQS limits that bound several settings.
MAX_WAIT_TIME_SECONDS = 20
MAX_VISIBILITY_SECONDS = 43_200


class ConfigError(ValueError):
    """A configuration variable has a value Shelver cannot use."""


@dataclass(frozen=True)
class Settings:
    input_queue: str = "InputQueue.fifo"
    genre_buckets: Mapping[str, str] = field(
        default_factory=lambda: {"scifi": "scifi", "romance": "romance"}
    )
    consumers: int = 2
    consumer_threads: int = 4
    wait_time_seconds: int = 20
    poll_interval_seconds: float = 0.0
    visibility_ceiling_seconds: int = 3_600
    retry_backoff_base_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0
    heartbeat_timeout_seconds: float = 60.0
    stop_timeout_seconds: float = 30.0
    health_max_poll_age_seconds: float = 60.0
    queue_sample_seconds: float = 15.0
    state_dir: str = ""
    log_level: str = "INFO"
    s3_client: str = "crt"
    sqs_client: str = "crt"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        values = {
            field_name: _read(env, variable, form, getattr(defaults, field_name))
            for field_name, (variable, form) in _VARIABLES.items()
        }
        settings = cls(**values, state_dir=env.get("SHELVER_STATE_DIR", ""))
        settings.check_consistency()
        _check_region(env)
        _check_crt_clients(settings, env)
        return settings

    def check_consistency(self) -> None:
        """Cross-variable rules: each names both variables involved."""
        # A consumer blocked in a long poll does not beat; the timeouts must leave room for it.
        from workers.aws import receive_call_limit  # boto3 is heavy; only needed here

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


@dataclass(frozen=True)
class _Form:
    """How a variable is parsed, and how its accepted form is told to the operator."""

    parse: Callable[[str], Any]
    accepted: str


def _read(env: Mapping[str, str], name: str, form: _Form, default: T) -> T:
    raw = env.get(name)
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


def _check_region(env: Mapping[str, str]) -> None:
    """Fail at start-up, not in every consumer, when boto3 would not know which region to call."""
    from workers.aws import make_session  # boto3 is heavy; only needed here

    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or make_session().region_name:
        return
    raise ConfigError("AWS_REGION is not set (nor AWS_DEFAULT_REGION, nor a region in the AWS "
                      "profile): expected a region name such as us-east-1")


def _aws_client(raw: str) -> str:
    from workers.aws import AWS_CLIENTS  # boto3 is heavy; only needed here

    client = raw.lower()
    if client not in AWS_CLIENTS:
        raise ValueError(f"unknown client {raw}")
    return client


def _check_crt_clients(settings: Settings, env: Mapping[str, str]) -> None:
    """A CRT client must be installed, and able to reach AWS the way boto3 would."""
    chosen = [name for name, client in (("S3_CLIENT", settings.s3_client),
                                        ("SQS_CLIENT", settings.sqs_client)) if client == "crt"]
    if not chosen:
        return
    try:
        from workers import s3crt, sqscrt
        from workers.crt import UnsupportedByCrt
    except ImportError as exc:
        raise ConfigError(f"{chosen[0]}=crt needs the awscrt package ({exc}): install "
                          f"requirements/app.txt, or set {chosen[0]}=boto3") from None
    from workers.aws import make_session

    session = make_session(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"))
    try:
        if settings.s3_client == "crt":
            s3crt.check_supported(session.client("s3"), settings.genre_buckets)
    except UnsupportedByCrt as exc:
        raise ConfigError(f"S3_CLIENT=crt cannot be used: {exc}; set S3_CLIENT=boto3") from None
    try:
        if settings.sqs_client == "crt":
            sqscrt.check_supported(session.client("sqs"))
    except UnsupportedByCrt as exc:
        raise ConfigError(f"SQS_CLIENT=crt cannot be used: {exc}; set SQS_CLIENT=boto3") from None


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
    "log_level": ("LOG_LEVEL", _Form(_log_level, "one of DEBUG, INFO, WARNING, ERROR")),
    "s3_client": ("S3_CLIENT", _Form(_aws_client, "crt or boto3")),
    "sqs_client": ("SQS_CLIENT", _Form(_aws_client, "crt or boto3")),
}
