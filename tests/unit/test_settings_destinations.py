"""The destination and payload variables of workers/settings.py (issue 18): parsed with
workers.destinations, each genre's `Destination` assembled, and every error naming the variable,
the genre and the accepted form."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.destinations import Destination, Encryption, Sse
from workers.settings import DEFAULT_PAYLOAD_MAX_BYTES, ConfigError, Settings

REGION = {"AWS_REGION": "us-east-1"}
KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def load(**variables: str) -> Settings:
    return Settings.from_env({**REGION, **variables})


def test_without_the_new_variables_a_destination_is_its_bucket_alone() -> None:
    settings = load(GENRE_BUCKETS="scifi=scifi,romance=romance")

    assert settings.destinations == {"scifi": Destination("scifi", "scifi"),
                                      "romance": Destination("romance", "romance")}
    assert settings.payload_buckets == frozenset()
    assert settings.payload_max_bytes == DEFAULT_PAYLOAD_MAX_BYTES == 10 * 1024 * 1024
    assert settings.payload_delete is False


def test_every_destination_variable_with_a_default_entry() -> None:
    settings = load(GENRE_BUCKETS="scifi=acme-scifi,romance=acme-romance",
                    GENRE_KEY_PREFIXES="*=books/,romance=",
                    GENRE_ENCRYPTION=f"*=SSE-KMS:{KEY},romance=SSE-S3",
                    GENRE_BUCKET_OWNERS="*=111122223333",
                    GENRE_STORAGE_CLASSES="scifi=standard_ia",
                    PAYLOAD_BUCKETS="acme-payloads, acme-payloads-eu",
                    PAYLOAD_MAX_BYTES="2097152", PAYLOAD_DELETE="TRUE")

    assert settings.destinations == {
        "scifi": Destination("scifi", "acme-scifi", "books/", Encryption(Sse.KMS, KEY),
                             "111122223333", "STANDARD_IA"),
        "romance": Destination("romance", "acme-romance", "", Encryption(Sse.S3),
                               "111122223333", None),
    }
    assert settings.payload_buckets == {"acme-payloads", "acme-payloads-eu"}
    assert settings.payload_max_bytes == 2_097_152
    assert settings.payload_delete is True


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("GENRE_KEY_PREFIXES", "scifi=books/scifi", "genre 'scifi'): prefix 'books/scifi' does not "
                                                "end with '/'"),
    ("GENRE_ENCRYPTION", "romance=SSE-KMS:alias/books", "genre 'romance'"),
    ("GENRE_BUCKET_OWNERS", "*=1234", "genre '*'): '1234' is not a 12-digit AWS account id"),
    ("GENRE_STORAGE_CLASSES", "scifi=GLACIER", "genre 'scifi'): 'GLACIER' is not one of"),
    ("PAYLOAD_BUCKETS", "acme-payloads,Bad_Bucket", "entry 2"),
    ("PAYLOAD_MAX_BYTES", "100", "100 is out of range"),
    ("PAYLOAD_DELETE", "yes", "'yes' is neither true nor false"),
])
def test_a_bad_value_names_the_variable_the_genre_and_the_accepted_form(
        variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(**{variable: value})

    message = str(error.value)
    assert message.startswith(f"{variable}={value!r} is not valid: expected ")
    assert says in message


@pytest.mark.parametrize("variable", ["GENRE_KEY_PREFIXES", "GENRE_ENCRYPTION",
                                      "GENRE_BUCKET_OWNERS", "GENRE_STORAGE_CLASSES"])
def test_the_accepted_form_is_told(variable: str) -> None:
    with pytest.raises(ConfigError, match=r"expected genre=\w+ pairs separated by commas"):
        load(**{variable: "scifi"})


def test_a_genre_not_in_genre_buckets_is_an_error_naming_both_variables() -> None:
    with pytest.raises(ConfigError, match="GENRE_STORAGE_CLASSES names genre 'horror', which "
                                          "GENRE_BUCKETS does not"):
        load(GENRE_BUCKETS="scifi=scifi", GENRE_STORAGE_CLASSES="horror=STANDARD")


def test_the_config_file_sets_them_unquoted_with_a_default_entry(tmp_path: Path) -> None:
    config = tmp_path / "shelver.env"
    config.write_text("GENRE_BUCKET_OWNERS=*=111122223333\nGENRE_KEY_PREFIXES='*=books/'\n")

    settings = load(SHELVER_CONFIG_FILE=str(config))

    assert {d.expected_owner for d in settings.destinations.values()} == {"111122223333"}
    assert {d.key_prefix for d in settings.destinations.values()} == {"books/"}
