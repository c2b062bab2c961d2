"""The one way a consumer ends on an internal error: an exception nothing expected (a bug), in
a thread the consumer's correctness depends on.

- the keeper (`workers.consumer.keeper`): without it, held messages are no longer extended, so
  SQS hands them to another consumer while they are still being processed, and an orphan goes
  unnoticed;
- the settle of a batch (`workers.consumer.batches`): it runs as a Future's done-callback, whose
  exceptions concurrent.futures only logs; the batch's messages would stay held, extended up to
  VISIBILITY_CEILING_SECONDS, before anyone else could have them;
- the main loop (`workers.consumer.loop`): nothing would be received any more.

Going on would be a degraded mode nobody sees: the main loop still beats, /health still answers
200. So the thread that caught the exception ends the process at once, logged with its
traceback and counted (`shelver_internal_errors_total{thread}`); the pool replaces it, and the
replacement hands back what it held (`workers.lease.handback`), as after a kill. Unlike a kill,
the death is known not to be the fault of the messages in processing: it is absolved first
(`ProcessingSlots.absolve`), so the recovery counts no crash against them
(`workers.lease.crashes`). Errors of AWS calls (`workers.aws.AWS_ERRORS`) are expected, and
handled where they happen; they never come here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Literal, NoReturn

from workers import metrics
from workers.lease.files import ProcessingSlots

log = logging.getLogger(__name__)

# The threads a consumer cannot go on without; `metrics.INTERNAL_ERROR_THREADS` lists them too.
ConsumerThread = Literal["keeper", "settle", "main"]
# Exit code of a consumer ended by an internal error.
EXIT_INTERNAL_ERROR = 1


def exit_at_once(code: int) -> NoReturn:
    """End the process now, from any thread, with the logs flushed: no interpreter shutdown,
    which would wait for the other threads."""
    logging.shutdown()
    os._exit(code)


def exit_on_internal_error(slot: int, thread: ConsumerThread, exc: BaseException,
                           processing: ProcessingSlots | None,
                           exit_now: Callable[[int], object] = exit_at_once) -> None:
    """Blame no message, log `exc` with its traceback, count it, end the process.
    `processing`: the consumer's slots, None before it has its files."""
    try:
        if processing is not None:
            processing.absolve()
        log.critical("consumer %d: internal error in the %s thread; exiting, for the pool to "
                     "replace this consumer: %r", slot, thread, exc, exc_info=exc,
                     extra={"reason": type(exc).__name__})
        metrics.INTERNAL_ERRORS.labels(thread=thread).inc()
    finally:
        exit_now(EXIT_INTERNAL_ERROR)
