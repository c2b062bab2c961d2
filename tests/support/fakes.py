"""Small fakes shared by the unit tests of a consumer's parts."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from workers.aws.sqs import Message
from workers.lease.files import ConsumerRecord


@dataclass
class FakeClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeTransport:
    """Records every change_visibility call (and, apart, every delete); fails the receipt handles
    listed in `failing`."""

    calls: list[list[tuple[str, int]]] = field(default_factory=list)
    deleted: list[list[str]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        self.calls.append([(m.receipt_handle, seconds) for m, seconds in changes])
        return [m for m, _ in changes if m.receipt_handle in self.failing]

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        self.deleted.append([m.receipt_handle for m in messages])
        return [m for m in messages if m.receipt_handle in self.failing]


def msg(name: str, group: str = "g") -> Message:
    """A message whose receipt handle is `name`."""
    return Message(f"id-{name}", name, "{}", group, 1)


def die(record: ConsumerRecord) -> None:
    """What the kernel does to a consumer's files when its process dies, however it dies: its
    descriptors close, and the lock on its held file goes with them."""
    os.close(record.held._fd)
    os.close(record.processing._fd)
