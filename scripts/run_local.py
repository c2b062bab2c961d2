"""`make run`, `make infra` and `make reload`: Shelver on the local stack, all on 127.0.0.1.

    python -m scripts.run_local run      # settings, emulator, deploy, gunicorn; until stopped
    python -m scripts.run_local infra    # settings, emulator, deploy
    python -m scripts.run_local reload   # SIGHUP to that gunicorn; until its new consumers run

Steps, in this order, each one only once the one before succeeded:

1. settings: Shelver's settings (the environment, and SHELVER_CONFIG_FILE if set) validated
   as gunicorn validates them at start, before anything is started: a bad value stops here
   with gunicorn's message and exit code (3), in a second.
2. emulator: LocalStack on 127.0.0.1:LOCALSTACK_PORT (scripts/emulator.py `up`), unless it
   already runs there. It is left running when this ends, on purpose, as `docker compose up -d`
   leaves its containers: what is in it (the queues and their messages, dead letters included;
   the buckets and their books; buckets made by hand) is there again at the next run.
   `make emulator-down` stops it and forgets all of it; `make run-fresh` does that first.
3. deploy: serverless.yml, stage local, into it (osls), with one bucket per genre of the
   settings' GENRE_BUCKETS (serverless.yml's `genres` param and `<genre>Bucket` params).
4. serve (`run` only): gunicorn on BIND, with the emulator's endpoint, region and dummy
   credentials set here and only here, its pid in RUN_DIR/gunicorn.pid (`make reload`), its
   state dir RUN_DIR/shelver-state unless SHELVER_STATE_DIR is set.

Stopping: SIGTERM or SIGINT (Ctrl-C), to this process or to its whole process group (a
terminal's Ctrl-C reaches every process of the group; make forwards a SIGTERM it got), once or
many times. The handlers only note the first; the step running then is sent one SIGTERM and
waited for (gunicorn stops gracefully; `up` stops an emulator not ready yet; a deploy ends with
all its processes), however many signals follow; no later step starts. Exit status: the failed
step's, or 128 + the signal's number after a stop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from scripts.emulator import (
    DEFAULT_PORT,
    FAKE_AWS_ENV,
    HOST,
    REPO,
    alive,
    default_run_path,
    is_ready,
)

# gunicorn.conf.py's exit code and message for a configuration it refuses.
EXIT_CONFIG = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often a step's end, or a stop request, is looked for.
POLL_SECONDS = 0.1
# A reload: gunicorn checks the new settings against AWS, then starts a new generation of
# consumers and stops the old one, which may finish messages in progress for up to
# CONSUMER_STOP_TIMEOUT_SECONDS (30 s by default).
RELOAD_TIMEOUT_SECONDS = 120.0


def log(message: str) -> None:
    # A Ctrl-C may have closed what reads our output (a pager, tee): go on regardless.
    with contextlib.suppress(OSError):
        print(f"run-local: {message}", file=sys.stderr, flush=True)


def local_aws_env(port: int) -> dict[str, str]:
    """What a client of the local emulator needs, and only that: dummy credentials (so real
    ones in the caller's environment or profile are never sent), the region, the endpoint."""
    return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": f"http://{HOST}:{port}"}


def check_settings(env: Mapping[str, str]) -> dict[str, str] | None:
    """The genre buckets of valid settings; None after printing why the settings are not, as
    gunicorn would print it (gunicorn.conf.py's `_load_settings`)."""
    from workers.settings import ConfigError, Settings, read_log_format

    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        message = f"shelver: configuration error: {exc}"
        if read_log_format(env) == "json":
            from workers.logs import log_json_to_stderr

            log_json_to_stderr(logging.INFO)
            logging.getLogger("shelver.run_local").error(message)
        else:
            print(message, file=sys.stderr)
        return None
    return dict(settings.genre_buckets)


def deploy_params(genre_buckets: Mapping[str, str]) -> list[str]:
    """serverless.yml's params for these genres: `genres`, and each genre's bucket name."""
    params = [f"genres={','.join(genre_buckets)}"]
    params += [f"{genre}Bucket={bucket}" for genre, bucket in genre_buckets.items()]
    return [arg for param in params for arg in ("--param", param)]


@dataclass
class Step:
    name: str
    argv: list[str]
    env: Mapping[str, str] | None = None  # None: the caller's
    quiet: bool = False  # its standard output dropped


@dataclass
class LocalRun:
    """One `make run` (or `make infra`): its steps, and the stop request the handlers note."""

    port: int
    bind: str
    run_dir: Path
    serve: bool = True
    stop_signal: int = 0  # the first stop signal's number; written by the handlers only

    def note_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop_signal:
            self.stop_signal = signum

    def run(self) -> int:
        for stop in STOP_SIGNALS:
            signal.signal(stop, self.note_stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(local_aws_env(self.port))
        genre_buckets = check_settings(env)
        if genre_buckets is None:
            return EXIT_CONFIG
        steps = [
            # `up` prints the endpoint on standard output, for scripts; we say it otherwise.
            Step("emulator", self.emulator("up"), quiet=True),
            Step("deploy", self.emulator("deploy", "--stage", "local",
                                         *deploy_params(genre_buckets))),
        ]
        if self.serve:
            steps.append(Step("serve", self.gunicorn(), self.gunicorn_env(env)))
        status = 0
        for step in steps:
            if self.stop_signal:
                break
            if step.name == "serve":
                log(f"starting gunicorn on http://{self.bind} (Ctrl-C stops it; LocalStack on "
                    f"{HOST}:{self.port} keeps running)")
            status = self.run_step(step)
            if status != 0 and not self.stop_signal:
                log(f"{step.name} failed (exit code {status})")
                break
        self.report_emulator()
        if self.stop_signal:
            log(f"stopped ({signal.Signals(self.stop_signal).name})")
            return 128 + self.stop_signal
        return status

    def emulator(self, command: str, *args: str) -> list[str]:
        return [sys.executable, str(REPO / "scripts" / "emulator.py"), command,
                "--port", str(self.port), "--run-dir", str(self.run_dir), *args]

    def gunicorn(self) -> list[str]:
        return [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py",
                "--bind", self.bind, "--pid", str(self.run_dir / "gunicorn.pid")]

    def gunicorn_env(self, env: dict[str, str]) -> dict[str, str]:
        # Kept across runs, as a pod's emptyDir across container restarts: what the consumers of
        # a run that was killed held is handed back at the next start (README, SHELVER_STATE_DIR).
        state_dir = env.get("SHELVER_STATE_DIR") or str(self.run_dir / "shelver-state")
        return {**env, "BIND": self.bind, "SHELVER_STATE_DIR": state_dir}

    def run_step(self, step: Step) -> int:
        """Run one step to its end; on a stop request, send it one SIGTERM and wait for it."""
        proc = subprocess.Popen(step.argv, cwd=REPO, env=step.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL if step.quiet else None)
        told = False
        while True:
            if self.stop_signal and not told:
                log(f"stopping ({step.name})")
                proc.send_signal(signal.SIGTERM)
                told = True
            try:
                return proc.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue

    def report_emulator(self) -> None:
        if is_ready(f"http://{HOST}:{self.port}"):
            down = "" if self.port == DEFAULT_PORT else f" LOCALSTACK_PORT={self.port}"
            log(f"LocalStack keeps running on {HOST}:{self.port} with everything in it "
                f"(log {default_run_path(self.port, '.log', self.run_dir)}); "
                f"`make emulator-down{down}` stops it and forgets it")


def consumer_pids(bind: str) -> set[int]:
    """The consumers /health lists (a degraded 503 lists them too); none if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{bind}/health", timeout=5) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    except (OSError, ValueError):
        return set()
    return {c["pid"] for c in body.get("consumers", []) if isinstance(c.get("pid"), int)}


def reload(bind: str, run_dir: Path) -> int:
    """SIGHUP to the gunicorn of `make run` (SHELVER_CONFIG_FILE read again), then wait until
    a new generation of consumers runs and the old one has ended, so that what is sent next
    meets the new settings."""
    pid_file = run_dir / "gunicorn.pid"
    try:
        master = int(pid_file.read_text())
    except (OSError, ValueError):
        log(f"no gunicorn pid in {pid_file}: is `make run` running?")
        return 1
    before = consumer_pids(bind)
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        now = consumer_pids(bind)
        if now and not now & before and not any(alive(pid) for pid in before):
            log(f"reloaded: consumers {', '.join(map(str, sorted(now)))} "
                f"(were {', '.join(map(str, sorted(before)))})")
            return 0
        time.sleep(0.5)
    log(f"no new generation of consumers after {RELOAD_TIMEOUT_SECONDS:.0f} s: gunicorn's log "
        "says why (a reload it refuses is logged at ERROR, and changes nothing)")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=("run", "infra", "reload"))
    args = parser.parse_args(argv)
    bind = os.environ.get("BIND") or "127.0.0.1:8000"
    # Relative to the repository, as make and the steps see it.
    run_dir = (REPO / (os.environ.get("RUN_DIR") or ".run")).resolve()
    if args.command == "reload":
        return reload(bind, run_dir)
    run = LocalRun(port=int(os.environ.get("LOCALSTACK_PORT") or DEFAULT_PORT), bind=bind,
                   run_dir=run_dir, serve=args.command == "run")
    return run.run()


if __name__ == "__main__":
    sys.exit(main())
