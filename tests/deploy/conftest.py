"""What the deploy tests share: the CloudFormation a real deploy would send."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What `osls package` writes: the stack osls creates first (its deployment bucket alone), and
# the whole stack it then updates that one to.
CREATE_TEMPLATE = "cloudformation-template-create-stack.json"
UPDATE_TEMPLATE = "cloudformation-template-update-stack.json"
TEMPLATES = (CREATE_TEMPLATE, UPDATE_TEMPLATE)


def package_stack(out: Path, params: dict[str, str] | None = None) -> Path:
    """`osls package --stage prod` into `out`, with `--param`s: the CloudFormation a real
    deploy would send (offline)."""
    # No AWS variables: packaging needs no account, and must not find one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    subprocess.run(["npx", "--no", "osls", "package", "--stage", "prod", "--package", str(out),
                    *(f"--param={name}={value}" for name, value in (params or {}).items())],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack packaged with serverless.yml's default parameters."""
    return package_stack(tmp_path_factory.mktemp("package"))
