"""The chaos scenarios: what is done to Shelver while it drains the workload.

Each `inject` runs in its own thread from the moment Shelver is healthy until the input queue has
drained (`run.pause` then returns False); proxy faults it leaves on are healed by the engine.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from tests.chaos.engine import ChaosRun, Scenario
from tests.support.shelver import Shelver

HEALTH_SAMPLE_SECONDS = 0.5
RSS_SAMPLE_SECONDS = 5.0
_PAGE_BYTES = 4096


def kill_consumers(run: ChaosRun) -> None:
    while run.pause(run.size.kill_every_seconds):
        run.kill_consumer()


def s3_outage(run: ChaosRun) -> None:
    """S3 refuses every connection for a while, from a third of the way through."""
    _s3_outage(run, start_share=0.3)


def long_s3_outage(run: ChaosRun) -> None:
    """S3 refuses every connection from the start: every message meets the outage."""
    _s3_outage(run, start_share=0.0)


def _s3_outage(run: ChaosRun, start_share: float) -> None:
    """/health must report the outage, /health/live must not (no reason to restart a pod)."""
    if not run.wait_for_progress(start_share):
        run.problem("the run finished before the outage could start")
        return
    seconds = run.size.outage_seconds
    run.s3_proxy.outage_for(seconds, mode="refuse")
    ends = time.monotonic() + seconds
    health: Counter[int] = Counter()
    live: Counter[int] = Counter()
    errors: set[str] = set()
    while time.monotonic() < ends and run.pause(HEALTH_SAMPLE_SECONDS):
        for shelver in run.fleet.live:
            answer = shelver.get("/health")
            health[answer.status] += 1
            live[shelver.get("/health/live").status] += 1
            if isinstance(answer.body, dict):
                errors.update(str(c.get("failing")) for c in answer.body["consumers"]
                              if c.get("failing"))
    run.note(f"during the {seconds:.0f} s S3 outage, /health answered {dict(health)} "
             f"(failing: {', '.join(sorted(errors)) or 'none'}), /health/live {dict(live)}")
    if not health[503]:
        run.problem("/health never reported the S3 outage")
    if set(live) != {200}:
        run.problem(f"/health/live failed during the S3 outage: {dict(live)}")


def sqs_faults(run: ChaosRun) -> None:
    # 10% of SQS calls: 4% answered 500, 3% reset unanswered, 3% reset after SQS did the work
    # (a receive whose messages are now invisible, a delete that happened).
    run.sqs_proxy.configure(error_rate=0.04, error_statuses=(500,), reset_rate=0.03,
                            late_reset_rate=0.03)


def throttling(run: ChaosRun) -> None:
    run.s3_proxy.configure(throttle_rate=0.2)
    run.sqs_proxy.configure(throttle_rate=0.1)


def deploy(run: ChaosRun) -> None:
    """A deploy: the running gunicorn gets SIGTERM, then a new one starts on the same queue.

    With nobody else consuming in between, a graceful stop must leave nothing in flight: what
    it took it finished or handed back, or its groups would wait out the visibility timeout."""
    if not run.wait_for_progress(0.35):
        run.problem("the run finished before the deploy")
        return
    (old,) = run.fleet.live  # alone on the queue: the in-flight count below is all its own
    run.stop(old)
    _, in_flight = run.aws.counts(run.stack.input_url)
    if in_flight:
        run.problem(f"the stopped gunicorn left {in_flight} message(s) in flight: they wait out "
                    "their visibility timeout instead of going to the next consumer")
    run.fleet.start()


# A message a consumer received ends as exactly one of these, or is still held.
_SETTLED_COUNTERS = ("shelver_books_stored_total", "shelver_messages_dead_lettered_total",
                     "shelver_messages_retried_total", "shelver_messages_released_total")


def scale_out(run: ChaosRun) -> None:
    """Replicas on one queue: one master is SIGKILLed at 30%, another is rolled at 60%.

    The killed master's consumers must notice (parent-death signal, parent watch), hand back
    what they hold and exit, leaving no process and no port behind; the survivors take its
    groups over. The rolled one must stop as in a deploy; but the other replicas hold messages
    too, so the queue's in-flight count says nothing about it: its own counters must show that
    it finished, backed off or handed back every message it received."""
    if not run.wait_for_progress(0.3):
        run.problem("the run finished before a master could be killed")
        return
    killed, rolled, *_ = run.fleet.live
    gone_after = run.kill_master(killed)
    received, settled = _received_and_settled(killed)
    # What they could not settle in their grace comes back after its visibility timeout.
    run.note(f"the SIGKILLed master's processes were all gone {gone_after:.1f} s later; its "
             f"consumers had received {received} message(s) and settled {settled}")
    if not run.wait_for_progress(0.6):
        run.problem("the run finished before the roll")
        return
    run.stop(rolled)
    received, settled = _received_and_settled(rolled)
    run.note(f"the rolled gunicorn received {received} message(s) and settled {settled}")
    if not received:
        run.problem("the rolled gunicorn had received nothing: the roll tested nothing")
    elif settled != received:
        run.problem(f"the rolled gunicorn received {received} message(s) but settled "
                    f"{settled}: the rest wait out their visibility timeout")
    run.fleet.start()


def _received_and_settled(shelver: Shelver) -> tuple[int, int]:
    """Messages a Shelver's consumers received, and those they stored, dead-lettered, backed
    off or handed back (from its metrics files: it may have stopped)."""
    counters = shelver.counter_totals()
    return (round(counters.get("shelver_messages_received_total", 0.0)),
            round(sum(counters.get(name, 0.0) for name in _SETTLED_COUNTERS)))


def reload(run: ChaosRun) -> None:
    for share in (0.3, 0.6):
        if not run.wait_for_progress(share):
            return
        for shelver in run.fleet.live:
            run.signal(shelver, signal.SIGHUP)


def nothing(run: ChaosRun) -> None:
    """The workload's own poison is the fault."""


def slow_s3(run: ChaosRun) -> None:
    run.s3_proxy.configure(jitter_seconds=5.0)  # every S3 call: 0 to 5 s more


def consumer_rss_mib(pid: int) -> float:
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return resident_pages * _PAGE_BYTES / 2**20


def sample_rss(run: ChaosRun) -> None:
    """Every few seconds, and once more at the end: (progress, RSS MiB of each consumer)."""
    while True:
        pids = [c["pid"] for _, c in run.fleet.consumers()]
        run.row.samples.append({"progress": round(run.progress(), 3),
                            "rss": [round(consumer_rss_mib(pid), 1) for pid in pids]})
        if not run.pause(RSS_SAMPLE_SECONDS):
            return


SCENARIOS = (
    Scenario("consumer-kills", "SIGKILL a random consumer every few seconds", kill_consumers),
    Scenario("s3-outage", "S3 refuses every connection mid-run for 30 s (CI: 8 s)", s3_outage),
    # Every receive of a message counts towards the queue's maxReceiveCount, after which SQS
    # moves even a valid book to the DLQ. With one consumer and two groups, each group's head
    # is received again after every pause of the consumer's circuit breaker (1, 2, 4, 8, 16 s).
    # Each group's head fails after every pause of the circuit breaker: with 5, the old
    # maxReceiveCount, a 20 s outage moved valid books to the DLQ.
    Scenario("long-s3-outage", "one consumer, two groups, S3 refuses for 45 s (CI: 12 s)",
             long_s3_outage, poison_share=0, env={"CONSUMERS": "1"},
             resize=lambda size: replace(size, messages=40, groups=2, send_seconds=4,
                                         outage_seconds=size.outage_seconds * 1.5)),
    Scenario("sqs-faults", "10% of SQS calls: 500, reset, or reset after the work", sqs_faults),
    Scenario("deploy", "SIGTERM gunicorn mid-run, a new one starts on the queue", deploy),
    Scenario("reload", "SIGHUP at 30% and 60%", reload),
    Scenario("scale-out", "three replicas on the queue: one master SIGKILLed at 30%, another "
             "rolled (SIGTERM, started again) at 60%", scale_out, instances=3),
    Scenario("poison", "5% poison messages interleaved in the groups", nothing,
             poison_share=0.05),
    # A new version costs three S3 calls (PUT, 412, HEAD, PUT): 7.5 s on average. A received
    # batch is one or two whole groups, processed in order: more consumers and shorter groups
    # keep the run within minutes.
    Scenario("slow-s3", "every S3 call 0-5 s slower, queue visibility timeout 3 s", slow_s3,
             visibility_timeout=3, env={"CONSUMERS": "16"}, groups_factor=4),
    Scenario("throttling", "20% of S3 calls SlowDown, 10% of SQS calls RequestThrottled",
             throttling),
)
SOAK = Scenario("soak", "no faults; consumer RSS sampled every 5 s", sample_rss)
BY_NAME = {s.name: s for s in (*SCENARIOS, SOAK)}
