"""/health as a readiness probe sees it on an idle queue, with the default long poll (20 s): a
consumer whose first long poll is in flight is working, at start and after a reload; `starting`
is said only while a consumer is really starting, never `degraded`."""

from __future__ import annotations

import signal

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Stack, wait_until
from tests.support.shelver import Response, Shelver

# The defaults' long poll: the first receive on an idle queue completes only after 20 s.
IDLE_QUEUE = {"WAIT_TIME_SECONDS": "20", "HEALTH_MAX_POLL_AGE_SECONDS": "60",
              "CONSUMER_HEARTBEAT_TIMEOUT_SECONDS": "60"}


def _first_polls_in_flight(shelver: Shelver, seen: list[Response],
                           not_of: frozenset[int] = frozenset()) -> Response | None:
    """/health's answer once every consumer (none of `not_of`) is in its first long poll, none
    completed yet; every answer on the way is kept in `seen`."""
    try:
        response = shelver.get("/health")
    except TimeoutError:
        return None  # HTTP workers still booting
    if response.status == 0 or not isinstance(response.body, dict):
        return None
    seen.append(response)
    consumers = response.body["consumers"]
    if len(consumers) == 2 and all(
            c["pid"] not in not_of and c["state"] == "polling"
            and c["seconds_since_last_poll"] is None for c in consumers):
        return response
    return None


def _statuses(seen: list[Response]) -> set[tuple[int, str]]:
    return {(r.status, r.body["status"]) for r in seen}


def test_health_is_ok_while_the_first_long_polls_are_in_flight(
        stack: Stack, shelver_factory: ShelverFactory) -> None:
    shelver = shelver_factory(stack, **IDLE_QUEUE)
    seen: list[Response] = []
    response = wait_until(lambda: _first_polls_in_flight(shelver, seen), 120, 0.1,
                          "both consumers in their first long poll")
    assert (response.status, response.body["status"]) == (200, "ok"), response.body
    # From the first answer on: starting, then ok; never degraded.
    assert _statuses(seen) <= {(503, "starting"), (200, "ok")}, _statuses(seen)

    # A reload: the new consumers' first long polls count as well, and the way there is
    # `starting` at worst, never `degraded`.
    before = frozenset(shelver.consumer_pids())
    shelver.signal(signal.SIGHUP)
    seen.clear()
    response = wait_until(lambda: _first_polls_in_flight(shelver, seen, before), 120, 0.1,
                          "both new consumers in their first long poll")
    assert (response.status, response.body["status"]) == (200, "ok"), response.body
    assert _statuses(seen) <= {(503, "starting"), (200, "ok")}, _statuses(seen)
