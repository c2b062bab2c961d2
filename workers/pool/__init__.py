"""What runs in the gunicorn master besides gunicorn itself: the pool of consumer processes, and
gunicorn's logger for LOG_FORMAT=json.

- `supervisor`: `ConsumerPool`, the consumers' supervisor (spawn, reap, murder, replace, stop),
  and the stop deadline an orchestrator must allow (`stop_deadline`);
- `process`: one consumer process as the pool watches it (a pidfd);
- `gunicorn_logs`: `JsonLogger`, gunicorn's logger writing JSON lines.

gunicorn.conf.py uses the names below.
"""

from workers.pool.supervisor import (
    HTTP_GRACEFUL_TIMEOUT_SECONDS,
    ConsumerPool,
    consumer_kill_deadline,
    stop_deadline,
)

__all__ = ["HTTP_GRACEFUL_TIMEOUT_SECONDS", "ConsumerPool", "consumer_kill_deadline",
           "stop_deadline"]
