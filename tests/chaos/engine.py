"""One chaos scenario, start to finish: a real Shelver drains a workload while faults are
injected, then every invariant of the promise is checked and the figures are collected.

The set-up is the production one with two fault-injecting proxies added: a stack cloned from the
deployed serverless.yml (versioned buckets, so every write stays listed), real gunicorn with its
consumer pool (or several, as replicas on the one queue), and a `FaultProxy` for S3 and one for
SQS between Shelver and the emulator. The test's own AWS calls (sending, counting, checking) go
straight to the emulator.

Invariants (each breach becomes a line in `Row.problems`):
- every valid message was written, and each file ends with the last version of its book;
- no write went backwards within a group: each key's version history is in send order, also
  where versions repeat earlier bytes (`StorageCheck` names such versions by their metadata);
- duplicate writes (a message written twice) stay within what kills make unavoidable;
- the DLQ holds exactly the poison messages, each with its reason; the input queue drains to
  0 visible and 0 in flight;
- every consumer of every live gunicorn ends up alive and healthy, each gunicorn restarting its
  consumers only as often as they were killed; every gunicorn exits 0 on SIGTERM, leaves no
  process behind and logs no traceback; a SIGKILLed master leaves no process and no open port.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import signal
import socket
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.workload import ObjectId, Record, Workload, build_workload
from tests.support.aws import Aws, Stack, wait_until
from tests.support.proxy import FaultProxy
from tests.support.shelver import Shelver
from workers.aws.sqs import ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE
from workers.books.store import metadata_id

# Shelver's settings for every chaos run, over tests.support.shelver.TEST_DEFAULTS: three
# consumers, so killing one never stops the drain, and the production readiness threshold, so
# that /health shows an S3 outage by itself and not because a test shortened the poll age.
CHAOS_ENV = {
    "CONSUMERS": "3",
    "HEALTH_MAX_POLL_AGE_SECONDS": "60",
    "LOG_LEVEL": "INFO",
}
# A killed consumer can have written at most one batch that it never deleted: SQS redelivers it.
DUPLICATES_PER_KILL = 10
# Duplicates that no kill explains (an SQS call lost three times running, say) must stay rare.
STRAY_DUPLICATE_SHARE = 0.01
SEND_CHUNK = 10  # one SendMessageBatch: pacing is that fine
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Size:
    """How big a run is: the reduced size runs in CI, the full one in `make chaos`."""

    messages: int
    groups: int
    send_seconds: float  # sending is spread over this long, so faults land mid-traffic
    outage_seconds: float
    kill_every_seconds: float
    visibility_timeout: int | None  # None: as deployed by serverless.yml
    drain_timeout: float


FULL = Size(messages=2000, groups=64, send_seconds=20, outage_seconds=30, kill_every_seconds=4,
            visibility_timeout=None, drain_timeout=900)
# A killed consumer's messages wait out the visibility timeout: 10 s keeps CI runs short.
REDUCED = Size(messages=200, groups=20, send_seconds=8, outage_seconds=8, kill_every_seconds=3,
               visibility_timeout=10, drain_timeout=300)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # what is done to Shelver, for the table's legend
    inject: Callable[[ChaosRun], None]  # runs in a thread until the run is finished
    poison_share: float = 0.01
    visibility_timeout: int | None = None  # overrides the size's
    groups_factor: int = 1  # more, shorter groups: more groups per received batch
    resize: Callable[[Size], Size] | None = None  # a scenario that needs another shape
    env: Mapping[str, str] = field(default_factory=dict)
    instances: int = 1  # Shelvers started side by side on the queue


@dataclass
class Row:
    """The figures of one run, a row of the table."""

    scenario: str
    sent: int = 0
    books: int = 0
    groups: int = 0
    poison: int = 0
    faults: int = 0
    stored: int = 0
    duplicates: int = 0
    order_violations: int = 0
    lost: int = 0
    dead_lettered: int = 0
    wall_seconds: float = 0.0
    restarts: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # a scenario's measurements


COLUMNS = ("scenario", "books sent", "faults injected", "stored", "duplicate writes",
           "order violations", "lost", "dead-lettered", "wall time", "workload")


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (r.scenario, r.sent, r.faults, r.stored, r.duplicates, r.order_violations,
                 r.lost, r.dead_lettered, f"{r.wall_seconds:.0f} s",
                 f"{r.books} books in {r.groups} groups, {r.sent - r.books - r.poison} later "
                 f"versions, {r.poison} poison")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _name(shelver: Shelver) -> str:
    return f"gunicorn :{shelver.port}"


class Fleet:
    """The gunicorn Shelvers of one run: one, or several replicas on the same queue, each a
    master of its own with its own state and metrics dirs. A scenario may stop, kill or add
    any of them; each one is checked when it goes, and every one still live at the end."""

    def __init__(self, env: dict[str, str], run_dir: Path, problems: list[str]) -> None:
        self.env = env
        self.run_dir = run_dir
        self.problems = problems
        self.shelvers: list[Shelver] = []  # every one started, live or not
        self._live: list[Shelver] = []
        # Consumers SIGKILLed, or orphaned by their master's SIGKILL, per Shelver (by marker):
        # a live Shelver may restart its consumers that often, and each may have written a
        # batch it never deleted.
        self.consumer_kills: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def live(self) -> list[Shelver]:
        """The Shelvers running now, oldest first."""
        with self._lock:
            return list(self._live)

    def consumers(self) -> list[tuple[Shelver, dict[str, Any]]]:
        """Every consumer of every live Shelver, as its /health reports it."""
        found: list[tuple[Shelver, dict[str, Any]]] = []
        for shelver in self.live:
            health = shelver.get("/health").body
            if isinstance(health, dict):
                found.extend((shelver, consumer) for consumer in health["consumers"])
        return found

    def start(self, count: int = 1) -> list[Shelver]:
        """Start `count` Shelvers side by side, and wait until every one is healthy."""
        started = [Shelver(env=self.env, run_dir=self.run_dir) for _ in range(count)]
        with self._lock:
            self.shelvers.extend(started)
            self._live.extend(started)
        for shelver in started:
            shelver.start()
        for shelver in started:
            shelver.wait_healthy(120)
        return started

    def _retire(self, shelver: Shelver) -> None:
        with self._lock:
            self._live.remove(shelver)

    def check_stop(self, shelver: Shelver, timeout: float = 120) -> None:
        """After a SIGTERM: exit 0, nothing left running, no traceback in the log."""
        name = _name(shelver)
        try:
            code = shelver.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"{name} did not exit within {timeout:.0f} s of SIGTERM")
            return
        if code != 0:
            self.problems.append(f"{name} exited with {code} after SIGTERM")
        self._check_gone(shelver)
        if "consumer pool stopped" not in shelver.log():
            self.problems.append(f"{name} never logged 'consumer pool stopped'")

    def _check_gone(self, shelver: Shelver) -> None:
        """None of its processes left, and no traceback in its log."""
        name = _name(shelver)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not shelver.processes(), 15, 0.2, "no process left")
        if shelver.processes():
            self.problems.append(f"{name} left processes behind: {shelver.processes()}")
        log = shelver.log()
        if "Traceback" in log:
            at = log.index("Traceback")
            self.problems.append(f"{name} logged a traceback: {log[at:at + 1500]}")

    def stop(self, shelver: Shelver) -> None:
        self._retire(shelver)
        shelver.signal(signal.SIGTERM)
        self.check_stop(shelver)

    def stop_all(self) -> None:
        """SIGTERM every live Shelver at once, then check each stop."""
        stopping = self.live
        for shelver in stopping:
            self._retire(shelver)
            shelver.signal(signal.SIGTERM)
        for shelver in stopping:
            self.check_stop(shelver)

    def kill(self, shelver: Shelver) -> float:
        """SIGKILL a master: its consumers get a parent-death signal and must hand back what
        they hold and exit, its HTTP workers must follow, and nothing may keep its port.
        Returns the seconds until its last process was gone."""
        self._retire(shelver)
        killed_at = time.monotonic()
        shelver.signal(signal.SIGKILL)
        self.consumer_kills[shelver.marker] += int(shelver.full_env()["CONSUMERS"])
        shelver.wait_exit(30)
        self._check_gone(shelver)
        gone_after = time.monotonic() - killed_at
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", shelver.port)) == 0:
                self.problems.append(f"{_name(shelver)} was SIGKILLed, yet its port still "
                                     "accepts connections")
        return gone_after

    def cleanup(self) -> None:
        for shelver in self.shelvers:
            shelver.stop()  # kills whatever a failed run left behind


class ChaosRun:
    """What a scenario's `inject` sees: the stack, the proxies, the fleet, and the clock."""

    def __init__(self, aws: Aws, stack: Stack, workload: Workload, size: Size,
                 s3_proxy: FaultProxy, sqs_proxy: FaultProxy, fleet: Fleet, row: Row) -> None:
        self.aws = aws
        self.stack = stack
        self.workload = workload
        self.size = size
        self.s3_proxy = s3_proxy
        self.sqs_proxy = sqs_proxy
        self.fleet = fleet
        self.row = row
        self.finished = threading.Event()
        self.random = random.Random(1)
        self.actions = 0  # faults done by the scenario itself: signals
        self.sent = 0

    # -- for scenarios -------------------------------------------------------------------------
    def pause(self, seconds: float) -> bool:
        """Sleep; False as soon as the run is finished (the scenario must then return)."""
        return not self.finished.wait(seconds)

    def progress(self) -> float:
        """Share of the workload finished with (deleted from the input queue)."""
        visible, in_flight = self.aws.counts(self.stack.input_url)
        total = len(self.workload.records)
        return (self.sent - visible - in_flight) / total

    def wait_for_progress(self, share: float) -> bool:
        while self.progress() < share:
            if not self.pause(POLL_SECONDS):
                return False
        return True

    def signal(self, shelver: Shelver, signum: int) -> None:
        shelver.signal(signum)
        self.actions += 1

    def stop(self, shelver: Shelver) -> None:
        """SIGTERM one Shelver and check its stop (exit 0, nothing left behind)."""
        self.actions += 1
        self.fleet.stop(shelver)

    def kill_master(self, shelver: Shelver) -> float:
        """SIGKILL one Shelver's master and check that none of its processes outlives it;
        returns the seconds until the last one was gone."""
        self.actions += 1
        return self.fleet.kill(shelver)

    def kill_consumer(self) -> None:
        """SIGKILL one live consumer of any live Shelver, chosen at random."""
        targets = [(shelver, c["pid"]) for shelver, c in self.fleet.consumers() if c["alive"]]
        if not targets:
            return
        shelver, victim = self.random.choice(targets)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
            self.fleet.consumer_kills[shelver.marker] += 1
            self.actions += 1

    def problem(self, text: str) -> None:
        self.row.problems.append(text)

    def note(self, text: str) -> None:
        self.row.notes.append(text)

    # -- for the engine ------------------------------------------------------------------------
    def inject(self, scenario: Scenario) -> None:
        try:
            scenario.inject(self)
        except Exception:
            self.problem(f"the scenario's injector failed: {traceback.format_exc()}")

    def send(self) -> list[str]:
        """Send the workload in order, spread over `send_seconds`; return the message ids."""
        pairs = self.workload.pairs()
        ids: list[str] = []
        started = time.monotonic()
        for start in range(0, len(pairs), SEND_CHUNK):
            ids.extend(self.aws.send(self.stack.input_url, pairs[start:start + SEND_CHUNK]))
            self.sent = len(ids)
            due = started + self.size.send_seconds * len(ids) / len(pairs)
            time.sleep(max(0.0, due - time.monotonic()))
        return ids

    def wait_drained(self) -> bool:
        try:
            wait_until(lambda: self.aws.drained(self.stack.input_url),
                       self.size.drain_timeout, POLL_SECONDS, "the input queue to drain")
        except AssertionError:
            visible, in_flight = self.aws.counts(self.stack.input_url)
            self.problem(f"the input queue did not drain within {self.size.drain_timeout:.0f} s:"
                         f" {visible} visible, {in_flight} in flight")
            return False
        return True

    def check_consumers(self) -> None:
        """No crash loop: on every live Shelver all consumers are alive and healthy again, and
        each Shelver restarted its consumers no more often than they were killed."""
        for shelver in self.fleet.live:
            name = _name(shelver)
            try:
                shelver.wait_healthy(120)
            except AssertionError as exc:
                self.problem(f"{name}: consumers not healthy after the run: {exc}: "
                             f"{shelver.get('/health').body}")
                continue
            restarts = sum(c["restarts"] for c in shelver.get("/health").body["consumers"])
            kills = self.fleet.consumer_kills[shelver.marker]
            self.row.restarts += restarts
            if restarts > kills:
                self.problem(f"{name}: {restarts} consumer restarts for {kills} kills: "
                             "a consumer died on its own")


def run_scenario(aws: Aws, aws_env: Mapping[str, str], run_dir: Path, scenario: Scenario,
                 size: Size, seed: int = 0) -> Row:
    """Run one scenario against its own fresh stack; never raises for a broken invariant."""
    if scenario.resize is not None:
        size = scenario.resize(size)
    run_tag = uuid.uuid4().hex[:6]
    workload = build_workload(size.messages, size.groups * scenario.groups_factor,
                              scenario.poison_share, run_tag, seed)
    row = Row(scenario.name, sent=len(workload.records), books=len(workload.final),
              groups=workload.groups, poison=len(workload.poison))
    visibility = scenario.visibility_timeout or size.visibility_timeout
    stack = aws.clone_stack(visibility_timeout=visibility, versioned=True)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(aws.delete_stack, stack)
        s3_proxy = cleanup.enter_context(FaultProxy(aws_env["AWS_ENDPOINT_URL"]))
        sqs_proxy = cleanup.enter_context(FaultProxy(aws_env["AWS_ENDPOINT_URL"]))
        env = {**aws_env, **stack.shelver_env(), **CHAOS_ENV, **scenario.env,
               "AWS_ENDPOINT_URL_S3": s3_proxy.url, "AWS_ENDPOINT_URL_SQS": sqs_proxy.url}
        fleet = Fleet(env, run_dir / f"{scenario.name}-{run_tag}", row.problems)
        fleet.run_dir.mkdir(parents=True)
        cleanup.callback(fleet.cleanup)
        run = ChaosRun(aws, stack, workload, size, s3_proxy, sqs_proxy, fleet, row)

        started = time.monotonic()
        fleet.start(scenario.instances)
        injector = threading.Thread(target=run.inject, args=(scenario,), name="chaos-inject",
                                    daemon=True)
        injector.start()
        ids = run.send()
        drained = run.wait_drained()
        row.wall_seconds = time.monotonic() - started
        run.finished.set()
        injector.join(120)
        s3_proxy.heal()
        sqs_proxy.heal()
        if drained:
            run.check_consumers()
        fleet.stop_all()
        row.faults = run.actions + sum(p.faults() + p.counters()["delayed"]
                                       for p in (s3_proxy, sqs_proxy))
        check_storage(aws, stack, workload, ids, row)
        check_dead_letters(aws, stack, workload, ids, row)
        kills = sum(fleet.consumer_kills.values())
        allowance = DUPLICATES_PER_KILL * kills + math.ceil(
            STRAY_DUPLICATE_SHARE * len(workload.valid))
        if row.duplicates > allowance:
            row.problems.append(f"{row.duplicates} duplicate writes, more than the {allowance} "
                                f"that {kills} consumer kill(s) can explain")
        if aws.counts(stack.input_url) != (0, 0):
            row.problems.append(f"input queue not empty at the end: {aws.counts(stack.input_url)}")
    return row


def check_storage(aws: Aws, stack: Stack, workload: Workload, ids: Sequence[str],
                  row: Row) -> None:
    """Stored, lost, duplicate and out-of-order writes, from each key's version history."""
    check = StorageCheck(workload, ids, row)
    for genre, bucket in stack.buckets.items():
        for key, history in aws.object_versions(bucket).items():
            check.history((genre, key), history,
                          functools.partial(aws.version_metadata, bucket, key))
    check.finish()


class StorageCheck:
    """Which message wrote each version of each key, and what that says about the run.

    A version whose ETag (the MD5 of its body) is one message's body is that message's write. A
    book's versions may repeat earlier bytes, so an ETag may be several messages' bodies; such a
    version is named by the `message-id` metadata Shelver wrote with it (a HeadObject of that
    version), which must be one of them. Not by a guess: matching an ambiguous ETag to whichever
    message keeps the history in order would hide the very rewind the check is for (seq 5 put
    over seq 7, both body A, reads A, A either way, yet the file now says seq 5 and the next
    redelivery of seq 6 would be let through). Metadata is read only where the ETag is
    ambiguous: naming by a unique ETag is exact, and costs no request.
    """

    def __init__(self, workload: Workload, ids: Sequence[str], row: Row) -> None:
        self.workload = workload
        self.row = row
        # As the metadata holds a message id (`metadata_id`: SQS's ids come out unchanged).
        self._by_id = {metadata_id(i): r for i, r in zip(ids, workload.records, strict=True)}
        self._writes: Counter[Record] = Counter()

    def history(self, where: ObjectId, newest_first: Sequence[tuple[str, str]],
                metadata: Callable[[str], Mapping[str, str]]) -> None:
        """One key's history as `Aws.object_versions` lists it: (version id, ETag), newest
        first; `metadata` reads a version's user metadata, given its version id."""
        genre, key = where
        records: list[Record] = []
        for version_id, etag in reversed(newest_first):
            record = self._writer(where, version_id, etag, metadata)
            if record is None:
                return
            records.append(record)
        if any((r.genre, r.key) != where for r in records):
            self.row.problems.append(f"{genre}/{key}: holds another book's content")
        highest = 0
        for record in records:
            self._writes[record] += 1
            if record.version < highest:
                self.row.order_violations += 1
                self.row.problems.append(f"{genre}/{key}: version {record.version} written "
                                         f"after version {highest}")
            highest = max(highest, record.version)
        final = self.workload.final.get(where)
        if final is not None and records[-1] is not final:
            self.row.problems.append(f"{genre}/{key}: ends with version {records[-1].version},"
                                     f" the last sent is {final.version}")

    def _writer(self, where: ObjectId, version_id: str, etag: str,
                metadata: Callable[[str], Mapping[str, str]]) -> Record | None:
        """The message that wrote this version; None (and a problem) if none can have."""
        genre, key = where
        candidates = self.workload.by_etag.get(etag, ())
        if not candidates:
            self.row.problems.append(f"{genre}/{key}: content that no message sent")
            return None
        if len(candidates) == 1:
            return candidates[0]
        named = metadata(version_id).get("message-id", "")
        record = self._by_id.get(named)
        if record not in candidates:
            self.row.problems.append(
                f"{genre}/{key}: version {version_id} holds the bytes of versions "
                f"{', '.join(str(c.version) for c in candidates)}, but its metadata names "
                f"message {named or '(none)'}")
            return None
        return record

    def finish(self) -> None:
        """Stored, duplicates and lost, once every key was seen."""
        row = self.row
        row.stored = sum(1 for r in self.workload.valid if self._writes[r])
        row.duplicates = sum(count - 1 for count in self._writes.values())
        missing = [r for r in self.workload.valid if not self._writes[r]]
        row.lost += len(missing)
        if missing:
            row.problems.append(f"{len(missing)} valid message(s) never written, e.g. "
                                + ", ".join(f"{r.key} v{r.version}" for r in missing[:5]))


def check_dead_letters(aws: Aws, stack: Stack, workload: Workload, ids: list[str],
                       row: Row) -> None:
    """The DLQ must hold each poison message once, with its reason, and nothing else."""
    by_id = dict(zip(ids, workload.records, strict=True))
    dead = aws.receive_all(stack.dlq_url, wait=10 + len(workload.poison) / 10,
                           expect=len(workload.poison))
    row.dead_lettered = len(dead)
    seen: Counter[str] = Counter()
    for message in dead:
        attributes = message.get("MessageAttributes", {})
        # SQS's own redrive (maxReceiveCount) keeps the message id and adds no reason.
        original = attributes.get(ORIGINAL_ID_ATTRIBUTE, {}).get("StringValue",
                                                                 message["MessageId"])
        reason = attributes.get(REASON_ATTRIBUTE, {}).get("StringValue", "")
        record = by_id.get(original)
        seen[original] += 1
        if record is None:
            row.problems.append(f"DLQ holds a message nobody sent: {message['Body'][:80]!r}")
        elif not record.poison:
            row.problems.append(f"valid book {record.key} v{record.version} in the DLQ "
                                f"(reason {reason or 'none: moved by SQS redrive'})")
        elif reason != record.reason:
            row.problems.append(f"poison message {original} dead-lettered as {reason!r}, "
                                f"expected {record.reason!r}")
    twice = [i for i, n in seen.items() if n > 1]
    if twice:
        row.problems.append(f"{len(twice)} message(s) dead-lettered more than once")
    missing = [i for i, r in by_id.items() if r.poison and i not in seen]
    row.lost += len(missing)
    if missing:
        row.problems.append(f"{len(missing)} poison message(s) missing from the DLQ")
