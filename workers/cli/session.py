"""What every `shelver` command works with: the settings, AWS clients, the error line format.

The clients remember the last operation they started, so an error that botocore raises before
any answer (no connection, no credentials) is still reported with the operation it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config

from workers import aws
from workers.aws.clients import ATTEMPTS, make_session
from workers.aws.errors import describe
from workers.settings import Settings

# botocore raises these; nothing else from AWS reaches the command's top level. The consumers'
# AWS errors without OSError: a command meets OSErrors of its own (a closed pipe), no AWS error.
AWS_ERRORS = tuple(error for error in aws.AWS_ERRORS if error is not OSError)

# An operator waits at a terminal: fail within seconds when the endpoint does not answer.
_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
                 connect_timeout=5, read_timeout=30)


class CommandError(Exception):
    """A failure the command reports in one line, without a traceback (exit code 1)."""


@dataclass
class Session:
    settings: Settings
    sqs: Any = field(init=False)
    s3: Any = field(init=False)
    operation: str = field(default="", init=False)

    def __post_init__(self) -> None:
        session = make_session()
        self.sqs = session.client("sqs", config=_CONFIG)
        self.s3 = session.client("s3", config=_CONFIG)
        for client in (self.sqs, self.s3):
            client.meta.events.register("before-call", self._remember_operation)

    def _remember_operation(self, model: Any, **_: Any) -> None:
        self.operation = str(model.name)

    def describe(self, error: Exception, operation: str = "") -> str:
        """`<operation>: <code>: <message>` for an error of an AWS call; `operation` for one
        not made by these clients."""
        return describe(error, operation or self.operation or "AWS")
