"""The container tests: Shelver's real Dockerfile built and run by a real engine (podman here).

The session fixture installs the engine from Debian if it is missing, makes the base image
locally where no registry answers (scripts/container.py), and builds the image. All three are
cached by the machine: a second session finds the engine, the base image and the build layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from scripts.container import Engine, build_image, ensure_base_image, install_engine
from tests.support.container import ShelverContainer

TEST_IMAGE = "localhost/shelver:test"

ContainerFactory = Callable[..., ShelverContainer]


@pytest.fixture(scope="session")
def engine() -> Engine:
    install_engine()
    return Engine.detect()


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    ensure_base_image(engine)
    build_image(engine, TEST_IMAGE)
    return TEST_IMAGE


@pytest.fixture
def container_factory(engine: Engine, image: str, aws_env: dict[str, str]
                      ) -> Iterator[ContainerFactory]:
    """Start Shelver containers against the session's LocalStack; each is removed after."""
    started: list[ShelverContainer] = []

    def start(**env: str) -> ShelverContainer:
        container = ShelverContainer(engine=engine, image=image, env={**aws_env, **env})
        started.append(container)
        return container.start()

    yield start
    for container in started:
        container.remove()
