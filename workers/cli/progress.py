"""A live counter for long work, on stderr so that stdout stays the command's result.

On a terminal the counter is rewritten in place; otherwise (a log, a CI job, a pod's output) a
line is written at most every `interval` seconds, so a long task still shows it is moving.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._interval = interval
        self._last = time.monotonic()
        self._shown = False

    def update(self, text: str) -> None:
        if self._live:
            self._stream.write(f"\r\x1b[K{text}")
        elif time.monotonic() - self._last >= self._interval:
            self._stream.write(f"{text}\n")
            self._last = time.monotonic()
        else:
            return
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Remove the live counter, before the result is printed."""
        if self._live and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
        self._shown = False
