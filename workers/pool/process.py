"""A consumer process as the pool sees it: spawned with multiprocessing's "spawn", watched
through a pidfd (gunicorn's master reaps any child with waitpid(-1), so `Process.is_alive()` and
`exitcode` lie once it has; a pidfd is readable when the process ends, whoever reaps it)."""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import select
from multiprocessing.process import BaseProcess


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
