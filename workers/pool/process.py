"""A consumer process as the pool sees it: spawned with multiprocessing's "spawn", watched
through a pidfd (gunicorn's master reaps any child with waitpid(-1), so `Process.is_alive()` and
`exitcode` lie once it has; a pidfd is readable when the process ends, whoever reaps it).

`Process` is what the pool needs of one; the unit tests of its supervision implement it with a
fake, as gunicorn's tests fake `waitpid` for its arbiter.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import os
import select
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Protocol

from workers.consumer.process import ConsumerSpec, consumer_main

_SPAWN = multiprocessing.get_context("spawn")


class Process(Protocol):
    token: str  # names its files in the state dir
    predecessors: tuple[str, ...]  # the dead consumers whose messages it hands back
    pid: int

    def fileno(self) -> int: ...

    def is_dead(self) -> bool: ...

    def signal(self, signum: int) -> None: ...

    def close(self) -> None: ...


def spawn(spec: ConsumerSpec) -> ConsumerProcess:
    """Start a consumer: a fresh interpreter ("spawn"), which inherits no listening socket and
    no boto3 state, whenever it is started."""
    process = _SPAWN.Process(target=consumer_main, args=(spec,),
                             name=f"shelver-consumer-{spec.slot}", daemon=True)
    process.start()
    return ConsumerProcess(process, spec.token, spec.predecessors)


def wait_for_any_death(processes: Sequence[Process], timeout: float) -> None:
    """Until one of `processes` has ended, or `timeout` seconds."""
    select.select(processes, [], [], timeout)


class ConsumerProcess:
    """A spawned consumer and a pidfd that tells when it has ended."""

    def __init__(self, process: BaseProcess, token: str, predecessors: tuple[str, ...]) -> None:
        self.process = process
        self.token = token
        self.predecessors = predecessors  # handed to it: nobody else gets them while it lives
        self.pid: int = process.pid or 0
        try:
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except ProcessLookupError:  # already gone (and reaped by gunicorn)
            self._pidfd = None

    def fileno(self) -> int:
        """Readable once the process has ended, so `select` can watch it."""
        assert self._pidfd is not None
        return self._pidfd

    def is_dead(self) -> bool:
        return self._pidfd is None or bool(select.select([self._pidfd], [], [], 0)[0])

    def signal(self, signum: int) -> None:
        if self._pidfd is not None and not self.is_dead():
            # pidfd_send_signal would be the race-free form; Python has no binding for it, and a
            # live pidfd means the pid has not been recycled yet.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def close(self) -> None:
        self.process.join(0)  # reaps it unless gunicorn's waitpid(-1) already did
        # Never let multiprocessing's exit handler signal or join this pid later: it may be reused.
        multiprocessing.process._children.discard(self.process)  # type: ignore[attr-defined]
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
