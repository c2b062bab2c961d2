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


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`osls package --stage prod`: the CloudFormation a real deploy would send (offline)."""
    out = tmp_path_factory.mktemp("package")
    # No AWS variables: packaging needs no account, and must not find one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    subprocess.run(["npx", "--no", "osls", "package", "--stage", "prod", "--package", str(out)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    return out
