"""The `shelver` command against moto: arguments, dlq stats/peek/redrive --dry-run, send, check,
and how errors are reported. The move task of `dlq redrive` needs LocalStack (moto answers 500):
tests/e2e/test_cli.py."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.stub import Stubber

from tests.support.proxy import FaultProxy
from workers.aws.sqs import Message, QueueInfo, SqsTransport
from workers.cli import dlq, main
from workers.cli.dlq import excerpt
from workers.cli.progress import Progress
from workers.cli.session import Session

REGION = "us-east-1"
INPUT = "Books.fifo"
DLQ = "Books-dlq.fifo"
FIFO = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}


@dataclass
class Resources:
    sqs: Any
    s3: Any
    input_url: str
    dlq_url: str

    def dead_letter(self, group: str, body: str, reason: str, detail: str) -> str:
        """Put a message on the DLQ as a consumer does; return its original message id."""
        original = f"orig-{group}-{body}"
        transport = SqsTransport(self.sqs, self.sqs, QueueInfo(self.input_url, 60, self.dlq_url))
        transport.dead_letter(Message(original, "", body, group, 1), reason, detail)
        return original

    def receive_all(self, url: str) -> list[dict[str, Any]]:
        """Take (and delete) every message, in the order SQS hands them out."""
        taken: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10,
                MessageSystemAttributeNames=["MessageGroupId"]).get("Messages", []):
            taken.extend(batch)
            for message in batch:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return taken

    def keys(self, bucket: str) -> list[str]:
        return [item["Key"] for item in self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def aws(moto: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    sqs = boto3.client("sqs", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    dlq_url = sqs.create_queue(QueueName=DLQ, Attributes=FIFO)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    input_url = sqs.create_queue(QueueName=INPUT, Attributes={
        **FIFO, "RedrivePolicy": orjson.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).decode()})["QueueUrl"]
    sqs.create_queue(QueueName="no-dlq.fifo", Attributes=FIFO)
    for bucket in ("scifi-books", "romance-books"):
        s3.create_bucket(Bucket=bucket)
    monkeypatch.delenv("SHELVER_CONFIG_FILE", raising=False)
    monkeypatch.setenv("INPUT_QUEUE", INPUT)
    monkeypatch.setenv("GENRE_BUCKETS", "scifi=scifi-books,romance=romance-books")
    # In-process moto answers boto3 alone (the CRT sends from C): `shelver check` writes its
    # probes with S3_CLIENT's client, the CRT's against moto's server below.
    monkeypatch.setenv("S3_CLIENT", "boto3")
    yield Resources(sqs, s3, input_url, dlq_url)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- dlq stats / peek -----------------------------------------------------------------------------
def test_stats_counts_by_reason_and_consumes_nothing(aws: Resources, capsys: Any) -> None:
    for n in range(3):
        aws.dead_letter(f"g{n}", f"horror-{n}", "unknown_genre", "genre 'horror' has no bucket")
    aws.dead_letter("g0", "{", "not_json", "body is not valid JSON")
    aws.sqs.send_message(QueueUrl=aws.dlq_url, MessageBody="moved by SQS", MessageGroupId="g9",
                         MessageDeduplicationId="sqs-moved")

    code, out, err = run(capsys, "dlq", "stats")

    assert (code, err) == (0, "")
    assert f"dead-letter queue  {aws.dlq_url}" in out
    assert "messages           5 (visible 5, in flight 0, delayed 0)" in out
    assert "by shelver-reason (5 read)" in out
    assert "         3  unknown_genre\n" in out
    assert "         1  not_json\n" in out
    assert "         1  (none)\n" in out
    assert len(aws.receive_all(aws.dlq_url)) == 5  # all still there, and visible at once


def test_peek_shows_reason_detail_original_id_group_and_body_in_order(
        aws: Resources, capsys: Any) -> None:
    # A receive takes at most ten messages: the third group comes only while the first two
    # groups' messages are held; released at once, they would be handed out again instead.
    originals = {group: [aws.dead_letter(group, f'{{"n":{n},"genre":"horror"}}', "unknown_genre",
                                         f"genre 'horror' has no bucket ({n})")
                         for n in range(5)]
                 for group in ("g1", "g2", "g3")}

    code, out, err = run(capsys, "dlq", "peek", "-n", "15")

    assert (code, err) == (0, "")
    heads = [line.split() for line in out.split("\n") if "  group " in line]
    for group, ids in originals.items():
        assert [head[4] for head in heads if head[2] == group] == ids
    assert out.count("  reason  unknown_genre\n") == 15
    for n in range(5):
        assert out.count(f"  detail  genre 'horror' has no bucket ({n})\n") == 3
        assert out.count(f'  body    {{"n":{n},"genre":"horror"}}\n') == 3
    assert out.endswith(f"15 message(s) of {aws.dlq_url}, left in the queue\n")
    # Nothing consumed, nothing reordered.
    bodies: dict[str, list[str]] = {}
    for message in aws.receive_all(aws.dlq_url):
        bodies.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])
    assert bodies == {group: [f'{{"n":{n},"genre":"horror"}}' for n in range(5)]
                      for group in originals}


def test_a_deep_fifo_group_is_read_as_far_as_sqs_allows_and_the_rest_is_reported(
        aws: Resources, capsys: Any) -> None:
    for n in range(12):
        aws.dead_letter("g1", f"h{n}", "unknown_genre", "genre 'horror' has no bucket")

    code, out, _ = run(capsys, "dlq", "stats")

    assert code == 0
    assert "messages           12 (visible 12, in flight 0, delayed 0)" in out
    assert "by shelver-reason (10 read)\n        10  unknown_genre\n" in out
    assert "\n2 message(s) not read: in flight, delayed, or later in a FIFO group" in out
    assert len(aws.receive_all(aws.dlq_url)) == 12


def test_peek_stops_at_n(aws: Resources, capsys: Any) -> None:
    for n in range(12):
        aws.dead_letter(f"g{n % 2}", f"body-{n}", "not_json", "no")

    code, out, _ = run(capsys, "dlq", "peek", "-n", "4")

    assert code == 0
    assert out.count("  reason  not_json") == 4
    assert len(aws.receive_all(aws.dlq_url)) == 12


def test_peek_of_an_empty_dlq(aws: Resources, capsys: Any) -> None:
    assert run(capsys, "dlq", "peek") == (0, f"0 message(s) of {aws.dlq_url}, left in the queue\n",
                                          "")


def test_excerpt_is_one_line_cut_at_the_limit() -> None:
    assert excerpt("a\nb\tc\x00d") == "a\\nb\\tc\\x00d"
    assert excerpt("x" * 201) == "x" * 200 + "..."
    assert excerpt("x" * 200) == "x" * 200


def test_redrive_dry_run_reports_and_moves_nothing(aws: Resources, capsys: Any) -> None:
    for n in range(4):
        aws.dead_letter(f"g{n}", f"h{n}", "unknown_genre", "genre 'horror' has no bucket")

    code, out, err = run(capsys, "dlq", "redrive", "--dry-run")

    assert (code, err) == (0, "")
    assert "         4  unknown_genre\n" in out
    assert out.endswith(f"dry run: would move 4 message(s) to {aws.input_url}; nothing moved\n")
    assert "not read" not in out
    assert len(aws.receive_all(aws.dlq_url)) == 4
    assert aws.receive_all(aws.input_url) == []


@pytest.mark.parametrize("argv", [["dlq", "stats"], ["dlq", "peek"], ["dlq", "redrive"]])
def test_an_input_queue_without_dlq_is_one_line_and_exit_1(
        aws: Resources, capsys: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setenv("INPUT_QUEUE", "no-dlq.fifo")

    code, out, err = run(capsys, *argv)

    assert (code, out) == (1, "")
    assert err.startswith("shelver: the input queue ") and err.endswith(
        "no-dlq.fifo has no dead-letter queue (no RedrivePolicy)\n")


def test_waiting_for_a_move_task_polls_until_it_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # moto cannot run move tasks: botocore's own stubber plays SQS's answers.
    monkeypatch.setattr(dlq, "MOVE_POLL_SECONDS", 0)
    sqs = boto3.client("sqs", region_name=REGION)
    source = "arn:aws:sqs:us-east-1:123456789012:Books-dlq.fifo"
    answers = [{"Status": "RUNNING", "TaskHandle": "ours", "StartedTimestamp": 1000,
                "ApproximateNumberOfMessagesMoved": 3},
               {"Status": "RUNNING", "TaskHandle": "ours", "StartedTimestamp": 1000,
                "ApproximateNumberOfMessagesMoved": 7},
               {"Status": "FAILED", "StartedTimestamp": 1000,
                "ApproximateNumberOfMessagesMoved": 7, "FailureReason": "AccessDenied"}]
    with Stubber(sqs) as stubber:
        for answer in answers:
            stubber.add_response("list_message_move_tasks", {"Results": [answer]},
                                 {"SourceArn": source, "MaxResults": 10})

        assert dlq.wait_for_move(sqs, source, "ours", 1000) == answers[-1]
        stubber.assert_no_pending_responses()


class MoveTasks:
    """moto's SQS, whose move-task calls answer 500, with SQS's move tasks played instead:
    StartMessageMoveTask hands out the handle "ours"; each ListMessageMoveTasks lists the next
    of `listings` (newest task first, at most MaxResults), the last one from then on. Their
    StartedTimestamp is in milliseconds from the StartMessageMoveTask call."""

    def __init__(self, sqs: Any, listings: list[list[dict[str, Any]]]) -> None:
        self._sqs = sqs
        self._listings = listings
        self._started = 0

    def start_message_move_task(self, **_: Any) -> dict[str, str]:
        self._started = int(time.time() * 1000)
        return {"TaskHandle": "ours"}

    def list_message_move_tasks(self, SourceArn: str, MaxResults: int = 1
                                ) -> dict[str, Any]:
        listing = self._listings.pop(0) if len(self._listings) > 1 else self._listings[0]
        return {"Results": [{**task, "StartedTimestamp": self._started + task["StartedTimestamp"]}
                            for task in listing[:MaxResults]]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def move_task(status: str, started: int, moved: int, handle: str | None = None
              ) -> dict[str, Any]:
    """A ListMessageMoveTasks entry, started `started` ms after ours was: SQS gives the
    TaskHandle of a running task only."""
    task: dict[str, Any] = {"Status": status, "StartedTimestamp": started,
                            "ApproximateNumberOfMessagesMoved": moved}
    if status == "RUNNING":
        task["TaskHandle"] = handle
    if status == "FAILED":
        task["FailureReason"] = "AccessDenied"
    return task


@pytest.fixture
def move_tasks(aws: Resources, monkeypatch: pytest.MonkeyPatch
               ) -> Callable[[list[list[dict[str, Any]]]], None]:
    """Play these listings of SQS's move tasks to the next command."""
    monkeypatch.setattr(dlq, "MOVE_POLL_SECONDS", 0)

    def play(listings: list[list[dict[str, Any]]]) -> None:
        original = Session.__post_init__

        def post_init(session: Session) -> None:
            original(session)
            session.sqs = MoveTasks(session.sqs, listings)

        monkeypatch.setattr(Session, "__post_init__", post_init)
    return play


def test_redrive_follows_the_task_it_started_not_a_more_recent_one(
        aws: Resources, capsys: Any, move_tasks: Callable[[list[list[dict[str, Any]]]], None]
        ) -> None:
    # Ours ended; another operator's redrive of the same DLQ started before our next poll (SQS
    # runs one task per source at a time) and failed. The most recent task was reported: a
    # failure of a redrive that had moved everything.
    earlier = move_task("COMPLETED", -3_600_000, 7)
    move_tasks([
        [move_task("RUNNING", 0, 3, "ours"), earlier],
        [move_task("FAILED", 2000, 0), move_task("COMPLETED", 0, 30), earlier],
    ])

    code, out, err = run(capsys, "dlq", "redrive")

    assert (code, err) == (0, "")
    assert out.startswith(f"moved 30 message(s) from {aws.dlq_url} to {aws.input_url} in ")


def test_redrive_finds_its_task_when_it_ended_before_it_was_seen_running(
        aws: Resources, capsys: Any, move_tasks: Callable[[list[list[dict[str, Any]]]], None]
        ) -> None:
    earlier = move_task("FAILED", -3_600_000, 7)
    move_tasks([
        [earlier],  # ours is not listed yet
        [move_task("RUNNING", 2000, 0, "theirs"), move_task("COMPLETED", 0, 30), earlier],
    ])

    code, out, err = run(capsys, "dlq", "redrive")

    assert (code, err) == (0, "")
    assert out.startswith(f"moved 30 message(s) from {aws.dlq_url} to {aws.input_url} in ")


def test_redrive_gives_up_on_a_task_sqs_never_lists(
        aws: Resources, capsys: Any, move_tasks: Callable[[list[list[dict[str, Any]]]], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlq, "NOT_LISTED_SECONDS", 0)
    move_tasks([[move_task("COMPLETED", -3_600_000, 7)]])

    code, out, err = run(capsys, "dlq", "redrive")

    assert (code, out) == (1, "")
    assert err.startswith("shelver: SQS does not list the move task this command started (ours)")


# -- send -----------------------------------------------------------------------------------------
def test_send_puts_valid_books_of_the_configured_genres_over_groups(
        aws: Resources, capsys: Any) -> None:
    code, out, _ = run(capsys, "send", "--count", "12", "--groups", "3")

    assert code == 0
    assert out == f"sent 12 book(s) to {aws.input_url} over 3 group(s)\n"
    messages = aws.receive_all(aws.input_url)
    books = [orjson.loads(m["Body"]) for m in messages]
    assert len(books) == 12
    assert {b["genre"] for b in books} == {"scifi", "romance"}
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {
        "group-0", "group-1", "group-2"}
    assert all(b["id"] and b["title"] for b in books)


def test_send_to_another_queue_with_given_genres(aws: Resources, capsys: Any) -> None:
    code, _, _ = run(capsys, "send", "--count", "2", "--genres", " horror ,", "--queue",
                     "no-dlq.fifo")

    assert code == 0
    url = aws.sqs.get_queue_url(QueueName="no-dlq.fifo")["QueueUrl"]
    assert [orjson.loads(m["Body"])["genre"] for m in aws.receive_all(url)] == ["horror"] * 2


@pytest.mark.parametrize(("argv", "complaint"), [
    (["send", "--genres", " , "], "argument --genres: names no genre"),
    (["send", "--count", "0"], "argument --count: must be at least 1, got 0"),
    (["send", "--groups", "x"], "argument --groups: not an integer: 'x'"),
    (["dlq", "peek", "-n", "-1"], "argument -n/--count: must be at least 1, got -1"),
    (["dlq", "redrive", "--rate", "501"], "argument --rate: must be from 1 to 500, got 501"),
    (["dlq"], "the following arguments are required: ACTION"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_arguments_are_usage_errors(capsys: Any, argv: list[str], complaint: str) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)

    assert raised.value.code == 2
    assert complaint in capsys.readouterr().err


# -- check ----------------------------------------------------------------------------------------
def test_check_passes_and_leaves_no_probe_behind(aws: Resources, capsys: Any) -> None:
    code, out, err = run(capsys, "check")

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"ok    input queue {aws.input_url}: FIFO",
        f"ok    dead-letter queue {aws.dlq_url}: MaximumMessageSize 1048576",
        "ok    bucket scifi-books (genre scifi): in us-east-1",
        "ok    bucket romance-books (genre romance): in us-east-1",
        "ok    bucket scifi-books (genre scifi) writable",
        "ok    bucket romance-books (genre romance) writable",
        "all checks passed",
    ]
    assert aws.keys("scifi-books") == aws.keys("romance-books") == []


def test_check_reports_one_line_per_failure(
        aws: Resources, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_QUEUE", "no-dlq.fifo")
    monkeypatch.setenv("GENRE_BUCKETS", "scifi=scifi-books,horror=missing-bucket")

    code, out, err = run(capsys, "check")

    assert code == 1
    assert "ok    bucket scifi-books (genre scifi) writable" in out
    assert err.splitlines() == [
        "FAIL  dead-letter queue: the input queue has no RedrivePolicy",
        "FAIL  bucket missing-bucket (genre horror): HeadBucket answered 404 (no such bucket)",
        "FAIL  bucket missing-bucket (genre horror) writable: PutObject: NoSuchBucket: "
        "The specified bucket does not exist",
    ]


def test_check_a_missing_queue(aws: Resources, capsys: Any,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_QUEUE", "missing.fifo")

    code, _, err = run(capsys, "check")

    assert code == 1
    assert err.splitlines() == [
        "FAIL  input queue missing.fifo: GetQueueUrl: AWS.SimpleQueueService.NonExistentQueue: "
        "The specified queue does not exist."]


def test_check_refuses_a_standard_queue_as_the_service_would(
        aws: Resources, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = aws.sqs.create_queue(QueueName="standard")["QueueUrl"]
    monkeypatch.setenv("INPUT_QUEUE", "standard")

    code, out, err = run(capsys, "check")

    assert code == 3
    assert err.splitlines()[0] == (
        f"FAIL  input queue {url}: INPUT_QUEUE='standard' is a standard queue: Shelver needs "
        "a FIFO queue (FifoQueue true, a name ending in .fifo), whose message groups keep each "
        "book's versions in order; set INPUT_QUEUE to a FIFO queue")
    assert "all checks passed" not in out


def test_check_refuses_a_dead_letter_queue_that_takes_smaller_messages(
        aws: Resources, capsys: Any) -> None:
    aws.sqs.set_queue_attributes(QueueUrl=aws.dlq_url, Attributes={"MaximumMessageSize": "2048"})

    code, _, err = run(capsys, "check")

    assert code == 3
    assert err.splitlines() == [
        f"FAIL  dead-letter queue {aws.dlq_url}: INPUT_QUEUE='{INPUT}': its dead-letter queue "
        f"{aws.dlq_url} (RedrivePolicy) has MaximumMessageSize 2048, smaller than the input "
        "queue's 1048576: a book of more than 2048 bytes could not be dead-lettered; set the "
        "dead-letter queue's MaximumMessageSize to at least 1048576"]


def test_check_writes_with_the_consumers_s3_client(
        empty_moto_server: str, aws_at: Callable[[str], None], s3_client: str, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # It wrote with boto3 whatever S3_CLIENT said: writable for boto3 was reported where the
    # consumers' CRT client could not write (a bucket in another region).
    with FaultProxy(empty_moto_server, journal=True) as proxy:
        aws_at(proxy.url)
        boto3.client("s3").create_bucket(Bucket="scifi-books")
        boto3.client("sqs").create_queue(QueueName=INPUT, Attributes=FIFO)
        for name, value in {"INPUT_QUEUE": INPUT, "GENRE_BUCKETS": "scifi=scifi-books",
                            "S3_CLIENT": s3_client}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("SHELVER_CONFIG_FILE", raising=False)

        code, out, _ = run(capsys, "check")

        probes = [e for e in proxy.exchanges()
                  if e.method == "PUT" and e.path.startswith("/scifi-books/.shelver-check/")]
    assert code == 1  # no dead-letter queue
    assert "ok    bucket scifi-books (genre scifi) writable" in out
    assert [p.headers["user-agent"].split("/")[0] for p in probes] == [
        {"crt": "CRTS3NativeClient", "boto3": "Boto3"}[s3_client]]


def test_check_uses_the_configuration_file(aws: Resources, capsys: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "shelver.conf"
    config.write_text("# buckets of this deploy\nGENRE_BUCKETS=scifi=scifi-books\n")
    monkeypatch.setenv("SHELVER_CONFIG_FILE", str(config))

    code, out, _ = run(capsys, "check")

    assert code == 0
    assert "romance" not in out
    assert "ok    bucket scifi-books (genre scifi) writable" in out


# -- errors ---------------------------------------------------------------------------------------
def test_invalid_settings_exit_3_like_the_service(
        aws: Resources, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMERS", "0")

    code, out, err = run(capsys, "check")

    assert (code, out) == (3, "")
    assert err.startswith("shelver: configuration error: CONSUMERS='0' is not valid")
    assert err.count("\n") == 1


def test_an_aws_error_is_one_line_naming_operation_code_and_message(
        aws: Resources, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_QUEUE", "missing.fifo")

    assert run(capsys, "dlq", "stats") == (
        1, "", "shelver: GetQueueUrl: AWS.SimpleQueueService.NonExistentQueue: "
               "The specified queue does not exist.\n")


def test_an_unreachable_endpoint_is_one_line_naming_the_operation(
        capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.delenv("SHELVER_CONFIG_FILE", raising=False)
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": REGION,
                        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, value)

    code, out, err = run(capsys, "send")

    assert (code, out) == (1, "")
    assert err.startswith("shelver: GetQueueUrl: EndpointConnectionError: Could not connect")
    assert err.count("\n") == 1


# -- progress -------------------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_clears_it() -> None:
    stream = Terminal()
    progress = Progress(stream)
    progress.update("read 10")
    progress.update("read 20")
    progress.clear()

    assert stream.getvalue() == "\r\x1b[Kread 10\r\x1b[Kread 20\r\x1b[K"


def test_progress_writes_a_line_per_interval_elsewhere() -> None:
    stream = io.StringIO()
    progress = Progress(stream, interval=0)
    progress.update("moved 1 of 3")
    progress.update("moved 2 of 3")
    progress.clear()
    quiet = io.StringIO()
    slow = Progress(quiet, interval=3600)
    slow.update("moved 1 of 3")

    assert stream.getvalue() == "moved 1 of 3\nmoved 2 of 3\n"
    assert quiet.getvalue() == ""


def test_check_probes_under_the_prefix_with_the_destinations_headers(
        empty_moto_server: str, aws_at: Callable[[str], None], s3_client: str, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator's policy grants the probe under each genre's key prefix only, and an SSE-KMS
    # destination's probe proves the KMS grant: the probe is written as the books are.
    with FaultProxy(empty_moto_server, journal=True) as proxy:
        aws_at(proxy.url)
        boto3.client("s3").create_bucket(Bucket="scifi-books")
        boto3.client("sqs").create_queue(QueueName=INPUT, Attributes=FIFO)
        for name, value in {"INPUT_QUEUE": INPUT, "GENRE_BUCKETS": "scifi=scifi-books",
                            "GENRE_KEY_PREFIXES": "*=books/", "GENRE_ENCRYPTION": "*=SSE-S3",
                            "GENRE_BUCKET_OWNERS": "*=123456789012",
                            "S3_CLIENT": s3_client}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("SHELVER_CONFIG_FILE", raising=False)

        _, out, _ = run(capsys, "check")

        probes = [e for e in proxy.exchanges() if e.method in ("PUT", "DELETE")
                  and e.path.startswith("/scifi-books/books/.shelver-check/")]
    assert "ok    bucket scifi-books (genre scifi) writable" in out
    assert [e.method for e in probes] == ["PUT", "DELETE"]
    assert probes[0].headers["x-amz-server-side-encryption"] == "AES256"
    assert {e.headers["x-amz-expected-bucket-owner"] for e in probes} == {"123456789012"}
