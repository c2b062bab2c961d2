"""Run LocalStack in host mode (no Docker) and deploy serverless.yml into it with osls.

Used by `make emulator` / `make infra` / `make run` through the CLI below and by the test suite
through `LocalStack` and `deploy`. Standard library only, so it runs with the service venv's
Python 3.11 while LocalStack itself runs from its own Python 3.13 venv (.venv-localstack).

    python scripts/emulator.py up --port 4566
    python scripts/emulator.py deploy --stage local --port 4566 --param genres=scifi,romance
    python scripts/emulator.py status --port 4566
    python scripts/emulator.py down --port 4566

`up` writes the pid to .run/localstack.pid (.run/localstack-<port>.pid on any other port, with
data in .run/localstack-<port>; `--run-dir` for another directory than .run), so emulators on
different ports never clobber each other. It leaves the emulator running: what is in it stays
until `down` (LocalStack keeps its state in memory).

`up` and `deploy` stop what they started when interrupted (SIGTERM, or SIGINT: Ctrl-C), however
many signals come: an emulator not ready yet is stopped, an osls deploy is ended with all its
processes. `make run` (scripts/run_local.py) relies on that.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parent.parent
# LocalStack's runtime, started with its own venv's Python (see that file).
RUNTIME = REPO / "scripts" / "localstack_runtime.py"
HOST = "127.0.0.1"
DEFAULT_PORT = 4566
# What `osls deploy` of serverless.yml touches: CloudFormation drives SQS, S3, IAM (the managed
# policies) and KMS (the stack's key, which encrypts the buckets), and osls asks STS for the
# account.
DEFAULT_SERVICES = "sqs,s3,cloudformation,sts,iam,kms"
# The services Shelver itself talks to; ready means these answer.
REQUIRED_SERVICES = ("sqs", "s3")
READY_STATES = frozenset({"available", "running"})
# Dummy credentials LocalStack accepts; its account is then 000000000000.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would send osls or the serverless-localstack plugin somewhere else:
# AWS_ENDPOINT_URL in particular makes the plugin use http://127.0.0.1:..., and S3 then parses
# the template URL as the bucket "127".
_DEPLOY_ENV_DROP = (
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "EDGE_PORT",
    "LOCALSTACK_HOSTNAME",
    "USE_SSL",
)
_PR_SET_PDEATHSIG = 1
# How long an interrupted osls deploy gets to end on SIGTERM before it is killed.
_DEPLOY_STOP_SECONDS = 10.0


class EmulatorError(RuntimeError):
    """LocalStack did not start, become ready or accept the deployment."""


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = HOST) -> int:
    """A loopback port nobody listens on right now (for tests that start their own emulator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Interrupted(Exception):
    """A stop signal (SIGTERM or SIGINT) reached a command that must stop what it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, the first SIGTERM or SIGINT raises `Interrupted`, and later ones are
    ignored until the block is left, so the clean-up it triggers is not cut short by the next
    (a terminal's Ctrl-C pressed again, make forwarding a SIGTERM the process group got too)."""
    stops = (signal.SIGTERM, signal.SIGINT)

    def interrupted(signum: int, _frame: object) -> None:
        for stop in stops:
            signal.signal(stop, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {stop: signal.signal(stop, interrupted) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def health(endpoint: str, timeout: float = 2.0) -> dict[str, str] | None:
    """Service states from /_localstack/health, or None if nothing LocalStack-like answers."""
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=timeout) as resp:
            body = json.load(resp)
    except (OSError, ValueError):
        return None
    services = body.get("services") if isinstance(body, dict) else None
    if not isinstance(services, dict):
        return None
    return {str(k): str(v) for k, v in services.items()}


def is_ready(endpoint: str, required: tuple[str, ...] = REQUIRED_SERVICES) -> bool:
    states = health(endpoint)
    return states is not None and all(states.get(s) in READY_STATES for s in required)


# Looked up in the parent: the child between fork and exec must not dlopen (locks).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM LocalStack when the
    # process that started it dies, so a killed test run leaves no emulator behind.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _is_localstack(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # scripts/localstack_runtime.py since the FIFO fix; `-m localstack.runtime.main` before it.
    return b"localstack_runtime.py" in cmdline or b"localstack.runtime.main" in cmdline


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill_group(pgid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pgid`, wait up to `timeout`, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # stragglers of the group, or the leader if it hung


@dataclass
class LocalStack:
    """One LocalStack process on 127.0.0.1:`port`, in its own process group.

    `with LocalStack(port=free_port(), data_dir=tmp) as ls:` starts it, waits until SQS and S3
    answer and stops it on exit. Queue URLs it hands out look like
    http://127.0.0.1:<port>/000000000000/InputQueue.fifo, so they can be dialled directly.
    """

    port: int = DEFAULT_PORT
    data_dir: Path = REPO / ".run" / "localstack"
    venv: Path = REPO / ".venv-localstack"
    services: str = DEFAULT_SERVICES
    # Default: <data_dir>.log beside the data directory (LocalStack owns what is inside it).
    log_file: Path | None = None
    # Load the services at start rather than on first request (the first SQS call otherwise
    # takes ~2.5 s, long enough to trip client timeouts in tests).
    eager: bool = True
    # SIGTERM LocalStack when the Python process that started it dies (tests); the CLI `up`
    # turns this off because it leaves the emulator running on purpose.
    die_with_parent: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.venv = Path(self.venv)
        if self.log_file is None:
            self.log_file = self.data_dir.with_name(self.data_dir.name + ".log")
        self.log_file = Path(self.log_file).resolve()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        assert self.log_file is not None  # set in __post_init__
        return self.log_file

    def env(self) -> dict[str, str]:
        """The environment LocalStack runs with (inherits ours, minus AWS client settings)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            {
                "GATEWAY_LISTEN": f"{HOST}:{self.port}",
                # Host and port written into queue URLs and other self-references; the default
                # (localhost.localstack.cloud) needs DNS this machine does not have.
                "LOCALSTACK_HOST": f"{HOST}:{self.port}",
                # Queue URLs as http://<LOCALSTACK_HOST>/<account>/<queue>, not
                # http://sqs.<region>.<LOCALSTACK_HOST>/... which does not resolve.
                "SQS_ENDPOINT_STRATEGY": "off",
                "SERVICES": self.services,
                "EAGER_SERVICE_LOADING": "1" if self.eager else "0",
                # No DNS server of its own (it would want port 53), no phoning home.
                "DNS_ADDRESS": "0",
                "DISABLE_EVENTS": "1",
                "SKIP_SSL_CERT_DOWNLOAD": "1",
                "LOCALSTACK_VOLUME_DIR": str(self.data_dir),
                "FILESYSTEM_ROOT": str(self.data_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise EmulatorError(f"LocalStack already started (pid {self._proc.pid})")
        python = self.venv / "bin" / "python"
        if not python.exists():
            raise EmulatorError(f"{python} missing: run `make install` to create {self.venv}")
        if _port_open(HOST, self.port):
            raise EmulatorError(f"{HOST}:{self.port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                # LocalStack's runtime with a fix to its FIFO model: see that script.
                [str(python), str(RUNTIME)],
                cwd=self.data_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session and group: stop() kills it whole, Ctrl-C does not reach it.
                start_new_session=True,
                # Only a prctl call, no locks taken: safe with threads in the parent.
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until SQS and S3 report available/running; raise with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise EmulatorError(
                    f"LocalStack exited with {self._proc.returncode} before it was ready; "
                    f"{self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if is_ready(self.endpoint):
                return
            if time.monotonic() >= deadline:
                raise EmulatorError(
                    f"LocalStack on {self.endpoint} not ready after {timeout:.0f}s; "
                    f"{self.log_path}:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL it. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            # The leader if it hung, and anything it spawned that outlived it.
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def deploy(
    stage: str,
    port: int,
    repo: Path = REPO,
    params: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> None:
    """`npx osls deploy --stage <stage>` against LocalStack on 127.0.0.1:`port`."""
    cmd = ["npx", "--no", "osls", "deploy", "--stage", stage]
    for key, value in (params or {}).items():
        cmd.append(f"--param={key}={value}")
    env = {k: v for k, v in os.environ.items() if k not in _DEPLOY_ENV_DROP}
    env.update(FAKE_AWS_ENV)
    env["LOCALSTACK_PORT"] = str(port)
    env["SLS_TELEMETRY_DISABLED"] = "1"
    env["SLS_NOTIFICATIONS_MODE"] = "off"
    # osls polls the stack every 5 s by default; LocalStack finishes in well under one.
    env.setdefault("SLS_AWS_MONITORING_FREQUENCY", "500")
    try:
        # Its own process group: npx starts osls in a process of its own, and whatever ends the
        # deploy early (a timeout, an interruption) must end all of it.
        proc = subprocess.Popen(
            cmd,
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            process_group=0,
        )
    except FileNotFoundError as exc:
        raise EmulatorError("npx not found: install Node.js and run `npm ci`") from exc
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc.pid, _DEPLOY_STOP_SECONDS)
        out, _ = proc.communicate()
        raise EmulatorError(f"{' '.join(cmd)} timed out after {timeout:.0f}s:\n{out}") from exc
    except BaseException:
        _kill_group(proc.pid, _DEPLOY_STOP_SECONDS)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise EmulatorError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{out}")


# --- CLI ---------------------------------------------------------------------------------------

RUN_DIR = REPO / ".run"


def default_run_path(port: int, suffix: str = "", run_dir: Path = RUN_DIR) -> Path:
    """.run/localstack<suffix> for the default port, .run/localstack-<port><suffix> otherwise,
    so emulators on different ports never share a pid file or a data directory."""
    name = "localstack" if port == DEFAULT_PORT else f"localstack-{port}"
    return run_dir / f"{name}{suffix}"


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_file(args: argparse.Namespace) -> Path:
    pid_file: Path = args.pid_file or default_run_path(args.port, ".pid", args.run_dir)
    return pid_file


def _recorded_emulator(pid_file: Path) -> int | None:
    """The pid in `pid_file` if it is a LocalStack still running."""
    pid = _read_pid(pid_file)
    return pid if pid is not None and alive(pid) and _is_localstack(pid) else None


def _cmd_up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or default_run_path(args.port, run_dir=args.run_dir)
    ls = LocalStack(port=args.port, data_dir=data_dir, die_with_parent=False)
    pid_file = _pid_file(args)
    # One that answers, or one of ours still starting (an `up` killed before it was ready).
    if health(ls.endpoint) is not None or _recorded_emulator(pid_file) is not None:
        ls.wait_ready(args.timeout)
        print(f"LocalStack already running at {ls.endpoint}", file=sys.stderr)
        print(ls.endpoint)
        return 0
    started = time.monotonic()
    with stop_signals_raise():
        ls.start()
        assert ls.pid is not None
        try:
            # Recorded at once: even an `up` killed outright leaves `down` something to stop.
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            pid_file.write_text(f"{ls.pid}\n")
            ls.wait_ready(args.timeout)
        except BaseException:
            # Interrupted or failed before it was ready: nothing in it is worth keeping.
            ls.stop()
            pid_file.unlink(missing_ok=True)
            raise
    print(
        f"LocalStack ready at {ls.endpoint} in {time.monotonic() - started:.1f}s "
        f"(pid {ls.pid}, log {ls.log_path})",
        file=sys.stderr,
    )
    print(ls.endpoint)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    pid_file = _pid_file(args)
    pid = _read_pid(pid_file)
    if pid is None:
        print(f"no pid file at {pid_file}: nothing to stop", file=sys.stderr)
        return 0
    running = alive(pid) and _is_localstack(pid)
    if running:
        _kill_group(pid, args.timeout)
    # Before printing: on Ctrl-C the terminal's reader may be gone, and a failed write must not
    # leave a pid file behind.
    pid_file.unlink(missing_ok=True)
    if running:
        print(f"stopped LocalStack (pid {pid})", file=sys.stderr)
    else:
        print(f"pid {pid} is not a running LocalStack: removed stale {pid_file}", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    endpoint = f"http://{HOST}:{args.port}"
    ready = is_ready(endpoint)
    print(f"{endpoint} {'ready' if ready else 'not running'}")
    return 0 if ready else 1


def _cmd_deploy(args: argparse.Namespace) -> int:
    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}")
        params[key] = value
    endpoint = f"http://{HOST}:{args.port}"
    if args.stage == "local" and not is_ready(endpoint):
        raise SystemExit(f"LocalStack is not running on {endpoint}: run `make emulator` first")
    started = time.monotonic()
    with stop_signals_raise():
        deploy(args.stage, args.port, args.repo, params)
    print(
        f"deployed stage {args.stage} in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument(
            "--run-dir",
            type=Path,
            default=RUN_DIR,
            help="where the pid file, the data directory and the log go by default (.run)",
        )
        p.add_argument(
            "--pid-file",
            type=Path,
            help="default <run-dir>/localstack.pid (port 4566) or <run-dir>/localstack-<port>.pid",
        )

    up = sub.add_parser("up", help="start LocalStack unless it already answers; wait until ready")
    common(up)
    up.add_argument(
        "--data-dir",
        type=Path,
        help="default <run-dir>/localstack (port 4566) or <run-dir>/localstack-<port>",
    )
    up.add_argument("--timeout", type=float, default=90.0)
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="stop the LocalStack recorded in the pid file")
    common(down)
    down.add_argument("--timeout", type=float, default=20.0)
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser("status", help="exit 0 if LocalStack answers and is ready")
    common(status)
    status.set_defaults(func=_cmd_status)

    dep = sub.add_parser("deploy", help="osls deploy serverless.yml into LocalStack")
    common(dep)
    dep.add_argument("--stage", default="local")
    dep.add_argument("--repo", type=Path, default=REPO)
    dep.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    dep.set_defaults(func=_cmd_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"{args.command}: stopped ({exc})", file=sys.stderr)
        return 128 + exc.signum
    return code


if __name__ == "__main__":
    sys.exit(main())
