"""`shelver --local`: every AWS setting of the shell that could send a call elsewhere, or sign
it with a real key, is replaced or removed before any client exists."""

from __future__ import annotations

import argparse
import os

import pytest

from workers.cli import build_parser, target
from workers.settings import ConfigError

SHELL = {"AWS_PROFILE": "production", "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
         "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
         "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_SQS": "https://sqs.eu-west-1.amazonaws.com",
         "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/prod"}


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args([*argv, "dlq", "stats"])


def test_local_aims_everything_at_the_emulator_and_drops_the_shells_aws_settings() -> None:
    env = dict(SHELL)
    assert target.apply(parsed("--local"), env) == "http://127.0.0.1:4566"
    assert env == {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
                   "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def test_local_refuses_an_endpoint_off_this_machine() -> None:
    with pytest.raises(ConfigError, match=r"the local emulator listens on 127\.0\.0\.1 only"):
        target.apply(parsed("--local", "--endpoint-url", "https://sqs.amazonaws.com"), {})


def test_endpoint_and_region_alone_change_only_those() -> None:
    env = dict(SHELL)
    target.apply(parsed("--endpoint-url", "http://127.0.0.1:9000", "--region", "us-west-2"), env)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert "AWS_ENDPOINT_URL_SQS" not in env  # it would win over the endpoint asked for
    assert (env["AWS_REGION"], env["AWS_PROFILE"]) == ("us-west-2", "production")


def test_without_options_nothing_changes() -> None:
    env = dict(SHELL)
    assert target.apply(parsed(), env) is None
    assert env == SHELL
