"""A consumer's files in the state dir: the held file, the processing slots, their lifecycle."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.fakes import die, msg
from workers.lease.files import (
    SLOT_BYTES,
    Activity,
    ConsumerRecord,
    HeldEntry,
    HeldFile,
    ProcessingSlots,
    TornFile,
    held_path,
    owner_alive,
    processing_path,
    read_held,
    read_processing,
    tokens,
)

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/in.fifo"


def test_the_held_file_lists_messages_in_the_order_given(tmp_path: Path) -> None:
    held = HeldFile(tmp_path, "tok", QUEUE)

    held.write([(msg("b", "g1"), 100.5), (msg("a", "g2"), 90.0)])

    record = read_held(held_path(tmp_path, "tok"))
    assert record.queue_url == QUEUE
    assert record.entries == [HeldEntry("id-b", "g1", "b", 100.5),
                              HeldEntry("id-a", "g2", "a", 90.0)]
    assert not held.empty


def test_each_write_replaces_the_whole_file(tmp_path: Path) -> None:
    held = HeldFile(tmp_path, "tok", QUEUE)
    held.write([(msg("a"), 1.0), (msg("b"), 2.0)])

    held.write([(msg("b"), 3.0)])

    assert read_held(held.path).entries == [HeldEntry("id-b", "g", "b", 3.0)]
    held.write([])
    assert read_held(held.path).entries == []
    assert held.empty


def test_a_shorter_content_written_over_a_longer_one_reads_alone(tmp_path: Path) -> None:
    held = HeldFile(tmp_path, "tok", QUEUE)
    held.write([(msg(f"m{n}"), 1.0) for n in range(20)])
    long_size = held.path.stat().st_size
    held.write([(msg("z"), 2.0)])

    assert held.path.stat().st_size < long_size
    assert read_held(held.path).entries == [HeldEntry("id-z", "g", "z", 2.0)]


@pytest.mark.parametrize("tear", [
    pytest.param(lambda data: data[:len(data) // 2], id="cut short"),
    pytest.param(lambda data: data[:40] + b"X" + data[41:], id="old bytes under a new header"),
    pytest.param(lambda data: b"", id="empty"),
    pytest.param(lambda data: b"{not a header" + data[13:], id="no header"),
])
def test_a_file_torn_by_the_writer_s_death_is_refused(
        tmp_path: Path, tear: Callable[[bytes], bytes]) -> None:
    # A SIGKILL can stop a write between pages: what is on disk is part new, part old.
    held = HeldFile(tmp_path, "tok", QUEUE)
    held.write([(msg("a"), 1.0), (msg("b"), 2.0)])
    held.path.write_bytes(tear(held.path.read_bytes()))

    with pytest.raises(TornFile):
        read_held(held.path)


def test_a_missing_held_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_held(held_path(tmp_path, "nobody"))


def test_slots_say_which_message_each_thread_is_on(tmp_path: Path) -> None:
    slots = ProcessingSlots(tmp_path, "tok", threads=2)
    path = processing_path(tmp_path, "tok")
    assert read_processing(path) == Activity(None, [])
    assert path.stat().st_size == 3 * SLOT_BYTES  # the receive slot and one per thread

    slots.begin("m-main")
    other = threading.Thread(target=slots.begin, args=("m-other",))
    other.start()
    other.join()
    assert read_processing(path).in_processing == ["m-main", "m-other"]

    slots.end()  # this thread's slot only
    assert read_processing(path).in_processing == ["m-other"]
    slots.begin("m-next")  # the same slot again
    assert read_processing(path).in_processing == ["m-next", "m-other"]


def test_more_threads_than_planned_grow_the_file(tmp_path: Path) -> None:
    slots = ProcessingSlots(tmp_path, "tok", threads=1)
    threads = [threading.Thread(target=slots.begin, args=(f"m-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
        thread.join()

    assert sorted(read_processing(slots.path).in_processing) == ["m-0", "m-1", "m-2"]


def test_a_receive_in_progress_is_marked_until_its_long_poll_ends(tmp_path: Path) -> None:
    slots = ProcessingSlots(tmp_path, "tok", threads=1, wall=lambda: 1000.0)

    with slots.receiving(20):
        assert read_processing(slots.path).receive_until == 1020.0

    assert read_processing(slots.path).receive_until is None
    with pytest.raises(OSError), slots.receiving(20):
        raise OSError("connection reset")  # the call is over: not marked any more
    assert read_processing(slots.path).receive_until is None


class Abandoned(BaseException):
    pass


def test_a_receive_abandoned_at_a_stop_stays_marked(tmp_path: Path) -> None:
    slots = ProcessingSlots(tmp_path, "tok", threads=1, wall=lambda: 1000.0)

    with pytest.raises(Abandoned), slots.receiving(20):
        raise Abandoned  # SQS may still answer the poll

    assert read_processing(slots.path).receive_until == 1020.0


def test_tokens_are_found_from_either_file(tmp_path: Path) -> None:
    HeldFile(tmp_path, "both", QUEUE).write([])
    ProcessingSlots(tmp_path, "both", 1)
    HeldFile(tmp_path, "held-only", QUEUE).write([])
    ProcessingSlots(tmp_path, "slots-only", 1)
    (tmp_path / "crash-counts.json").write_text("{}")

    assert tokens(tmp_path) == {"both", "held-only", "slots-only"}
    assert tokens(tmp_path / "missing") == set()


def test_a_clean_close_leaves_nothing_when_nothing_is_held(tmp_path: Path) -> None:
    record = ConsumerRecord(tmp_path / "recovery", "tok", QUEUE, threads=2)
    record.processing.begin("m-1")  # a thread busy at the stop: not a crash

    record.close()

    assert list((tmp_path / "recovery").iterdir()) == []


def test_a_close_keeps_what_is_still_held(tmp_path: Path) -> None:
    record = ConsumerRecord(tmp_path, "tok", QUEUE, threads=2)
    record.held.write([(msg("a"), 5.0)])
    record.processing.begin("id-a")

    record.close()

    assert tokens(tmp_path) == {"tok"}
    assert read_held(record.held.path).entries == [HeldEntry("id-a", "g", "a", 5.0)]
    assert read_processing(record.processing.path) == Activity()  # no crash to count


def test_absolved_slots_stay_blank_and_the_receive_stays_marked(tmp_path: Path) -> None:
    slots = ProcessingSlots(tmp_path, "tok", threads=2, wall=lambda: 1000.0)
    slots.begin("m-main")
    with pytest.raises(Abandoned), slots.receiving(20):
        raise Abandoned  # a long poll SQS may still answer

    slots.absolve()  # the process is about to die of a bug, not of its messages
    late = threading.Thread(target=slots.begin, args=("m-late",))  # a thread's next message
    late.start()
    late.join()
    slots.begin("m-main-next")

    # No crash to count against any message, and the successor still waits for the receive.
    assert read_processing(slots.path) == Activity(1020.0, [])


def test_a_consumer_is_alive_while_its_process_holds_its_held_file(tmp_path: Path) -> None:
    record = ConsumerRecord(tmp_path, "tok", QUEUE, threads=1)
    assert owner_alive(tmp_path, "tok")
    assert owner_alive(tmp_path, "tok")  # asking does not take the lock away

    die(record)

    assert not owner_alive(tmp_path, "tok")
    assert not owner_alive(tmp_path, "never-existed")
