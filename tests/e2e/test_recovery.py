"""A dead consumer's messages come back at once, not after the visibility timeout; a message
that crashes its consumer every time ends in the DLQ instead of blocking its group.

The queues here have a visibility timeout of VISIBILITY seconds, so a message received again well
before that was handed back by the consumer that replaced the dead one. The consumer is killed
by the S3 proxy's trap at the moment it sends a given PUT (nothing forwarded): it dies holding
its batch, in the middle of a message.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import Exchange, FaultProxy
from tests.support.shelver import Shelver
from workers.aws.sqs import ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE

VISIBILITY = 300
# Well within VISIBILITY: a message back by then was handed back, not timed out.
RECOVERED_WITHIN = 90
GROUP = "shelf"


@pytest.fixture
def stack(aws: Aws) -> Iterator[Stack]:
    with aws.cloned_stack(visibility_timeout=VISIBILITY, versioned=True) as clone:
        yield clone


def versions(count: int) -> list[tuple[str, dict[str, object]]]:
    """`count` messages of one group: three books taking turns, each in growing versions."""
    return [(GROUP, book(f"b-{n % 3}", f"Shelf{n % 3}", "scifi", version=n // 3 + 1))
            for n in range(count)]


def check_stored_in_order(aws: Aws, stack: Stack, sent: list[tuple[str, dict[str, object]]]
                          ) -> None:
    """Every message's body is in its key's S3 history, the history in send order."""
    sent_at = {hashlib.md5(orjson.dumps(body)).hexdigest(): n for n, (_, body) in enumerate(sent)}
    written: set[int] = set()
    for key, history in aws.object_versions(stack.buckets["scifi"]).items():
        order = [sent_at[etag] for _, etag in reversed(history)]
        assert order == sorted(order), f"{key} written out of order: messages {order}"
        written.update(order)
    assert written == set(range(len(sent))), f"never written: {set(range(len(sent))) - written}"


def dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(dead(pid) for pid in pids), 10, 0.01, f"{pids} to die")


@dataclass
class KillOnPut:
    """A proxy trap: when the PUT of a key containing `title` comes, run `kill` and drop the
    request, `times` times at most; remembers when."""

    title: str
    kill: Callable[[], None]
    times: int = 1
    at: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, method: str, path: str) -> bool:
        with self._lock:
            if method != "PUT" or self.title not in path or len(self.at) >= self.times:
                return False
            self.kill()
            self.at.append(time.monotonic())
            return True


def metric(shelver: Shelver, name: str) -> float:
    return shelver.metrics().get(name, 0.0)


def received_again_after(shelver: Shelver, before: float, since: float) -> float:
    """Seconds from `since` (monotonic) until the consumers received more than `before`."""
    wait_until(lambda: metric(shelver, "shelver_messages_received_total") > before,
               RECOVERED_WITHIN, 0.05, "the held messages to be received again")
    return time.monotonic() - since


def test_a_killed_consumer_s_messages_are_received_again_at_once(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack, CONSUMERS="1", AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    trap = KillOnPut("Shelf", lambda: kill_and_wait(shelver.consumer_pids()))
    s3_proxy.configure(trap=trap)
    # One group, so all ten come in one receive: the consumer holds every one when it dies.
    sent = versions(10)
    aws.send(stack.input_url, sent)

    wait_until(lambda: trap.at, 60, 0.05, "the consumer to be killed at its first write")
    received = metric(shelver, "shelver_messages_received_total")
    delay = received_again_after(shelver, received, trap.at[0])
    print(f"\nthe held messages were received again {delay:.2f} s after the kill")

    wait_until(lambda: aws.drained(stack.input_url), RECOVERED_WITHIN, 0.2,
               "the input queue to drain")
    assert received == 10
    assert metric(shelver, "shelver_messages_recovered_total") == 10
    check_stored_in_order(aws, stack, sent)
    assert 'shelver_consumer_restarts_total{reason="died"}' in shelver.metrics()
    assert "handing back what 1 dead consumer(s) held" in shelver.log()
    assert aws.counts(stack.dlq_url) == (0, 0)


def test_a_message_that_crashes_its_consumer_every_time_is_dead_lettered(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack, CONSUMERS="1", AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    trap = KillOnPut("Crashing", lambda: kill_and_wait(shelver.consumer_pids()), times=10)
    s3_proxy.configure(trap=trap)
    sent = [(GROUP, book("c-0", "Before", "scifi")), (GROUP, book("c-1", "Crashing", "scifi")),
            (GROUP, book("c-2", "After1", "scifi")), (GROUP, book("c-3", "After2", "scifi"))]
    ids = aws.send(stack.input_url, sent)

    # Three crashes: 0, 2 and 4 s of restart backoff; nothing waits out the visibility timeout.
    wait_until(lambda: aws.drained(stack.input_url), RECOVERED_WITHIN, 0.3,
               "the input queue to drain")
    assert len(trap.at) == 3
    dead_letters = aws.receive_all(stack.dlq_url, expect=1)
    assert [m["Body"] for m in dead_letters] == [orjson.dumps(sent[1][1]).decode()]
    attributes = dead_letters[0]["MessageAttributes"]
    assert attributes[REASON_ATTRIBUTE]["StringValue"] == "crashed_consumer"
    assert attributes[ORIGINAL_ID_ATTRIBUTE]["StringValue"] == ids[1]
    assert {key for _, key in aws.objects(stack)} == {"Before.json", "After1.json",
                                                       "After2.json"}
    metrics = shelver.metrics()
    assert metrics['shelver_messages_dead_lettered_total{reason="crashed_consumer"}'] == 1
    assert metrics['shelver_consumer_restarts_total{reason="died"}'] == 3
    assert "was in processing when its consumer died (3 time(s)" in shelver.log()


@dataclass
class KillWithBystander:
    """A proxy trap: the PUT of a key containing `poison` kills the consumer (and is dropped),
    once a PUT of a key containing `bystander` is in flight; that PUT is held here until the
    kill, then dropped as the dead consumer's connection would be. Neither waits more than
    `hold` seconds for the other (a consumer that processes them apart only slows this down),
    nor does the poison wait for a bystander already written. Counts the kills, and those that
    had the bystander in flight."""

    poison: str
    bystander: str
    kill: Callable[[], None]
    hold: float = 10.0
    kills: int = 0
    kills_with_bystander: int = 0
    bystander_written: bool = False
    _in_flight: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, method: str, path: str) -> bool:
        if method != "PUT":
            return False
        if self.poison in path:
            with self._changed:
                self._changed.wait_for(lambda: self._in_flight or self.bystander_written,
                                       self.hold)
                with_bystander = self._in_flight > 0
            self.kill()
            with self._changed:
                self.kills += 1
                self.kills_with_bystander += with_bystander
                self._changed.notify_all()
            return True
        if self.bystander in path:
            with self._changed:
                self._in_flight += 1
                self._changed.notify_all()
                kills = self.kills
                killed = self._changed.wait_for(lambda: self.kills > kills, self.hold)
                self._in_flight -= 1
                self.bystander_written = self.bystander_written or not killed
            return killed
        return False


def test_a_valid_book_in_flight_at_a_poison_message_s_crashes_is_not_blamed(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    # The poison book of group A kills its consumer on its PUT while the valid book of group B
    # is mid-PUT, every time they are processed together: only A may be dead-lettered.
    shelver = shelver_factory(stack, CONSUMERS="1", AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    trap = KillWithBystander("Poison", "Bystander",
                             lambda: kill_and_wait(shelver.consumer_pids()))
    s3_proxy.configure(trap=trap)
    sent = [("group-a", book("p-1", "Poison", "scifi")),
            ("group-b", book("v-1", "Bystander", "scifi"))]
    ids = aws.send(stack.input_url, sent)

    wait_until(lambda: aws.drained(stack.input_url), 3 * RECOVERED_WITHIN, 0.3,
               "the input queue to drain")
    print(f"\n{trap.kills} kills, {trap.kills_with_bystander} with the bystander mid-PUT")
    assert trap.kills_with_bystander >= 1, "never killed mid-PUT of the bystander: proves nothing"
    assert trap.kills == 3
    dead_letters = aws.receive_all(stack.dlq_url, expect=1)
    assert [m["MessageAttributes"][ORIGINAL_ID_ATTRIBUTE]["StringValue"]
            for m in dead_letters] == [ids[0]], "a valid book was dead-lettered"
    assert dead_letters[0]["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] == \
        "crashed_consumer"
    assert {key for _, key in aws.objects(stack)} == {"Bystander.json"}
    assert shelver.metrics()['shelver_messages_dead_lettered_total{reason="crashed_consumer"}'] \
        == 1
    assert f"message {ids[1]} was in processing at 1 death(s) of its consumer: processing it " \
        "alone" in shelver.log()


def test_after_the_whole_instance_is_killed_its_messages_come_back_at_start_up(
        aws: Aws, stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory):
    # A lease long enough for the second run to start, on a loaded machine, before the held
    # messages come back by themselves (recovery skips what is about to).
    env = {"CONSUMERS": "1", "AWS_ENDPOINT_URL_S3": s3_proxy.url,
           "VISIBILITY_LEASE_SECONDS": "60"}
    first = shelver_factory(stack, **env)
    first.wait_healthy()

    def kill_everything() -> None:
        # The consumers first, the master frozen meanwhile: killed after it, they would get its
        # death signal and hand back what they hold themselves; running, it would start a
        # replacement that hands them back.
        assert first.process is not None
        master = first.process.pid
        os.kill(master, signal.SIGSTOP)
        kill_and_wait([pid for pid in first.processes() if pid != master])
        kill_and_wait([master])

    trap = KillOnPut("Shelf", kill_everything)
    s3_proxy.configure(trap=trap)
    sent = versions(10)
    aws.send(stack.input_url, sent)
    wait_until(lambda: trap.at, 60, 0.05, "the instance to be killed at its first write")
    wait_until(lambda: first.processes() == [], 15, 0.1, "every process of the first run gone")
    assert aws.counts(stack.input_url) == (0, 10)  # all held by the dead consumer

    second = shelver_factory(stack, port=first.port, **env)  # same state dir
    second.wait_healthy()
    wait_until(lambda: aws.drained(stack.input_url), RECOVERED_WITHIN, 0.2,
               "the input queue to drain")
    print(f"\ndrained {time.monotonic() - trap.at[0]:.1f} s after the kill, restart included")
    assert metric(second, "shelver_messages_recovered_total") == 10
    # Both runs log to the same file: only the second one handed anything back.
    assert second.log().count("handing back what 1 dead consumer(s) held") == 1
    check_stored_in_order(aws, stack, sent)


def test_a_receive_answer_lost_in_transit_comes_back_after_the_lease(
        aws: Aws, aws_env: dict[str, str], stack: Stack, shelver_factory: ShelverFactory):
    # SQS hands out a batch and the answer never reaches the consumer (the proxy lets SQS do
    # the work, then resets the connection): nobody learns those receipt handles, nobody can hand
    # them back. They are hidden for what the receive asked, the lease, not the queue's 300 s.
    lease = 5
    with FaultProxy(aws_env["AWS_ENDPOINT_URL"], journal=True) as sqs_proxy:
        shelver = shelver_factory(stack, AWS_ENDPOINT_URL_SQS=sqs_proxy.url, CONSUMERS="1",
                                  VISIBILITY_LEASE_SECONDS=str(lease))
        shelver.wait_healthy()
        sqs_proxy.configure(late_reset_rate=1.0)
        switched = time.monotonic()

        def receives() -> list[Exchange]:
            return [e for e in sqs_proxy.exchanges()
                    if e.headers.get("x-amz-target") == "AmazonSQS.ReceiveMessage"]

        # A long poll under way when the fault was switched on is answered normally: wait for
        # one that is not, so that the books go to a receive whose answer is lost.
        wait_until(lambda: any(e.arrived > switched for e in receives()), 30, 0.05,
                   "a receive answered and lost")
        sent = versions(6)
        sent_at = time.monotonic()
        aws.send(stack.input_url, sent)
        wait_until(lambda: aws.counts(stack.input_url) == (0, len(sent)), 30, 0.05,
                   "the batch taken by a receive whose answer was lost")
        # The first receive answered after the send took the batch. It may have arrived before
        # the send (a long poll already waiting): match on the answer, not the arrival.
        lost_at = min(e.answered for e in receives() if e.answered > sent_at)
        sqs_proxy.heal()
        wait_until(lambda: aws.drained(stack.input_url), RECOVERED_WITHIN, 0.2,
                   "the input queue to drain")
        back_after = time.monotonic() - lost_at

    print(f"\nlost batch stored and deleted {back_after:.1f} s after its receive was answered "
          f"(lease {lease} s, queue visibility timeout {VISIBILITY} s)")
    assert back_after >= lease - 1, "the batch was not lost: the test proves nothing"
    check_stored_in_order(aws, stack, sent)
