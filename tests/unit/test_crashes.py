"""The crash registry: counts per message id, shared by the consumers of an instance."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import orjson

from workers.crashes import MAX_ENTRIES, REGISTRY_FILE, CrashRegistry


def test_each_record_counts_one_more_crash_per_message(tmp_path: Path) -> None:
    registry = CrashRegistry(tmp_path, dead_letter_after=3)

    assert registry.record(["m-1", "m-2"]) == {"m-1": 1, "m-2": 1}
    assert registry.record(["m-1"]) == {"m-1": 2}

    assert registry.crashes("m-1") == 2
    assert registry.crashes("m-2") == 1
    assert registry.crashes("m-3") == 0
    assert orjson.loads((tmp_path / REGISTRY_FILE).read_bytes()) == {"m-1": 2, "m-2": 1}


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

    def counting_load() -> dict[str, int]:
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
    assert counts["first"] == 2 and counts["last"] == 1
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
