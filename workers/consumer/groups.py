"""One message group, on one processing thread, strictly in order.

Each message is processed (`workers.books.processor`: the processor decides, the store writes)
and, when so decided, dead-lettered (`workers.lease.settle.dead_letter`) before the next one
starts, so a group's dead letters keep its order too. The first message to be retried stops the
group: the ones after it are released, to be handed out again only after it. At a stop, the
messages not started are released. Deletes, back-offs and releases are left to the batch's
settle (`workers.consumer.batches`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers import metrics
from workers.aws.sqs import Message
from workers.lease.settle import Outcome, Result


@dataclass(frozen=True)
class GroupRunner:
    # What should happen to one message (`BookProcessor.process`).
    process: Callable[[Message], Result]
    # Sends a message decided DEAD_LETTERED to the DLQ: the same result, or a RETRY if it
    # could not be sent (`workers.lease.settle.dead_letter`).
    dead_letter: Callable[[Result], Result]
    stopping: Callable[[], bool]

    def run(self, messages: Sequence[Message]) -> list[Result]:
        results: list[Result] = []
        for index, message in enumerate(messages):
            if self.stopping():
                results.extend(Result(m, Outcome.RELEASED, "shutdown") for m in messages[index:])
                break
            result = self.one(message)
            results.append(result)
            if result.outcome is Outcome.RETRY:
                results.extend(Result(m, Outcome.RELEASED, "behind_retry")
                               for m in messages[index + 1:])
                break
        return results

    def one(self, message: Message) -> Result:
        """Process one message, and dead-letter it if so decided."""
        started = time.perf_counter()
        try:
            result = self.process(message)
            if result.outcome is Outcome.DEAD_LETTERED:
                result = self.dead_letter(result)
            return result
        finally:
            metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)
