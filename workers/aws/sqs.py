"""SQS transport: receive, batched delete, visibility changes, dead-lettering, queue discovery.

Nothing here knows what a book is; processing (`workers.books.processor`) decides what happens to a
message and this module carries it out with as few SQS calls as the API allows.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import ClientError

from workers import tracing
from workers.tracing import OFF, TraceCarrier, Tracing

log = logging.getLogger(__name__)

SQS_BATCH = 10
# A dead letter's attributes count toward the DLQ's MaximumMessageSize with its body (names,
# types and values: LocalStack counts the same way), so a detail is kept readable and short, and
# shorter still if the message is refused with it (`dead_letter`).
_MAX_DETAIL = 1000
SHORT_DETAIL = 100
# The characters SQS accepts in a body and in a string attribute (the XML 1.0 set); SendMessage
# refuses anything else.
_NOT_ALLOWED_IN_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# How SQS refuses a send for good, as botocore reads its answer (Code, the query-compatible code
# from `x-amzn-query-error`, or QueryErrorCode, the JSON protocol's own): the message with its
# attributes exceeds the queue's MaximumMessageSize, or an attribute is invalid (both
# InvalidParameterValue), or the body has characters SQS does not take (InvalidMessageContents).
# Sending the same again cannot succeed.
_REFUSED_FOR_GOOD = frozenset({"InvalidParameterValue", "InvalidParameterValueException",
                               "InvalidMessageContents"})

REASON_ATTRIBUTE = "shelver-reason"
DETAIL_ATTRIBUTE = "shelver-detail"
ORIGINAL_ID_ATTRIBUTE = "shelver-original-message-id"


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    group_id: str
    receive_count: int
    # FIFO only: grows within a message group, so it orders a group's writes of a book.
    sequence: int | None = None
    # When SQS accepted the message (its SentTimestamp, Unix seconds): the metrics' age and lag.
    sent_at: float | None = None
    # With tracing on only: the producer's context the message carries, and the context of the
    # receive span that brought it (for its process span to link to).
    trace: TraceCarrier | None = None
    received: TraceCarrier | None = None
    # The MessageAttributes the receive asked for (`SqsTransport.message_attributes`), as boto3
    # answers them; None when it asked for none or the message has none of them.
    attributes: Mapping[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class QueueInfo:
    url: str
    visibility_timeout: int
    dead_letter_url: str | None
    # The RedrivePolicy's: SQS moves a message received this many times to the DLQ at its next
    # receive, with no reason of ours; None without a RedrivePolicy.
    max_receive_count: int | None = None
    # Shelver needs a FIFO queue: a standard queue's messages carry no MessageGroupId.
    fifo: bool = True
    # The largest message the queue takes (MaximumMessageSize, bytes); None when not asked.
    max_message_size: int | None = None


def chunks(items: Sequence[Any], size: int = SQS_BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def queue_url(sqs: Any, name_or_url: str) -> str:
    """A queue's URL, given either its URL or its name (as `INPUT_QUEUE` may be)."""
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    return str(sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"])


def discover_queue(sqs: Any, name_or_url: str) -> QueueInfo:
    """Resolve the input queue, its visibility timeout, whether it is FIFO, its largest message,
    and the DLQ and maxReceiveCount of its RedrivePolicy."""
    url = queue_url(sqs, name_or_url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy", "FifoQueue",
                                      "MaximumMessageSize"]
    )["Attributes"]
    dead_letter_url = None
    max_receive_count = None
    if "RedrivePolicy" in attributes:
        redrive = orjson.loads(attributes["RedrivePolicy"])
        target_arn = redrive["deadLetterTargetArn"]
        max_receive_count = int(redrive["maxReceiveCount"])
        # arn:aws:sqs:<region>:<account>:<name>
        _, _, _, _, account, dlq_name = target_arn.split(":", 5)
        dead_letter_url = sqs.get_queue_url(
            QueueName=dlq_name, QueueOwnerAWSAccountId=account
        )["QueueUrl"]
    return QueueInfo(
        url=url,
        visibility_timeout=int(attributes["VisibilityTimeout"]),
        dead_letter_url=dead_letter_url,
        max_receive_count=max_receive_count,
        fifo=attributes.get("FifoQueue") == "true",
        max_message_size=int(attributes["MaximumMessageSize"]),
    )


def _sequence(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


def _epoch_seconds(milliseconds: str | None) -> float | None:
    return int(milliseconds) / 1000 if milliseconds and milliseconds.isdigit() else None


# What every receive asks for; with tracing on, also the attributes a context travels in.
_SYSTEM_ATTRIBUTE_NAMES = ["MessageGroupId", "ApproximateReceiveCount", "SequenceNumber",
                           "SentTimestamp"]
_TRACED_SYSTEM_ATTRIBUTE_NAMES = [*_SYSTEM_ATTRIBUTE_NAMES,
                                  *tracing.RECEIVE_SYSTEM_ATTRIBUTE_NAMES]


def _message(raw: Mapping[str, Any], trace: TraceCarrier | None = None,
             received: TraceCarrier | None = None) -> Message:
    attributes = raw["Attributes"]
    return Message(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        group_id=attributes["MessageGroupId"],
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        sequence=_sequence(attributes.get("SequenceNumber")),
        sent_at=_epoch_seconds(attributes.get("SentTimestamp")),
        trace=trace,
        received=received,
        attributes=raw.get("MessageAttributes"),
    )


@dataclass
class SqsTransport:
    receive_client: Any
    client: Any
    queue: QueueInfo
    # Spans for the receive, the dead-letter send and the settling calls (`workers.tracing`).
    tracing: Tracing = OFF
    # The message attributes each receive asks for (the offloaded payloads' sizes).
    message_attributes: tuple[str, ...] = ()

    def receive(self, wait_time_seconds: int, lease_seconds: int) -> list[Message]:
        """Up to a batch of messages, invisible to others for `lease_seconds` (the holder
        extends that while it works on them)."""
        if self.tracing.enabled:
            return self._traced_receive(wait_time_seconds, lease_seconds)
        names = {"MessageAttributeNames": list(self.message_attributes)
                 } if self.message_attributes else {}
        response = self.receive_client.receive_message(
            QueueUrl=self.queue.url,
            MaxNumberOfMessages=SQS_BATCH,
            WaitTimeSeconds=wait_time_seconds,
            VisibilityTimeout=lease_seconds,
            MessageSystemAttributeNames=_SYSTEM_ATTRIBUTE_NAMES,
            **names,
        )
        return [_message(raw) for raw in response.get("Messages", [])]

    def _traced_receive(self, wait_time_seconds: int, lease_seconds: int) -> list[Message]:
        """`receive` with the messages' contexts asked for, and a receive span."""
        started = time.time_ns()
        try:
            response = self.receive_client.receive_message(
                QueueUrl=self.queue.url,
                MaxNumberOfMessages=SQS_BATCH,
                WaitTimeSeconds=wait_time_seconds,
                VisibilityTimeout=lease_seconds,
                MessageSystemAttributeNames=_TRACED_SYSTEM_ATTRIBUTE_NAMES,
                MessageAttributeNames=[*tracing.RECEIVE_ATTRIBUTE_NAMES,
                                       *self.message_attributes],
            )
        except Exception as exc:
            self.tracing.received(self.queue.url, started, [], error=exc)
            raise
        raws = response.get("Messages", [])
        carriers = [TraceCarrier.from_sqs(raw) for raw in raws]
        received = self.tracing.received(self.queue.url, started, carriers)
        return [_message(raw, carrier, received)
                for raw, carrier in zip(raws, carriers, strict=True)]

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        """Delete in batches of ten; return the messages SQS did not delete."""
        if not self.tracing.enabled:
            return self._delete(messages)
        with self.tracing.settle("delete", self.queue.url, [m.trace for m in messages]):
            return self._delete(messages)

    def _delete(self, messages: Sequence[Message]) -> list[Message]:
        failed: list[Message] = []
        for batch in chunks(messages):
            by_id = {str(i): m for i, m in enumerate(batch)}
            response = self.client.delete_message_batch(
                QueueUrl=self.queue.url,
                Entries=[{"Id": i, "ReceiptHandle": m.receipt_handle} for i, m in by_id.items()],
            )
            failed.extend(self._report_failures("delete", by_id, response))
        return failed

    def change_visibility(self, changes: Sequence[tuple[Message, int]],
                          failure_level: int = logging.WARNING) -> list[Message]:
        """Set each message's visibility timeout (seconds from now); return those that failed,
        logged at `failure_level`."""
        if not self.tracing.enabled:
            return self._change_visibility(changes, failure_level)
        with self.tracing.settle("change_visibility", self.queue.url,
                                 [m.trace for m, _ in changes]):
            return self._change_visibility(changes, failure_level)

    def _change_visibility(self, changes: Sequence[tuple[Message, int]],
                           failure_level: int) -> list[Message]:
        failed: list[Message] = []
        for batch in chunks(changes):
            by_id = {str(i): change for i, change in enumerate(batch)}
            response = self.client.change_message_visibility_batch(
                QueueUrl=self.queue.url,
                Entries=[
                    {"Id": i, "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                    for i, (m, seconds) in by_id.items()
                ],
            )
            failed.extend(self._report_failures(
                "change visibility", {i: m for i, (m, _) in by_id.items()}, response,
                failure_level,
            ))
        return failed

    def dead_letter(self, message: Message, reason: str, detail: str) -> None:
        """Copy the message, body untouched, to the DLQ with why it was rejected.

        Refused for good with its attributes (a body near the size limit leaves them no room),
        it is sent again with a short detail, then without attributes: the message is out of
        its group's way at once, and its reason is still in the caller's log line and metric.
        Any other failure is raised, for the message to be retried."""
        if self.queue.dead_letter_url is None:
            raise RuntimeError("no dead-letter queue is configured for the input queue")
        forms = _dead_letter_forms(message, reason, detail)
        with self.tracing.send(self.queue.dead_letter_url) as span:
            for attributes, fallback in zip(forms, [*forms[1:], None], strict=True):
                request = {
                    "QueueUrl": self.queue.dead_letter_url,
                    "MessageBody": message.body,
                    "MessageGroupId": message.group_id,
                    # A retried move (say after a crash between send and delete) is
                    # deduplicated by SQS; a refused send left nothing to deduplicate against.
                    "MessageDeduplicationId": message.message_id,
                    **({"MessageAttributes": attributes} if attributes else {}),
                }
                # The copy carries the send span's context within SQS's 10 attributes; the
                # last form, for a body that leaves no room, in AWSTraceHeader only (which
                # counts toward neither the attributes nor the size).
                room_taken = len(attributes) if attributes else tracing.SQS_MAX_ATTRIBUTES
                try:
                    answer = self.client.send_message(
                        **span.outgoing(room_taken).apply(request))
                    span.sent(str(answer.get("MessageId", "")))
                    return
                except ClientError as exc:
                    if fallback is None or not _refused_for_good(exc):
                        raise
                    error = exc.response.get("Error", {})
                    log.warning("the dead-letter queue refused message %s (%s: %s): sending "
                                "it again %s (reason %s)", message.message_id,
                                error.get("Code"), error.get("Message"),
                                "with a shorter detail" if fallback else "without attributes",
                                reason,
                                extra={"message_id": message.message_id,
                                       "group_id": message.group_id, "reason": reason,
                                       "error": str(error.get("Message"))})

    def depth(self) -> tuple[int, int]:
        """Approximate (visible, in flight) message counts of the input queue."""
        return self._depth(self.queue.url)

    def dead_letter_depth(self) -> tuple[int, int] | None:
        """The same for the dead-letter queue; None when the input queue has none."""
        url = self.queue.dead_letter_url
        return None if url is None else self._depth(url)

    def _depth(self, url: str) -> tuple[int, int]:
        attributes = self.client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    @staticmethod
    def _report_failures(
        action: str, by_id: dict[str, Message], response: dict[str, Any],
        level: int = logging.WARNING,
    ) -> list[Message]:
        failed = []
        for entry in response.get("Failed", []):
            message = by_id[entry["Id"]]
            log.log(level, "SQS could not %s message %s: %s %s", action, message.message_id,
                    entry.get("Code"), entry.get("Message"),
                    extra={"message_id": message.message_id, "group_id": message.group_id,
                           "reason": entry.get("Code"), "error": entry.get("Message")})
            failed.append(message)
        return failed


def _dead_letter_forms(message: Message, reason: str, detail: str
                       ) -> list[dict[str, dict[str, str]]]:
    """The attributes of a dead letter, in the order they are tried: every one, then a short
    detail (if that is shorter), then none. Values are made acceptable to SQS: characters it
    refuses become U+FFFD (a detail quotes the body, whose decoded strings may hold any), and an
    empty value, which it refuses too, is left out."""
    forms: list[dict[str, dict[str, str]]] = []
    for cut in (_MAX_DETAIL, SHORT_DETAIL):
        values = {REASON_ATTRIBUTE: reason, DETAIL_ATTRIBUTE: detail[:cut],
                  ORIGINAL_ID_ATTRIBUTE: message.message_id}
        form = {name: {"DataType": "String",
                       "StringValue": _NOT_ALLOWED_IN_SQS.sub("\ufffd", value)}
                for name, value in values.items() if value}
        if form not in forms:
            forms.append(form)
    return [*forms, {}]


def _refused_for_good(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return bool({error.get("Code"), error.get("QueryErrorCode")} & _REFUSED_FOR_GOOD)
