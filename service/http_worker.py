"""Shelver's HTTP worker class (gunicorn.conf.py `worker_class`): gunicorn's asyncio worker, told
of a stop at once. service/asgi.py says why this worker and not gthread.

gunicorn's ASGIWorker looks at `alive` once a second, between sleeps of its serving loop, so a
SIGTERM waited up to a second before the graceful shutdown even began: a stop took a second longer
than under gthread, whose signal handler wakes its loop. Here the handler ends that sleep; the
loop catches the cancellation and goes on to the worker's own graceful shutdown, unchanged.

Imported by the gunicorn master (it loads the worker class), so nothing of Flask's here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gunicorn.workers.gasgi import ASGIWorker


class Worker(ASGIWorker):  # type: ignore[misc]  # gunicorn has no type hints
    _serving: asyncio.Task[Any] | None = None

    async def _serve(self) -> None:
        self._serving = asyncio.current_task()
        await super()._serve()

    def handle_exit_signal(self) -> None:
        # Only once its listeners are up (a stop during start-up is looked at by the loop) and
        # only the first time: a second SIGTERM must not cut the graceful shutdown short.
        in_loop = self.alive and bool(self.servers)
        super().handle_exit_signal()
        if in_loop and self._serving is not None:
            self._serving.cancel()
