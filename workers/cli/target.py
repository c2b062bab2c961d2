"""Where a `shelver` command sends its AWS calls: `--local`, `--endpoint-url`, `--region`.

Every client a command makes (boto3's, and the CRT ones `check` may use) reads the standard AWS
variables, so the options are applied there, once, before any client exists. `--local` aims the
whole command at the local emulator of `make run` and makes sure nothing of the shell can send
it elsewhere: no profile, no config or credentials file, no service-specific endpoint, and the
emulator's dummy credentials instead of any real ones (a real key would otherwise be used, and
one mistyped option away from real AWS).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import MutableMapping
from urllib.parse import urlsplit

from workers.settings import ConfigError

# make run's emulator; `make shelver` passes --endpoint-url for another LOCALSTACK_PORT.
LOCAL_ENDPOINT = "http://127.0.0.1:4566"
LOCAL_REGION = "us-east-1"
# LocalStack accepts any; these are the ones its documentation and `make run` use.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
# What could send a call elsewhere than the emulator, or sign it with someone's real key.
_ELSEWHERE = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
              "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where the AWS calls go (default: the standard AWS "
                                      "configuration, as the service uses it)")
    where.add_argument(
        "--local", action="store_true",
        help=f"the local emulator of `make run`: {LOCAL_ENDPOINT} (another port: with "
             "--endpoint-url), "
             f"region {LOCAL_REGION}, its dummy credentials; AWS profiles, credentials and "
             "endpoints of the environment are ignored, so nothing reaches real AWS")
    where.add_argument("--endpoint-url", metavar="URL",
                       help="send every call to this endpoint (AWS_ENDPOINT_URL)")
    where.add_argument("--region", help="the AWS region (AWS_REGION)")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def apply(args: argparse.Namespace, env: MutableMapping[str, str]) -> str | None:
    """Set `env` (the process's environment) for the options; return the endpoint chosen, if
    any. Raises ConfigError for a `--local` aimed anywhere but this machine."""
    endpoint: str | None = args.endpoint_url
    if args.local:
        endpoint = endpoint or LOCAL_ENDPOINT
        if not is_loopback(endpoint):
            raise ConfigError(f"--local with --endpoint-url {endpoint}: the local emulator "
                              "listens on 127.0.0.1 only")
        for name in [*_ELSEWHERE, *(n for n in env if n.startswith("AWS_ENDPOINT_URL_"))]:
            env.pop(name, None)
        # Neither ~/.aws/config nor ~/.aws/credentials: a profile there may name a role, an
        # endpoint, a credential process.
        env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        env.update(LOCAL_CREDENTIALS)
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = args.region or LOCAL_REGION
    elif args.region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = args.region
    if endpoint is not None:
        for name in [n for n in env if n.startswith("AWS_ENDPOINT_URL_")]:
            env.pop(name)  # a service's own endpoint would win over the one asked for
        env["AWS_ENDPOINT_URL"] = endpoint
    return endpoint
