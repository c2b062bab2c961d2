from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workers.settings import ConfigError, Settings, read_log_format

REGION = {"AWS_REGION": "us-east-1"}


def load(**variables: str) -> Settings:
    return Settings.from_env({**REGION, **variables})


def test_defaults_when_only_the_region_is_set() -> None:
    settings = Settings.from_env(dict(REGION))

    assert settings == Settings()
    assert settings.input_queue == "InputQueue.fifo"
    assert dict(settings.genre_buckets) == {"scifi": "scifi", "romance": "romance"}
    assert settings.consumers == 4
    assert settings.consumer_threads == 8
    assert settings.wait_time_seconds == 20
    assert settings.poll_interval_seconds == 0.0
    assert settings.visibility_ceiling_seconds == 3_600
    assert settings.retry_backoff_base_seconds == 2.0
    assert settings.retry_backoff_max_seconds == 300.0
    assert settings.heartbeat_timeout_seconds == 60.0
    assert settings.stop_timeout_seconds == 30.0
    assert settings.health_max_poll_age_seconds == 60.0
    assert settings.queue_sample_seconds == 15.0
    assert settings.crash_dead_letter_after == 3
    assert settings.state_dir == ""
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.s3_client == settings.sqs_client == "crt"


def test_blank_values_fall_back_to_the_defaults() -> None:
    assert load(CONSUMERS="", WAIT_TIME_SECONDS="  ", LOG_LEVEL="") == Settings()


def test_values_are_parsed_trimmed_and_normalized(tmp_path: Path) -> None:
    settings = load(
        INPUT_QUEUE="https://sqs.us-east-1.amazonaws.com/123456789012/Books.fifo",
        GENRE_BUCKETS=" SciFi = scifi-books , romance=romance.books ",
        CONSUMERS=" 8 ",
        CONSUMER_THREADS="16",
        WAIT_TIME_SECONDS="0",
        POLL_INTERVAL_SECONDS="2.5",
        VISIBILITY_CEILING_SECONDS="43200",
        RETRY_BACKOFF_BASE_SECONDS="1.5",
        RETRY_BACKOFF_MAX_SECONDS="1.5",
        CONSUMER_HEARTBEAT_TIMEOUT_SECONDS="8.5",
        CONSUMER_STOP_TIMEOUT_SECONDS="3600",
        HEALTH_MAX_POLL_AGE_SECONDS="2.6",
        QUEUE_SAMPLE_SECONDS="1",
        CRASH_DEAD_LETTER_AFTER=" 1 ",
        SHELVER_STATE_DIR=str(tmp_path),
        LOG_LEVEL="debug",
        S3_CLIENT=" BOTO3 ",
        SQS_CLIENT="Boto3",
    )

    assert settings.input_queue.endswith("/Books.fifo")
    assert dict(settings.genre_buckets) == {"scifi": "scifi-books", "romance": "romance.books"}
    assert settings.consumers == 8
    assert settings.consumer_threads == 16
    assert settings.wait_time_seconds == 0
    assert settings.poll_interval_seconds == 2.5
    assert settings.visibility_ceiling_seconds == 43_200
    assert settings.retry_backoff_base_seconds == settings.retry_backoff_max_seconds == 1.5
    assert settings.heartbeat_timeout_seconds == 8.5
    assert settings.stop_timeout_seconds == 3600
    assert settings.health_max_poll_age_seconds == 2.6
    assert settings.queue_sample_seconds == 1
    assert settings.crash_dead_letter_after == 1
    assert settings.state_dir == str(tmp_path)
    assert settings.log_level == "DEBUG"
    assert settings.s3_client == settings.sqs_client == "boto3"


INT_1_64 = "an integer from 1 to 64"
SECONDS_0_43200 = "seconds from 0 to 43200"
SECONDS_1_86400 = "seconds from 1 to 86400"
GENRE_FORM = "genre=bucket pairs separated by commas"


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("CONSUMERS", "0", INT_1_64),
        ("CONSUMERS", "65", INT_1_64),
        ("CONSUMERS", "-1", INT_1_64),
        ("CONSUMERS", "abc", INT_1_64),
        ("CONSUMERS", "1.5", INT_1_64),
        ("CONSUMER_THREADS", "0", INT_1_64),
        ("CONSUMER_THREADS", "many", INT_1_64),
        ("WAIT_TIME_SECONDS", "21", "an integer from 0 to 20"),
        ("WAIT_TIME_SECONDS", "-1", "an integer from 0 to 20"),
        ("WAIT_TIME_SECONDS", "ten", "an integer from 0 to 20"),
        ("POLL_INTERVAL_SECONDS", "-0.5", "seconds from 0 to 3600"),
        ("POLL_INTERVAL_SECONDS", "3601", "seconds from 0 to 3600"),
        ("POLL_INTERVAL_SECONDS", "nan", "seconds from 0 to 3600"),
        ("POLL_INTERVAL_SECONDS", "inf", "seconds from 0 to 3600"),
        ("VISIBILITY_CEILING_SECONDS", "0", "an integer from 1 to 43200"),
        ("VISIBILITY_CEILING_SECONDS", "43201", "an integer from 1 to 43200"),
        ("RETRY_BACKOFF_BASE_SECONDS", "-1", SECONDS_0_43200),
        ("RETRY_BACKOFF_BASE_SECONDS", "2s", SECONDS_0_43200),
        ("RETRY_BACKOFF_MAX_SECONDS", "43201", SECONDS_0_43200),
        ("CONSUMER_HEARTBEAT_TIMEOUT_SECONDS", "0", SECONDS_1_86400),
        ("CONSUMER_HEARTBEAT_TIMEOUT_SECONDS", "86401", SECONDS_1_86400),
        ("CONSUMER_STOP_TIMEOUT_SECONDS", "0.5", "seconds from 1 to 3600"),
        ("HEALTH_MAX_POLL_AGE_SECONDS", "0", SECONDS_1_86400),
        ("QUEUE_SAMPLE_SECONDS", "3601", "seconds from 1 to 3600"),
        ("CRASH_DEAD_LETTER_AFTER", "0", "an integer from 1 to 1000"),
        ("CRASH_DEAD_LETTER_AFTER", "1001", "an integer from 1 to 1000"),
        ("CRASH_DEAD_LETTER_AFTER", "three", "an integer from 1 to 1000"),
        ("GENRE_BUCKETS", "bad", GENRE_FORM),
        ("GENRE_BUCKETS", "scifi=", GENRE_FORM),
        ("GENRE_BUCKETS", "=scifi", GENRE_FORM),
        ("GENRE_BUCKETS", "scifi=Sci_Fi", GENRE_FORM),
        ("GENRE_BUCKETS", "scifi=a..b", GENRE_FORM),
        ("GENRE_BUCKETS", "scifi=one,SCIFI=two", GENRE_FORM),
        ("GENRE_BUCKETS", "scifi=scifi,,romance=romance", GENRE_FORM),
        ("LOG_LEVEL", "loud", "one of DEBUG, INFO, WARNING, ERROR"),
        ("LOG_LEVEL", "critical", "one of DEBUG, INFO, WARNING, ERROR"),
        ("LOG_FORMAT", "xml", "text or json"),
        ("LOG_FORMAT", "logfmt", "text or json"),
        ("S3_CLIENT", "fast", "crt or boto3"),
        ("SQS_CLIENT", "crt2", "crt or boto3"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_accepted_form(
    name: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(**{name: value})

    message = str(raised.value)
    assert message.startswith(f"{name}={value!r} is not valid")
    assert f"expected {accepted}" in message


def test_config_error_is_a_value_error() -> None:
    # Callers that catch ValueError around configuration keep working.
    with pytest.raises(ValueError, match="CONSUMERS"):
        load(CONSUMERS="0")


@pytest.mark.parametrize(
    ("variables", "names"),
    [
        (
            {"WAIT_TIME_SECONDS": "20", "CONSUMER_HEARTBEAT_TIMEOUT_SECONDS": "28"},
            ("CONSUMER_HEARTBEAT_TIMEOUT_SECONDS", "WAIT_TIME_SECONDS"),
        ),
        (
            {"WAIT_TIME_SECONDS": "10", "CONSUMER_HEARTBEAT_TIMEOUT_SECONDS": "3"},
            ("CONSUMER_HEARTBEAT_TIMEOUT_SECONDS", "WAIT_TIME_SECONDS"),
        ),
        (
            {"WAIT_TIME_SECONDS": "20", "POLL_INTERVAL_SECONDS": "10",
             "HEALTH_MAX_POLL_AGE_SECONDS": "30"},
            ("HEALTH_MAX_POLL_AGE_SECONDS", "WAIT_TIME_SECONDS", "POLL_INTERVAL_SECONDS"),
        ),
        (
            {"WAIT_TIME_SECONDS": "20", "HEALTH_MAX_POLL_AGE_SECONDS": "15"},
            ("HEALTH_MAX_POLL_AGE_SECONDS", "WAIT_TIME_SECONDS", "POLL_INTERVAL_SECONDS"),
        ),
        (
            {"RETRY_BACKOFF_BASE_SECONDS": "10", "RETRY_BACKOFF_MAX_SECONDS": "9.5"},
            ("RETRY_BACKOFF_MAX_SECONDS", "RETRY_BACKOFF_BASE_SECONDS"),
        ),
    ],
)
def test_cross_variable_rules_name_every_variable_involved(
    variables: dict[str, str], names: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(**variables)

    for name in names:
        assert name in str(raised.value)


def test_cross_variable_rules_accept_values_just_past_the_limits() -> None:
    settings = load(
        WAIT_TIME_SECONDS="20",
        POLL_INTERVAL_SECONDS="10",
        CONSUMER_HEARTBEAT_TIMEOUT_SECONDS="28.5",
        HEALTH_MAX_POLL_AGE_SECONDS="30.5",
        RETRY_BACKOFF_BASE_SECONDS="10",
        RETRY_BACKOFF_MAX_SECONDS="10",
    )

    assert settings.heartbeat_timeout_seconds == 28.5
    assert settings.health_max_poll_age_seconds == 30.5
    assert settings.retry_backoff_max_seconds == settings.retry_backoff_base_seconds


def test_check_consistency_applies_to_settings_built_in_code() -> None:
    with pytest.raises(ConfigError, match="RETRY_BACKOFF_MAX_SECONDS"):
        Settings(retry_backoff_base_seconds=5, retry_backoff_max_seconds=1).check_consistency()


# -- SHELVER_CONFIG_FILE ------------------------------------------------------------------------
def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "shelver.conf"
    path.write_text(text)
    return str(path)


def test_the_config_file_overrides_the_environment(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\n".join([
        "# genres of this deploy",
        "",
        "  GENRE_BUCKETS = scifi=scifi-books,horror=horror-books  ",
        "   # indented comment",
        'INPUT_QUEUE="Books.fifo"',
        "CONSUMERS='3'",
        "LOG_LEVEL=",  # blank: the default, as in the environment
    ]))

    settings = load(SHELVER_CONFIG_FILE=path, GENRE_BUCKETS="scifi=other", CONSUMER_THREADS="8",
                    LOG_LEVEL="DEBUG")

    assert dict(settings.genre_buckets) == {"scifi": "scifi-books", "horror": "horror-books"}
    assert settings.input_queue == "Books.fifo"
    assert settings.consumers == 3
    assert settings.consumer_threads == 8  # not in the file: from the environment
    assert settings.log_level == "INFO"


def test_the_config_file_is_read_on_every_load(tmp_path: Path) -> None:
    path = config_file(tmp_path, "GENRE_BUCKETS=scifi=scifi\n")
    first = load(SHELVER_CONFIG_FILE=path)
    config_file(tmp_path, "GENRE_BUCKETS=scifi=scifi,horror=horror\n")

    assert dict(first.genre_buckets) == {"scifi": "scifi"}
    assert dict(load(SHELVER_CONFIG_FILE=path).genre_buckets) == {
        "scifi": "scifi", "horror": "horror"}


def test_a_blank_config_file_variable_means_no_file() -> None:
    assert load(SHELVER_CONFIG_FILE="  ") == Settings()


@pytest.mark.parametrize(("text", "complaint"), [
    ("CONSUMERS=2\nGENRE_BUCKETS=scifi\n",
     "line 2: GENRE_BUCKETS='scifi' is not valid: expected genre=bucket pairs"),
    ("# comment\nCONSUMERS=2\n\nWAIT_TIME_SECONDS=30\n",
     "line 4: WAIT_TIME_SECONDS='30' is not valid: expected an integer from 0 to 20"),
    ("CONSUMERS 2\n", "line 1: expected VARIABLE=VALUE, got 'CONSUMERS 2'"),
    ("=2\n", "line 1: expected VARIABLE=VALUE, got '=2'"),
    ("CONSUMERS=2\nBIND=0.0.0.0:80\n",
     "line 2: BIND cannot be set in SHELVER_CONFIG_FILE (it accepts INPUT_QUEUE, GENRE_BUCKETS,"),
    ("AWS_REGION=eu-west-1\n", "line 1: AWS_REGION cannot be set in SHELVER_CONFIG_FILE"),
    ("consumers=2\n", "line 1: consumers cannot be set in SHELVER_CONFIG_FILE"),
    ("CONSUMERS=2\nCONSUMERS=3\n", "line 2: CONSUMERS is already set on line 1"),
])
def test_bad_config_file_content_names_the_file_the_line_and_the_variable(
        tmp_path: Path, text: str, complaint: str) -> None:
    path = config_file(tmp_path, text)

    with pytest.raises(ConfigError) as raised:
        load(SHELVER_CONFIG_FILE=path)

    assert str(raised.value).startswith(f"{path} {complaint}")


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.conf")
    not_utf8 = tmp_path / "latin1.conf"
    not_utf8.write_bytes(b"INPUT_QUEUE=Livres\xe9.fifo\n")

    with pytest.raises(ConfigError, match=r"^SHELVER_CONFIG_FILE='.*missing\.conf' cannot be read"):
        load(SHELVER_CONFIG_FILE=missing)
    with pytest.raises(ConfigError, match=r"^SHELVER_CONFIG_FILE='.*latin1\.conf' cannot be read"):
        load(SHELVER_CONFIG_FILE=str(not_utf8))


def test_cross_variable_rules_apply_to_the_file_and_the_environment_together(
        tmp_path: Path) -> None:
    path = config_file(tmp_path, "RETRY_BACKOFF_MAX_SECONDS=1\n")

    with pytest.raises(ConfigError, match="RETRY_BACKOFF_MAX_SECONDS must be at least"):
        load(SHELVER_CONFIG_FILE=path, RETRY_BACKOFF_BASE_SECONDS="5")


def test_log_format_is_trimmed_and_case_insensitive() -> None:
    assert load(LOG_FORMAT=" JSON ").log_format == "json"
    assert load(LOG_FORMAT="Text").log_format == "text"


@pytest.mark.parametrize(("raw", "expected"), [
    (None, "text"), ("", "text"), (" Json ", "json"), ("text", "text"),
    ("xml", "text"),  # reported by Settings.from_env, which stops start-up
])
def test_read_log_format_alone_for_gunicorns_logger(raw: str | None, expected: str) -> None:
    env = {} if raw is None else {"LOG_FORMAT": raw}
    assert read_log_format(env) == expected


def test_the_settings_are_parsed_and_validated_without_anything_of_aws() -> None:
    # What the settings name is checked against AWS by the preflight (workers/aws/preflight.py).
    code = ("import sys, workers.settings as s; s.Settings.from_env({'AWS_REGION': 'x'}); "
            "print(sorted(m for m in sys.modules"
            "             if m.startswith(('boto', 'awscrt', 'workers.'))))")
    imported = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True).stdout

    assert imported.strip() == "['workers.destinations', 'workers.logs', 'workers.settings']"
