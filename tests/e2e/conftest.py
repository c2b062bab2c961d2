from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.aws import Stack
from tests.support.shelver import Shelver

ShelverFactory = Callable[..., Shelver]


@pytest.fixture
def shelver_factory(aws_env: dict[str, str], run_dir: Path) -> Iterator[ShelverFactory]:
    """Start real gunicorn Shelvers; every one is stopped, and checked for leftovers, after."""
    started: list[Shelver] = []

    def start(stack: Stack | None, port: int | None = None, **overrides: str) -> Shelver:
        """`port`: that of an earlier Shelver of the test, to restart it on its state dir."""
        env = {**aws_env, **(stack.shelver_env() if stack else {}), **overrides}
        shelver = (Shelver(env=env, run_dir=run_dir) if port is None
                   else Shelver(env=env, run_dir=run_dir, port=port)).start()
        started.append(shelver)
        return shelver

    yield start
    for shelver in started:
        shelver.stop()
    for shelver in started:
        assert shelver.processes() == [], f"processes left behind:\n{shelver.log()[-3000:]}"
