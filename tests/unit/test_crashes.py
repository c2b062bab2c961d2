"""The crash registry: counts per message id, shared by the consumers of an instance."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from workers.lease.crashes import (
    CRASH_TTL_SECONDS,
    LEGACY_REGISTRY_FILE,
    MAX_ENTRIES,
    REGISTRY_FILE,
    CrashRegistry,
    ProcessingGate,
)


def test_each_record_counts_one_more_crash_per_message(tmp_path: Path) -> None:
    registry = CrashRegistry(tmp_path, dead_letter_after=3)

    assert registry.record(["m-1", "m-2"]) == {"m-1": 1, "m-2": 1}
    assert registry.record(["m-1"]) == {"m-1": 2}

    assert registry.crashes("m-1") == 2
    assert registry.crashes("m-2") == 1
    assert registry.crashes("m-3") == 0
    assert set(orjson.loads((tmp_path / REGISTRY_FILE).read_bytes())) == {"m-1", "m-2"}


def test_another_consumer_sees_a_recorded_crash_after_a_refresh(tmp_path: Path) -> None:
    recorder = CrashRegistry(tmp_path, 3)
    reader = CrashRegistry(tmp_path, 3)
    reader.refresh()  # no file yet
    assert reader.crashes("m-1") == 0

    recorder.record(["m-1"])
    assert reader.crashes("m-1") == 0  # not reloaded until asked
    reader.refresh()
    assert reader.crashes("m-1") == 1

    recorder.record(["m-1"])
    reader.refresh()
    assert reader.crashes("m-1") == 2


def test_an_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    CrashRegistry(tmp_path, 3).record(["m-1"])
    reader = CrashRegistry(tmp_path, 3)
    reader.refresh()
    loads = 0
    original = reader._load

    def counting_load() -> Any:
        nonlocal loads
        loads += 1
        return original()

    reader._load = counting_load  # type: ignore[method-assign]
    for _ in range(5):
        reader.refresh()

    assert loads == 0
    assert reader.crashes("m-1") == 1


def test_a_removed_file_means_no_crashes(tmp_path: Path) -> None:
    registry = CrashRegistry(tmp_path, 3)
    registry.record(["m-1"])
    (tmp_path / REGISTRY_FILE).unlink()

    registry.refresh()

    assert registry.crashes("m-1") == 0


def test_the_registry_keeps_the_most_recently_crashed_ids(tmp_path: Path) -> None:
    registry = CrashRegistry(tmp_path, 3)
    registry.record(["first"])
    registry.record([f"m-{n}" for n in range(MAX_ENTRIES - 1)])
    registry.record(["first"])  # crashed again: now among the most recent

    registry.record(["last"])

    counts = orjson.loads((tmp_path / REGISTRY_FILE).read_bytes())
    assert len(counts) == MAX_ENTRIES
    assert registry.crashes("first") == 2 and registry.crashes("last") == 1
    assert "m-0" not in counts and f"m-{MAX_ENTRIES - 2}" in counts


def _record_many(directory: str, message_id: str, times: int) -> None:
    registry = CrashRegistry(Path(directory), 3)
    for _ in range(times):
        registry.record([message_id])


def test_consumers_recording_at_once_lose_no_count(tmp_path: Path) -> None:
    # Read-modify-write under flock: without it, concurrent updates would overwrite each other.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(str(tmp_path), "m-1", 50))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    registry = CrashRegistry(tmp_path, 3)
    registry.refresh()
    assert registry.crashes("m-1") == 200


# -- counts expire -------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_count_with_no_new_crash_for_the_ttl_expires(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CrashRegistry(tmp_path, 3, clock=clock)
    reader = CrashRegistry(tmp_path, 3, clock=clock)
    recorder.record(["m-1"])
    clock.now += CRASH_TTL_SECONDS - 1
    assert recorder.record(["m-1"]) == {"m-1": 2}  # a new crash starts the TTL again
    reader.refresh()

    clock.now += CRASH_TTL_SECONDS - 1
    assert reader.crashes("m-1") == 2
    clock.now += 2
    assert reader.crashes("m-1") == 0  # expired, though the file did not change

    assert recorder.record(["m-1"]) == {"m-1": 1}  # counted afresh
    assert list(orjson.loads((tmp_path / REGISTRY_FILE).read_bytes())) == ["m-1"]


def test_expired_counts_leave_the_file_at_the_next_record(tmp_path: Path) -> None:
    clock = Clock()
    registry = CrashRegistry(tmp_path, 3, clock=clock)
    registry.record(["old"])
    clock.now += CRASH_TTL_SECONDS + 1

    registry.record(["new"])

    assert list(orjson.loads((tmp_path / REGISTRY_FILE).read_bytes())) == ["new"]


def test_an_earlier_version_s_registry_is_not_read_and_goes_at_the_next_record(
        tmp_path: Path) -> None:
    # Its bare counts may name bystanders; and it stays readable by that version until then,
    # should it be rolled back to.
    legacy = tmp_path / LEGACY_REGISTRY_FILE
    legacy.write_bytes(orjson.dumps({"m-1": 2}))
    registry = CrashRegistry(tmp_path, 3)

    registry.refresh()
    assert registry.crashes("m-1") == 0
    assert legacy.exists()

    assert registry.record(["m-1"]) == {"m-1": 1}
    assert not legacy.exists()


# -- the processing gate -------------------------------------------------------------------------

class Holder:
    """A thread that holds the gate, as `kind`, until released; records when it got in."""

    def __init__(self, gate: ProcessingGate, kind: str, entered: list[str], name: str) -> None:
        self.release = threading.Event()
        self.inside = threading.Event()
        self._enter: Callable[[], contextlib.AbstractContextManager[None]] = (
            gate.alone if kind == "alone" else gate.shared)
        self._entered, self._name = entered, name
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self._enter():
            self._entered.append(self._name)
            self.inside.set()
            self.release.wait(30)

    def done(self) -> None:
        self.release.set()
        self.thread.join(30)


def wait_for(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.fixture
def gate() -> ProcessingGate:
    return ProcessingGate()


def test_ordinary_messages_are_processed_together(gate: ProcessingGate) -> None:
    entered: list[str] = []
    first, second = (Holder(gate, "shared", entered, n) for n in ("first", "second"))

    assert first.inside.wait(30) and second.inside.wait(30)  # both in at once

    first.done()
    second.done()


def test_a_suspect_waits_for_the_messages_in_processing_and_holds_new_ones_back(
        gate: ProcessingGate) -> None:
    entered: list[str] = []
    ordinary = Holder(gate, "shared", entered, "ordinary")
    assert ordinary.inside.wait(30)
    suspect = Holder(gate, "alone", entered, "suspect")
    wait_for(lambda: gate.waiting == 1)
    later = Holder(gate, "shared", entered, "later")
    wait_for(lambda: gate.waiting == 2)

    assert entered == ["ordinary"]
    ordinary.done()
    assert suspect.inside.wait(30)
    assert entered == ["ordinary", "suspect"]  # alone: the later one still waits
    suspect.done()
    assert later.inside.wait(30)
    later.done()
    assert entered == ["ordinary", "suspect", "later"]


def test_suspects_are_processed_one_at_a_time(gate: ProcessingGate) -> None:
    entered: list[str] = []
    first = Holder(gate, "alone", entered, "first")
    assert first.inside.wait(30)
    second = Holder(gate, "alone", entered, "second")
    wait_for(lambda: gate.waiting == 1)

    assert entered == ["first"]
    first.done()
    assert second.inside.wait(30)
    second.done()
