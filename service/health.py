"""Health aggregation from the pool's and the consumers' status files, plus Prometheus totals.

Two views, because an orchestrator needs both and must not confuse them:
- `/health/live` (liveness): every consumer process is alive and its main loop beats. An AWS
  outage does not fail it, so an outage does not make every pod restart at once.
- `/health` (readiness and overall status): additionally, every consumer completed a receive call
  within HEALTH_MAX_POLL_AGE_SECONDS (its first receive, still in flight, counts from when it
  began: on an idle queue a long poll lasts WAIT_TIME_SECONDS), and its last batch did not fail
  as a whole within that time. Its `status`: `ok` (200); `starting` (503) while the pool is
  spawning consumers or a consumer has not begun to receive yet (looking its queue up, handing
  back what its dead predecessors held), with nothing failed; `degraded` (503) otherwise: an
  SQS outage, an S3 outage, a stuck, dead or restarting consumer.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from dataclasses import asdict, dataclass

from service.metrics_view import counter_totals
from workers.settings import Settings
from workers.status import (
    WAKEABLE_STATES,
    ConsumerState,
    ConsumerStatus,
    read_consumer_status,
    read_pool,
)

_TOTALS = {
    "received": "shelver_messages_received",
    "stored": "shelver_books_stored",
    "dead_lettered": "shelver_messages_dead_lettered",
    "retried": "shelver_messages_retried",
}


@dataclass(frozen=True)
class ConsumerHealth:
    slot: int
    pid: int
    state: ConsumerState
    alive: bool
    healthy: bool
    seconds_since_last_poll: float | None
    restarts: int
    last_error: str | None
    failing: str | None  # why its batches fail as a whole (S3 down, say), while that holds


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def consumer_health(settings: Settings, now: float | None = None) -> list[ConsumerHealth]:
    now = time.time() if now is None else now
    report = []
    for slot in read_pool(settings.state_dir):
        status = read_consumer_status(settings.state_dir, slot.pid) if slot.pid else None
        alive = (
            status is not None
            and _pid_exists(slot.pid)
            and now - status.heartbeat_at <= settings.heartbeat_timeout_seconds
        )
        since_poll = None
        if status is not None and status.last_poll_at is not None:
            since_poll = round(max(0.0, now - status.last_poll_at), 3)
        # Its first receive, in flight, is a poll from when it began.
        polled_at = None if status is None else (
            status.last_poll_at if status.last_poll_at is not None else status.first_receive_at)
        failing = None
        if status is not None and status.failing is not None and status.failing_at is not None \
                and now - status.failing_at <= settings.health_max_poll_age_seconds:
            # Older than that, nothing came along to prove the cause gone (an idle queue): it
            # ages out like a poll does. A consumer still failing re-fails well within it.
            failing = status.failing
        healthy = (alive and polled_at is not None and failing is None
                   and now - polled_at <= settings.health_max_poll_age_seconds)
        report.append(ConsumerHealth(
            slot=slot.slot,
            pid=slot.pid,
            state=_state(slot.pid, status, alive),
            alive=alive,
            healthy=healthy,
            seconds_since_last_poll=since_poll,
            restarts=slot.restarts,
            last_error=status.last_error if status else None,
            failing=failing,
        ))
    return report


def _state(pid: int, status: ConsumerStatus | None, alive: bool) -> ConsumerState:
    if not pid:
        return ConsumerState.RESTARTING
    if status is None:
        return ConsumerState.STARTING
    return status.state if alive else ConsumerState.UNRESPONSIVE


def _complete(settings: Settings, consumers: list[ConsumerHealth]) -> bool:
    return len(consumers) == settings.consumers


class Readiness(enum.StrEnum):
    """`/health`'s `status`."""

    OK = "ok"  # every consumer receiving (200)
    STARTING = "starting"  # consumers still starting, nothing failed (503)
    DEGRADED = "degraded"  # a consumer failing, stuck, dead or being replaced (503)


def _starting(consumer: ConsumerHealth) -> bool:
    """Not receiving yet because it is starting: spawned, its status not written yet, or
    looking its queue up or handing back, with no error so far."""
    return consumer.state is ConsumerState.STARTING and consumer.last_error is None \
        and consumer.failing is None


def readiness(settings: Settings, consumers: list[ConsumerHealth]) -> Readiness:
    unready = [c for c in consumers if not c.healthy]
    if not unready and _complete(settings, consumers):
        return Readiness.OK
    # A pool.json short of slots: the pool has not published its consumers yet (at start, or
    # after a reload that adds some).
    if all(_starting(c) for c in unready) and len(consumers) <= settings.consumers:
        return Readiness.STARTING
    return Readiness.DEGRADED


def health_report(settings: Settings) -> tuple[int, dict[str, object]]:
    consumers = consumer_health(settings)
    status = readiness(settings, consumers)
    totals = counter_totals(tuple(_TOTALS.values()))
    body: dict[str, object] = {
        "status": status.value,
        "consumers": [asdict(c) for c in consumers],
        "totals": {key: int(totals[name]) for key, name in _TOTALS.items()},
    }
    return (200 if status is Readiness.OK else 503), body


def liveness_report(settings: Settings) -> tuple[int, dict[str, object]]:
    consumers = consumer_health(settings)
    ok = _complete(settings, consumers) and all(c.alive for c in consumers)
    return (200 if ok else 503), {
        "status": "ok" if ok else "down",
        "alive": sum(1 for c in consumers if c.alive),
        "expected": settings.consumers,
    }


class Wake(enum.StrEnum):
    """What `/` did with a consumer, and why: its answer lists the slots under each."""

    WOKEN = "woken"  # idle between polls: signalled to poll now
    RECEIVING = "receiving"  # in a receive (a long poll takes a message as it arrives)
    BACKING_OFF = "backing_off"  # its pause after a failure is left to it
    STARTING = "starting"  # not receiving yet; it will at once
    NOT_RUNNING = "not_running"  # dead, stopped, unresponsive, or its slot being refilled


_WAKE_BY_STATE = {
    ConsumerState.POLLING: Wake.RECEIVING,
    ConsumerState.PROCESSING: Wake.RECEIVING,
    ConsumerState.BACKOFF: Wake.BACKING_OFF,
    ConsumerState.STARTING: Wake.STARTING,
}


def _wake(consumer: ConsumerHealth) -> Wake:
    if not consumer.alive:
        return Wake.STARTING if _starting(consumer) else Wake.NOT_RUNNING
    if consumer.state in WAKEABLE_STATES:
        try:
            os.kill(consumer.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return Wake.NOT_RUNNING
        return Wake.WOKEN
    return _WAKE_BY_STATE.get(consumer.state, Wake.NOT_RUNNING)


def _explain(slots: dict[Wake, list[int]]) -> str:
    said = {
        Wake.WOKEN: "woken from the pause between polls",
        Wake.RECEIVING: "already receiving (a long poll takes new messages as they arrive)",
        Wake.BACKING_OFF: "in a backoff after a failure, left to it",
        Wake.STARTING: "starting, about to receive",
        Wake.NOT_RUNNING: "not running (see /health)",
    }
    parts = [f"{len(slots[wake])} {said[wake]}" for wake in Wake if slots[wake]]
    if not slots[Wake.WOKEN]:
        parts.insert(0, "nothing to wake")
    return "; ".join(parts) if parts else "nothing to wake: no consumers yet"


def wake_idle_consumers(settings: Settings) -> dict[str, object]:
    """Signal every consumer idle between polls to poll now, and say what became of each. One
    in a backoff (an error, a breaker pause) is left to it: a load balancer checking `/` would
    otherwise end every pause within seconds. `triggered` counts the woken."""
    slots: dict[Wake, list[int]] = {wake: [] for wake in Wake}
    for consumer in consumer_health(settings):
        slots[_wake(consumer)].append(consumer.slot)
    return {"triggered": len(slots[Wake.WOKEN]),
            "consumers": {wake.value: found for wake, found in slots.items()},
            "detail": _explain(slots)}
