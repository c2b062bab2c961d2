"""A consumer process: what the pool spawns (`ConsumerSpec`, `consumer_main`), before and after
its `Consumer` runs: the parent-death signal, its own process group, its logs, its exit code."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from workers import tracing
from workers.consumer.keeper import EXIT_ORPHANED, die_with_parent
from workers.consumer.loop import TRACING_FLUSH_SECONDS, Consumer
from workers.logs import log_json_to_stderr
from workers.settings import Settings


@dataclass(frozen=True)
class ConsumerSpec:
    """Everything a consumer needs, passed by the pool when it spawns one (must pickle)."""

    slot: int
    restarts: int
    settings: Settings
    parent_pid: int
    # Names this consumer's files in the state dir (pids repeat after a container restart).
    token: str
    # Tokens of dead consumers whose messages this one hands back before receiving.
    predecessors: tuple[str, ...] = ()


def consumer_main(spec: ConsumerSpec) -> None:
    """Process entry point (multiprocessing target)."""
    die_with_parent()
    # Our own process group: a Ctrl-C in the terminal goes to gunicorn, which stops us in order,
    # instead of racing the pool's restart logic.
    os.setpgrp()
    # One tracer provider and batch span processor per consumer process (spawned, so nothing is
    # inherited); the OTEL_ variables were validated by the master (`Settings.from_env`'s
    # caller), and the environment is the master's. Off: nothing is imported.
    traces = tracing.start(tracing.read_config(os.environ), **{"shelver.consumer.slot": spec.slot})
    traces.install_log_fields()
    if spec.settings.log_format == "json":
        log_json_to_stderr(spec.settings.log_level, slot=spec.slot)
    else:
        logging.basicConfig(
            level=spec.settings.log_level,
            format=(f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] consumer-{spec.slot}: "
                    "%(message)s" + ("%(trace_text)s" if traces.enabled else "")),
            stream=sys.stderr,
        )
    # botocore announces where it found credentials and endpoints at INFO, per client.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    consumer = Consumer(spec, traces)
    if os.getppid() != spec.parent_pid:  # the parent died before prctl took effect
        sys.exit(EXIT_ORPHANED)
    try:
        code = consumer.run()
    except Exception as exc:
        consumer.internal_error("main", exc)  # ends the process
        raise
    # A graceful stop: the spans still queued are sent, within a bound.
    traces.shutdown(TRACING_FLUSH_SECONDS)
    logging.shutdown()
    # os._exit, not sys.exit: abandoned processing threads must not hold the exit up (the
    # interpreter would join them), and there is nothing left to flush.
    os._exit(code)
