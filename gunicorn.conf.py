"""gunicorn configuration for Shelver: HTTP workers plus a pool of consumer processes.

Run: gunicorn -c gunicorn.conf.py

The HTTP side is plain gunicorn (settings below, overridable with GUNICORN_CMD_ARGS or flags).
The consumer pool is started from the server hooks: see workers/pool/ for why it looks the way
it does. This file is executed again on SIGHUP, so module-level code must be idempotent.
"""

from __future__ import annotations

import multiprocessing.process
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from workers.lease.files import RECOVERY_DIR


def _reset_dir(path: str, keep: frozenset[str] = frozenset()) -> None:
    os.makedirs(path, exist_ok=True)
    for entry in set(os.listdir(path)) - keep:
        target = os.path.join(path, entry)
        if os.path.isdir(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)


# Both directories must be in the environment, and emptied, before prometheus_client is imported
# (importing the metrics creates this process's files): HTTP workers inherit the master's
# environment, consumers receive it when spawned. Done once per master, not again on SIGHUP.
# Leftovers of a previous run would be summed into this one's counters, or show its consumers
# in /health; but the state dir's `recovery/` is kept: what the previous run's consumers held
# (handed back by the first consumer started) and the crash counts (workers/lease/files.py).
if os.environ.get("_SHELVER_MASTER_PID") != str(os.getpid()):
    for _variable, _prefix, _keep in (
            ("PROMETHEUS_MULTIPROC_DIR", "shelver-metrics-", frozenset()),
            ("SHELVER_STATE_DIR", "shelver-state-", frozenset({RECOVERY_DIR}))):
        if os.environ.get(_variable):
            _reset_dir(os.environ[_variable], _keep)
        else:
            os.environ[_variable] = tempfile.mkdtemp(prefix=_prefix)
    os.environ["_SHELVER_MASTER_PID"] = str(os.getpid())

from prometheus_client import multiprocess  # noqa: E402

from workers import tracing  # noqa: E402
from workers.aws import preflight  # noqa: E402
from workers.pool import HTTP_GRACEFUL_TIMEOUT_SECONDS, ConsumerPool  # noqa: E402
from workers.settings import (  # noqa: E402
    CONFIG_FILE_VARIABLE,
    ConfigError,
    Settings,
    changed_variables,
    read_log_format,
)

bind = os.environ.get("BIND", "127.0.0.1:8000")
# gunicorn's asyncio worker reads every connection on an event loop, and Flask answers a request
# on one of WEB_THREADS threads once all of it has arrived: a slow or idle client holds no thread,
# so the probes get through (gthread let 8 half-sent requests hold every thread: service/asgi.py).
# service/http_worker.py: gunicorn's asyncio worker ("asgi"), told of a stop at once.
worker_class = "service.http_worker.Worker"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
wsgi_app = f"service.asgi:create_asgi_app(threads={int(os.environ.get('WEB_THREADS', '4'))})"
# Part of the stop deadline the orchestrator must allow: see workers.pool.stop_deadline.
graceful_timeout = HTTP_GRACEFUL_TIMEOUT_SECONDS
timeout = 30
accesslog = os.environ.get("ACCESS_LOG") or None
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "shelver"
# LOG_FORMAT=json: the master's, the HTTP workers' and the access log's lines as JSON; text stays
# gunicorn's own logger. Read before the settings are validated (on_starting): a bad value logs
# as text until it stops start-up there.
if read_log_format() == "json":
    logger_class = "workers.pool.gunicorn_logs.JsonLogger"
# Workers' heartbeat files: in memory where /dev/shm is there (containers, where /tmp may be a
# disk-backed emptyDir and a read-only root leaves nothing else); else the default temp dir.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
# One control socket per user by default; several Shelvers on one machine (tests) would collide.
control_socket_disable = True

EXIT_CONFIG = 3


def _load_settings(server: Any) -> Settings:
    """The settings, validated, then checked against AWS (workers/aws/preflight.py): a bad value or
    a definite misconfiguration stops start-up with EXIT_CONFIG; AWS out of reach only warns."""
    try:
        settings = Settings.from_env()
        # Tracing's OTEL_ variables, checked here once: each consumer reads them again when it
        # starts, and a bad value must stop the start, not each consumer.
        tracing.read_config(os.environ)
        preflight.run(settings, server.log)
        return settings
    except ConfigError as exc:
        message = f"shelver: configuration error: {exc}"
        if read_log_format() == "json":
            server.log.error(message)  # one JSON line, like every other
        else:
            print(message, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def on_starting(server: Any) -> None:
    settings = _load_settings(server)
    server.shelver_settings = settings
    server.shelver_pool = ConsumerPool(settings, server.log)
    server.shelver_pool.start()


def post_fork(server: Any, worker: Any) -> None:
    # This HTTP worker inherited the master's list of multiprocessing children (the consumers);
    # left there, its exit handler would SIGTERM and try to join them.
    multiprocessing.process._children.clear()  # type: ignore[attr-defined]
    # Serve with the settings the consumers run with. Read again in the worker, a configuration
    # file broken since the last good load would stop the worker from booting, and gunicorn
    # halts when a worker cannot boot. Imported here: the master need not import Flask.
    from service.app import use_settings

    use_settings(server.shelver_settings)


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _shown(value: Any) -> str:
    """A setting's value as its variable would say it (GENRE_BUCKETS=scifi=scifi,...)."""
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items())
    return str(value)


def _log_reload(server: Any, old: Settings, new: Settings) -> None:
    """Which file was read, and what changed: a reload that changes nothing says so."""
    path = os.environ.get(CONFIG_FILE_VARIABLE, "").strip()
    changes = [f"{variable} {_shown(before)} -> {_shown(after)}"
               for variable, (before, after) in changed_variables(old, new).items()]
    if not path:
        server.log.warning("shelver: reload without %s: the environment is read once, at "
                           "start, so the settings are the same; consumers replaced",
                           CONFIG_FILE_VARIABLE)
    elif changes:
        server.log.info("shelver: reload read %s=%s; changed: %s", CONFIG_FILE_VARIABLE, path,
                        "; ".join(changes))
    else:
        server.log.info("shelver: reload read %s=%s; nothing changed; consumers replaced",
                        CONFIG_FILE_VARIABLE, path)


def on_reload(server: Any) -> None:
    try:
        settings = Settings.from_env()
        preflight.run(settings, server.log)
    except ConfigError as exc:
        server.log.error("shelver: configuration error, keeping the running consumers: %s", exc)
        return
    _log_reload(server, server.shelver_settings, settings)
    server.shelver_settings = settings
    server.shelver_pool.reload(settings)


def on_exit(server: Any) -> None:
    pool = getattr(server, "shelver_pool", None)
    if pool is not None:
        pool.stop()
