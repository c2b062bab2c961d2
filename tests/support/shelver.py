"""Run a real `gunicorn -c gunicorn.conf.py` for a test, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.multiprocess import MultiProcessCollector

from scripts.emulator import free_port
from tests.support.aws import wait_until
from workers.status import read_pool

REPO = Path(__file__).resolve().parents[2]
GUNICORN = REPO / ".venv" / "bin" / "gunicorn"
# The console script `make install` puts in the venv.
SHELVER_CLI = REPO / ".venv" / "bin" / "shelver"

# Fast settings for tests: short long-polls so shutdowns and restarts are quick.
TEST_DEFAULTS = {
    "WAIT_TIME_SECONDS": "1",
    "CONSUMERS": "2",
    "CONSUMER_THREADS": "4",
    "WEB_CONCURRENCY": "2",
    "RETRY_BACKOFF_BASE_SECONDS": "1",
    "RETRY_BACKOFF_MAX_SECONDS": "2",
    "CONSUMER_STOP_TIMEOUT_SECONDS": "20",
    "HEALTH_MAX_POLL_AGE_SECONDS": "15",
    "CONSUMER_HEARTBEAT_TIMEOUT_SECONDS": "30",
    "QUEUE_SAMPLE_SECONDS": "1",
}


@dataclass
class Response:
    status: int
    body: Any


@dataclass
class Endpoint:
    """Shelver's HTTP API on a loopback port, whatever runs it (a gunicorn here, a container)."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exit_code(self) -> int | None:
        """The exit code once whatever serves the port has ended; None while it runs."""
        return None

    def log(self) -> str:
        return ""

    def wait_healthy(self, timeout: float = 60) -> Response:
        def healthy() -> Response | None:
            code = self.exit_code()
            if code is not None:
                raise AssertionError(f"Shelver exited with {code}:\n{self.log()}")
            try:
                response = self.get("/health")
            except TimeoutError:
                # Connected, but no HTTP worker has taken the connection yet: the kernel queues
                # it while the workers boot, which on a loaded machine (16 consumers starting)
                # can take longer than one request's timeout. Starting, not failing.
                return None
            return response if response.status == 200 else None
        return wait_until(healthy, timeout, what=f"/health 200 on {self.url}")  # type: ignore[no-any-return]

    def request(self, method: str, path: str) -> Response:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                return Response(answer.status, _decode(answer.read()))
        except urllib.error.HTTPError as error:
            return Response(error.code, _decode(error.read()))
        except (urllib.error.URLError, ConnectionError):
            return Response(0, None)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str) -> Response:
        return self.request("POST", path)

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        req = urllib.request.Request(self.url + "/metrics")
        with urllib.request.urlopen(req, timeout=10) as answer:
            text = answer.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def consumer_pids(self) -> list[int]:
        return [c["pid"] for c in self.get("/health").body["consumers"]]


@dataclass
class Shelver(Endpoint):
    env: dict[str, str] = field(default_factory=dict)
    run_dir: Path = Path()
    port: int = field(default_factory=free_port)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Settings applied under `env`; the benchmark passes {} to run Shelver's own defaults.
    defaults: dict[str, str] = field(default_factory=lambda: dict(TEST_DEFAULTS))
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"gunicorn-{self.port}.log"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / f"state-{self.port}"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / f"metrics-{self.port}"

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "PROMETHEUS_", "SHELVER_"))}
        env.update(self.defaults)
        env.update(self.env)
        env.update({
            "BIND": f"127.0.0.1:{self.port}",
            "SHELVER_STATE_DIR": str(self.state_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            # Found in /proc/<pid>/environ of every process this Shelver starts.
            "SHELVER_TEST_MARKER": self.marker,
        })
        return env

    def start(self) -> Shelver:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(GUNICORN), "-c", "gunicorn.conf.py"], cwd=REPO, env=self.full_env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def counter_totals(self) -> dict[str, float]:
        """Each counter summed over its labels and processes, read from the Prometheus files
        of this Shelver's processes: still there after it stopped, when /metrics is gone."""
        files = [str(path) for path in self.metrics_dir.glob("counter_*.db")]
        totals: dict[str, float] = {}
        for family in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `shelver` command with this Shelver's environment, as an operator in its pod.
        PYTHONPATH pins this checkout: the venv's editable install may point at another one."""
        return subprocess.run([str(SHELVER_CLI), *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout,
                              env={**self.full_env(), "PYTHONPATH": str(REPO)})

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def processes(self) -> list[int]:
        """Every live process carrying this Shelver's marker (master, workers, consumers)."""
        needle = f"SHELVER_TEST_MARKER={self.marker}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
            if needle in environ.split(b"\0") and not zombie:
                found.append(int(entry))
        return found

    def roles(self) -> dict[int, str]:
        """Every live process of this Shelver by role: "master", "http worker", "consumer", or
        "resource tracker" (multiprocessing's, started with the first consumer)."""
        assert self.process is not None
        consumers = {slot.pid for slot in read_pool(self.state_dir) if slot.pid}
        found = {}
        for pid in self.processes():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if pid == self.process.pid:
                found[pid] = "master"
            elif pid in consumers:
                found[pid] = "consumer"
            elif b"resource_tracker" in cmdline:
                found[pid] = "resource tracker"
            else:
                found[pid] = "http worker"
        return found

    def stop(self) -> None:
        """TERM, wait, then KILL anything of ours still alive: a test never leaks processes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")
