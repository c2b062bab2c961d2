"""Session fixtures for the end-to-end tests: a real LocalStack on a free loopback port, with
serverless.yml deployed into it by the real Serverless CLI (osls)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.emulator import FAKE_AWS_ENV, LocalStack, deploy, free_port
from tests.support.aws import Aws, Stack
from tests.support.proxy import FaultProxy


@pytest.fixture(scope="session")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("localstack")
    with LocalStack(port=free_port(), data_dir=data_dir / "state") as emulator:
        deploy("local", emulator.port)
        yield emulator


@pytest.fixture(scope="session")
def aws_env(localstack: LocalStack) -> dict[str, str]:
    """What a Shelver (or any boto3 client) needs to talk to the test emulator."""
    return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": localstack.endpoint}


@pytest.fixture(scope="session")
def aws(aws_env: dict[str, str]) -> Aws:
    return Aws(aws_env)


@pytest.fixture
def stack(aws: Aws) -> Iterator[Stack]:
    """A fresh queue pair and genre buckets cloned from the deployed serverless.yml stack, so
    each test starts empty and FIFO deduplication of an earlier test cannot interfere."""
    with aws.cloned_stack() as clone:
        yield clone


@pytest.fixture
def s3_proxy(aws_env: dict[str, str]) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test emulator, for a Shelver's `AWS_ENDPOINT_URL_S3`."""
    with FaultProxy(aws_env["AWS_ENDPOINT_URL"]) as proxy:
        yield proxy


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def pytest_configure(config: pytest.Config) -> None:
    # Unit tests use moto in-process; make sure no stray real credentials are ever used.
    os.environ.setdefault("AWS_REGION", "us-east-1")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
