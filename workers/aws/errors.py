"""What an AWS call raises when AWS, or the way to it, fails, and how a failure is named.

`AWS_ERRORS` is the one tuple every caller catches: an error answer (ClientError), the network
or the credentials (BotoCoreError), an answer that cannot be read (ResponseParserError, which is
no BotoCoreError), and OSError (a socket's, or that of a state file written along the call). A
consumer backs off and retries on any of them; anything else is a bug
(`workers.consumer.internal_errors`). The CLI catches the same without OSError
(`workers.cli.session`).
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

AWS_ERRORS = (ClientError, BotoCoreError, ResponseParserError, OSError)


def failure_reason(exc: BaseException) -> str:
    """A short label for a transient failure, used in logs and as a metric label."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "client_error"))
    return type(exc).__name__


def failure_fields(exc: BaseException) -> dict[str, str]:
    """The structured log fields of a failure (`extra=`, see `workers.logs`)."""
    return {"reason": failure_reason(exc), "error": str(exc)}


def describe(error: BotoCoreError | ClientError, operation: str = "") -> str:
    """One line for an error of an AWS call: `<operation>: <code>: <message>` for an error
    answer; `<operation>: <exception class>: <message>` for a failure without one, whose
    operation only the caller can name."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or "Error"
        message = details.get("Message") or error.response.get(
            "ResponseMetadata", {}).get("HTTPStatusCode", "")
        return f"{error.operation_name}: {code}: {message}"
    return f"{operation + ': ' if operation else ''}{type(error).__name__}: {error}"
