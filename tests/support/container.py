"""Shelver's image run by a real container engine, the way an orchestrator runs it: read-only
root, uid 10001, a tmpfs for /tmp, the host's network (the only kind this machine has) and the
test session's LocalStack."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from scripts.container import Engine
from scripts.emulator import free_port
from tests.support.shelver import TEST_DEFAULTS, Endpoint

RUN_AS = "10001:10001"


@dataclass
class ShelverContainer(Endpoint):
    engine: Engine = field(default_factory=lambda: Engine("podman"))
    image: str = ""
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    name: str = field(default_factory=lambda: f"shelver-test-{uuid.uuid4().hex[:10]}")

    def start(self) -> ShelverContainer:
        env = {**TEST_DEFAULTS, **self.env, "BIND": f"127.0.0.1:{self.port}"}
        args = ["run", "--detach", "--name", self.name, "--read-only", "--user", RUN_AS,
                "--tmpfs", "/tmp",
                # No systemd here to time the HEALTHCHECK; the tests run it themselves.
                "--health-interval", "disable"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        self.engine.run(*args, self.image, capture=True)
        return self

    def inspect(self) -> dict[str, Any]:
        out = self.engine.run("container", "inspect", self.name, capture=True).stdout
        info: dict[str, Any] = orjson.loads(out)[0]
        return info

    def exit_code(self) -> int | None:
        state = self.inspect()["State"]
        return None if state["Running"] else int(state["ExitCode"])

    def host_pid(self) -> int:
        """The container's PID 1 (gunicorn's master) as the host sees it."""
        return int(self.inspect()["State"]["Pid"])

    def exec(self, *command: str) -> subprocess.CompletedProcess[bytes]:
        return self.engine.run("exec", self.name, *command, check=False, capture=True)

    def healthcheck(self) -> int:
        """Run the image's HEALTHCHECK once; its exit code (0 = healthy)."""
        return self.engine.run("healthcheck", "run", self.name, check=False,
                               capture=True).returncode

    def stop(self, grace_seconds: int) -> int:
        """`stop`: SIGTERM, SIGKILL after `grace_seconds`; the container's exit code."""
        self.engine.run("stop", "--time", str(grace_seconds), self.name, capture=True,
                        timeout=grace_seconds + 60)
        code = self.exit_code()
        assert code is not None
        return code

    def kill(self) -> None:
        self.engine.run("kill", "--signal", "KILL", self.name, capture=True)

    def log(self) -> str:
        result = self.engine.run("logs", self.name, check=False, capture=True)
        return (result.stdout + result.stderr).decode(errors="replace")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.engine.run("rm", "--force", "--time", "0", self.name, check=False,
                            capture=True, timeout=60)
