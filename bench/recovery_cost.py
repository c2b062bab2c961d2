"""`python -m bench.recovery_cost [DIR ...]`: what keeping a consumer's held messages and
processing slots in the state dir (workers/lease/files.py) costs per message, on the file systems
of the given directories (default: /dev/shm, a tmpfs as in a container, and the temp dir).

Per message: one processing-slot write at its start and one at its end. Per received batch of
ten: the held file is rewritten when the batch is held and when it is settled (more when the
keeper extends, or when part of it is released), here with two more batches held, as a pipelined
consumer has: 30 entries with receipt handles of AWS's length.

And what the processing gate (workers/lease/crashes.py: a message with a recorded crash is processed
alone) costs an ordinary message, which only shares it: entering and leaving it, on one thread,
and on CONSUMER_THREADS threads at once (4, the default 8, and 16) contending for it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

from workers.aws.sqs import Message, SqsTransport
from workers.lease.crashes import ProcessingGate
from workers.lease.files import ConsumerRecord
from workers.lease.held import HeldMessages

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/InputQueue.fifo"
RECEIPT_HANDLE_CHARS = 300  # AWS's are 180 to 400 characters
BATCH = 10


class _NoSqs:
    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = 0) -> list[Message]:
        return []


def measure(directory: Path, messages: int = 20_000, batches: int = 3_000) -> tuple[float, float]:
    """(slot writes per message, held-file writes per message), in microseconds."""
    record = ConsumerRecord(Path(tempfile.mkdtemp(dir=directory)), "bench", QUEUE, threads=16)
    held = HeldMessages(cast(SqsTransport, _NoSqs()), 60, 3600, record=record)
    pool = [Message(str(uuid.uuid4()), "x" * RECEIPT_HANDLE_CHARS, "{}", f"group-{n % 7}", 1)
            for n in range(3 * BATCH)]
    started = time.perf_counter()
    for n in range(messages):
        record.processing.begin(pool[n % len(pool)].message_id)
        record.processing.end()
    slots = (time.perf_counter() - started) / messages
    held.hold(pool[:2 * BATCH], time.monotonic())
    started = time.perf_counter()
    for _ in range(batches):
        held.hold(pool[2 * BATCH:], time.monotonic())
        held.forget(pool[2 * BATCH:])
    rewrites = (time.perf_counter() - started) / batches / BATCH
    return slots * 1e6, rewrites * 1e6


def gate_cost(threads: int, messages: int = 400_000) -> float:
    """Microseconds per ordinary message to share the processing gate, `threads` at once."""
    gate = ProcessingGate()

    def share(count: int) -> None:
        for _ in range(count):
            with gate.shared():
                pass

    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        for future in [pool.submit(share, messages // threads) for _ in range(threads)]:
            future.result()
        elapsed = time.perf_counter() - started
    return elapsed / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path,
                        default=[Path("/dev/shm"), Path(tempfile.gettempdir())])
    for directory in parser.parse_args().directories:
        slots, held = measure(directory)
        print(f"{directory}: {slots:.1f} us/message for the processing slots, {held:.1f} us/"
              f"message for the held file, {slots + held:.1f} us/message in all")
    print("processing gate, ordinary messages: " + ", ".join(
        f"{gate_cost(threads):.2f} us/message on {threads} thread(s)" for threads in (1, 4, 16)))


if __name__ == "__main__":
    main()
