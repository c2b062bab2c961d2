"""LocalStack's runtime (`python -m localstack.runtime.main`) with one fix to its SQS FIFO model.

Runs in LocalStack's own venv (.venv-localstack, Python 3.13), started by scripts/emulator.py and
by compose.yaml's LocalStack image; it imports nothing of Shelver.

The defect (localstack-core 2026.3.0, `localstack/services/sqs/models.py`, `FifoQueue`): SQS
hands a FIFO message group to one receiver at a time. LocalStack tracks that in
`inflight_groups`, but `receive` adds a group it has just taken off `message_group_queue` to that
set *outside* the queue's mutex. When several previously received messages of one group become
visible in one locked step (a `ChangeMessageVisibilityBatch` to 0, or their visibility timeouts
running out together), the first makes the group visible and wakes a long-polling receiver,
which marks the group in flight without waiting for the mutex; the next message of the batch
then finds the group "in flight", makes it visible again and wakes a second receiver; and so on.
Each receiver then takes its share of the group: the group is processed by several consumers at
once, out of order. `tests/e2e/test_emulator.py` reproduces it: a group's ten messages made
visible by one batch call while six receivers long-poll for three messages each; without this
fix, two to five receivers got messages of the group in 15 of 20 trials (and the test fails),
with it exactly one, every time.

Shelver hands a dead consumer's messages back exactly that way (workers/lease/handback.py), and the
chaos suite's consumer-kills scenario caught the emulator at it: one book version never written,
because a later one of its group had been stored first by another consumer. On SQS that cannot
happen. The suites must test Shelver against SQS's contract, not against this race, so the fix
takes the queue's mutex for that one `add`: the receiver then waits until the batch (or the
requeue of expired messages) is done, and the group goes to one receiver, as on SQS.

LocalStack issue 12457 (open) reports another of its FIFO visibility deviations.
"""

from __future__ import annotations

import inspect
import runpy
import threading
from typing import Any

from localstack.services.sqs import models

# The line the fix is for: if LocalStack's receive no longer has it, the fix may be wrong or
# unneeded, and starting anyway would test against an emulator nobody looked at.
UNLOCKED_ADD = "self.inflight_groups.add(group)"


class InflightGroups(set):  # type: ignore[type-arg]
    """`FifoQueue.inflight_groups` whose `add` holds the queue's mutex (an RLock, so the calls
    LocalStack makes while holding it are unaffected)."""

    def __init__(self, mutex: threading.RLock, groups: set[Any]) -> None:
        super().__init__(groups)
        self._mutex = mutex

    def add(self, group: Any) -> None:
        with self._mutex:
            super().add(group)


def install() -> None:
    receive = inspect.getsource(models.FifoQueue.receive)
    if UNLOCKED_ADD not in receive:
        raise SystemExit(f"scripts/localstack_runtime.py: LocalStack's FifoQueue.receive no longer "
                         f"contains {UNLOCKED_ADD!r}: review the FIFO fix against this version")
    original_init = models.FifoQueue.__init__

    def __init__(self: models.FifoQueue, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.inflight_groups = InflightGroups(self.mutex, self.inflight_groups)

    models.FifoQueue.__init__ = __init__


if __name__ == "__main__":
    install()
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
