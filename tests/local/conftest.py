"""`make run` as a newcomer runs it, on free loopback ports and a run directory of the test's
own: the real make, the real scripts/run_local.py, LocalStack, osls and gunicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pytest

from scripts.emulator import FAKE_AWS_ENV, default_run_path, free_port, health
from tests.support.aws import Aws, wait_until
from tests.support.listeners import command, descendants, pids, session_members
from workers.settings import ENVIRONMENT_VARIABLES

REPO = Path(__file__).resolve().parents[2]
# A make that runs us (`make test`) must not pass its flags and level to the make we run.
_MAKE_VARIABLES = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
# Starting LocalStack, deploying and booting gunicorn on a loaded 2-core machine.
START_TIMEOUT = 420.0
# gunicorn's stop deadline with the defaults is 67 s (README, Configuration).
STOP_TIMEOUT = 180.0


@dataclass
class LocalStackPlace:
    """Where a test's `make run`s put their emulator and files."""

    port: int
    http_port: int
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return default_run_path(self.port, ".pid", self.run_dir)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **overrides: str) -> dict[str, str]:
        """A clean environment: none of the caller's AWS or Shelver settings."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and k not in ENVIRONMENT_VARIABLES
               and k not in _MAKE_VARIABLES}
        env.update(LOCALSTACK_PORT=str(self.port), BIND=f"127.0.0.1:{self.http_port}",
                   RUN_DIR=str(self.run_dir), **overrides)
        return env

    def aws(self) -> Aws:
        return Aws({**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.endpoint})

    def emulator_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def emulators(self) -> list[int]:
        """Every LocalStack process serving this port (whoever started it)."""
        found = []
        for pid in pids():
            if "localstack_runtime.py" not in command(pid):
                continue
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if f"GATEWAY_LISTEN=127.0.0.1:{self.port}".encode() in environ:
                    found.append(pid)
        return found

    def make(self, target: str, overrides: dict[str, str] | None = None,
             timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`make <target>` to its end."""
        return subprocess.run(["make", "--no-print-directory", target], cwd=REPO,
                              env=self.env(**(overrides or {})), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def stop_emulator(self) -> None:
        """`make emulator-down`, then a kill of anything left on the port (a test that failed
        half-way must not leave an emulator behind)."""
        self.make("emulator-down", timeout=120)
        for pid in self.emulators():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@dataclass
class MakeRun:
    """One `make run`, in a session of its own as in a terminal: its process group is the one
    a Ctrl-C reaches."""

    place: LocalStackPlace
    log_path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, target: str = "run") -> Self:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["make", "--no-print-directory", target], cwd=REPO,
                env=self.place.env(**self.overrides), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processes(self) -> list[int]:
        """Every live process of the run's session: make and all it started but LocalStack,
        which runs in a session of its own."""
        return session_members(self.pid)

    def describe(self, processes: list[int]) -> str:
        return "\n".join(f"  {pid}: {command(pid)[:160]}" for pid in processes)

    def _running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None and not self.processes():
            raise AssertionError(f"make run ended ({self.proc.returncode}):\n{self.log()[-4000:]}")

    def serving(self) -> bool:
        self._running()
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.place.http_port}/health/live", timeout=5) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_serving(self) -> None:
        wait_until(self.serving, START_TIMEOUT, 0.5, "make run serving /health/live")

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        def seen() -> bool:
            self._running()
            return predicate()
        wait_until(seen, START_TIMEOUT, 0.05, what)

    def signal_group(self, signum: int, times: int = 1, gap: float = 0.0) -> None:
        """As a terminal does on Ctrl-C (SIGINT), or `kill -TERM -<pgid>`, `times` in a row."""
        for sent in range(times):
            if sent and gap:
                time.sleep(gap)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def wait_stopped(self) -> None:
        """Until make and everything it started have ended (make may end first: on SIGINT it
        does not wait for its recipe)."""
        assert self.proc is not None
        try:
            wait_until(lambda: self.proc is not None and self.proc.poll() is not None
                       and not self.processes(), STOP_TIMEOUT, 0.2, "make run's processes ended")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; left:\n{self.describe(self.processes())}\n"
                                 f"log:\n{self.log()[-4000:]}") from None

    def kill(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


MakeRunFactory = Callable[..., MakeRun]


@pytest.fixture
def place(tmp_path: Path) -> Iterator[LocalStackPlace]:
    """Free ports and a run directory; the emulator stopped after the test."""
    place = LocalStackPlace(port=free_port(), http_port=free_port(), run_dir=tmp_path / "run")
    yield place
    place.stop_emulator()
    assert place.emulators() == []


@pytest.fixture
def make_run(place: LocalStackPlace, tmp_path: Path) -> Iterator[MakeRunFactory]:
    """Start `make run`s on the test's place; any still running after the test are killed."""
    runs: list[MakeRun] = []

    def start(**overrides: str) -> MakeRun:
        run = MakeRun(place, tmp_path / f"make-run-{len(runs)}.log", overrides).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def emulator_ready(place: LocalStackPlace) -> bool:
    states = health(place.endpoint)
    return states is not None


def emulator_tree(place: LocalStackPlace) -> list[int]:
    return [pid for emulator in place.emulators() for pid in descendants(emulator)]
