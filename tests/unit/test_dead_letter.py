"""Dead-lettering a message SQS refuses with its attributes: the attributes count toward the
queue's MaximumMessageSize, and SQS accepts only some characters in them. A refusal for good is
answered with a shorter detail, then with no attributes at all, never with a retry of the same
send; attribute values are made valid before the first send.

The refusals are scripted as botocore parses LocalStack's (and SQS's) answers: a 400 with
`x-amzn-query-error: InvalidParameterValue;Sender`, so Code `InvalidParameterValue` and
QueryErrorCode `InvalidParameterValueException`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from workers.aws.sqs import (
    DETAIL_ATTRIBUTE,
    ORIGINAL_ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    Message,
    QueueInfo,
    SqsTransport,
)

DLQ_URL = "https://sqs.us-east-1.amazonaws.com/000000000000/books-dlq.fifo"
MESSAGE = Message("0b5e-original-id", "rh", '{"genre": "horror"}', "group-1", 1)


def refusal(code: str = "InvalidParameterValue",
            query_code: str = "InvalidParameterValueException",
            text: str = "One or more parameters are invalid. Reason: Message must be shorter "
                        "than 1048576 bytes.", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "QueryErrorCode": query_code, "Message": text,
                                  "Type": "Sender"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "SendMessage")


@dataclass
class ScriptedSqs:
    """Records every send_message; raises the scripted errors first, in order."""

    errors: list[ClientError] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_message(self, **params: Any) -> dict[str, Any]:
        self.sent.append(params)
        if self.errors:
            raise self.errors.pop(0)
        return {"MessageId": f"dlq-{len(self.sent)}"}

    def attributes(self, send: int) -> dict[str, str]:
        return {name: value["StringValue"]
                for name, value in self.sent[send].get("MessageAttributes", {}).items()}


def transport(sqs: ScriptedSqs) -> SqsTransport:
    return SqsTransport(sqs, sqs, QueueInfo("https://sqs/input.fifo", 60, DLQ_URL))


def test_the_common_case_is_one_send_with_every_attribute() -> None:
    sqs = ScriptedSqs()

    transport(sqs).dead_letter(MESSAGE, "unknown_genre", "genre 'horror' has no bucket")

    assert len(sqs.sent) == 1
    assert sqs.attributes(0) == {REASON_ATTRIBUTE: "unknown_genre",
                                 DETAIL_ATTRIBUTE: "genre 'horror' has no bucket",
                                 ORIGINAL_ID_ATTRIBUTE: MESSAGE.message_id}


def test_too_large_with_its_detail_it_is_sent_again_with_a_short_detail(
        caplog: pytest.LogCaptureFixture) -> None:
    sqs = ScriptedSqs([refusal()])
    detail = "genre '" + "x" * 3000 + "' has no bucket"

    transport(sqs).dead_letter(MESSAGE, "unknown_genre", detail)

    assert len(sqs.sent) == 2
    short = sqs.attributes(1).pop(DETAIL_ATTRIBUTE)
    assert short == detail[:100]
    assert sqs.attributes(1) == {REASON_ATTRIBUTE: "unknown_genre", DETAIL_ATTRIBUTE: short,
                                 ORIGINAL_ID_ATTRIBUTE: MESSAGE.message_id}
    # The same message, only the attributes differ: the body untouched, deduplicated as one.
    for send in sqs.sent:
        assert (send["QueueUrl"], send["MessageBody"], send["MessageGroupId"],
                send["MessageDeduplicationId"]) == (DLQ_URL, MESSAGE.body, "group-1",
                                                    MESSAGE.message_id)
    assert "shorter detail" in caplog.text


def test_refused_with_a_short_detail_too_it_is_sent_without_attributes(
        caplog: pytest.LogCaptureFixture) -> None:
    sqs = ScriptedSqs([refusal(), refusal()])

    with caplog.at_level(logging.WARNING):
        transport(sqs).dead_letter(MESSAGE, "unknown_genre", "x" * 3000)

    assert len(sqs.sent) == 3
    assert "MessageAttributes" not in sqs.sent[2]
    assert sqs.sent[2]["MessageBody"] == MESSAGE.body
    # The reason is not lost: the log line names it (and processing counts it).
    [record] = [r for r in caplog.records if "without attributes" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.reason == "unknown_genre"  # type: ignore[attr-defined]
    assert record.message_id == MESSAGE.message_id  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [
    refusal("InvalidParameterValue", "InvalidParameterValueException",
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | ..."),
    refusal("InvalidMessageContents", "InvalidMessageContents",
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | ..."),
    # The JSON protocol's own name, should an answer come without x-amzn-query-error.
    refusal("InvalidParameterValueException", "", "Message must be shorter than 262144 bytes."),
], ids=["attribute-characters", "message-contents", "json-code"])
def test_every_refusal_for_good_falls_back(error: ClientError) -> None:
    sqs = ScriptedSqs([error])

    transport(sqs).dead_letter(MESSAGE, "not_json", "detail")

    assert len(sqs.sent) == 2


def test_a_detail_short_already_is_not_sent_twice() -> None:
    sqs = ScriptedSqs([refusal()])

    transport(sqs).dead_letter(MESSAGE, "unknown_genre", "genre 'horror' has no bucket")

    assert len(sqs.sent) == 2
    assert "MessageAttributes" not in sqs.sent[1]


def test_refused_even_without_attributes_it_fails_as_before() -> None:
    sqs = ScriptedSqs([refusal(), refusal(), refusal()])

    with pytest.raises(ClientError):
        transport(sqs).dead_letter(MESSAGE, "unknown_genre", "x" * 3000)

    assert len(sqs.sent) == 3


@pytest.mark.parametrize("error", [
    refusal("RequestThrottled", "RequestThrottled", "throttled"),
    refusal("InternalFailure", "InternalFailure", "oops", status=500),
    refusal("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "gone"),
], ids=["throttled", "500", "no-queue"])
def test_a_transient_failure_is_raised_at_once_to_be_retried(error: ClientError) -> None:
    sqs = ScriptedSqs([error])

    with pytest.raises(ClientError):
        transport(sqs).dead_letter(MESSAGE, "unknown_genre", "x" * 3000)

    assert len(sqs.sent) == 1


def test_attribute_values_are_made_valid_before_the_first_send() -> None:
    sqs = ScriptedSqs()
    # A title's U+FFFE (kept by the key rule), a control character decoded from "\\u0001", a
    # lone surrogate: none is allowed in an SQS attribute; tab and newline are.
    detail = "s3://b/A\ufffeB.json and s3://b/\x01\ud800 both\tbelong\nto other books"

    transport(sqs).dead_letter(MESSAGE, "key_conflict", detail)

    assert len(sqs.sent) == 1
    assert sqs.attributes(0)[DETAIL_ATTRIBUTE] == (
        "s3://b/A\ufffdB.json and s3://b/\ufffd\ufffd both\tbelong\nto other books")


def test_an_empty_detail_is_left_out_rather_than_refused() -> None:
    sqs = ScriptedSqs()

    transport(sqs).dead_letter(MESSAGE, "crashed_consumer", "")

    assert len(sqs.sent) == 1
    assert sqs.attributes(0) == {REASON_ATTRIBUTE: "crashed_consumer",
                                 ORIGINAL_ID_ATTRIBUTE: MESSAGE.message_id}
