"""The start-up preflight against moto: what it refuses (a standard input queue, a dead-letter
queue that takes smaller messages than the input queue, a bucket the CRT client cannot reach),
what it only warns about (AWS out of reach, a queue or bucket missing, no dead-letter queue),
what it learns (each bucket's region), and what it costs (one attempt per call, a service out of
reach asked once). Against LocalStack and a real gunicorn: tests/e2e/test_preflight.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

import workers.aws
from tests.support.proxy import FaultProxy
from workers.aws.preflight import Finding, Verdict, check_environment, examine, run
from workers.settings import ConfigError, Settings

INPUT = "Books.fifo"
DLQ = "Books-dlq.fifo"
FIFO = {"FifoQueue": "true"}
OTHER_REGION = "eu-west-1"


@dataclass
class Log:
    """gunicorn's logger, as far as the preflight uses it."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def info(self, msg: str, *args: object, **_: Any) -> None:
        self.lines.append(("info", msg % args))

    def warning(self, msg: str, *args: object, **_: Any) -> None:
        self.lines.append(("warning", msg % args))

    def error(self, msg: str, *args: object, **_: Any) -> None:
        self.lines.append(("error", msg % args))


@dataclass
class Aws:
    sqs: Any
    s3: Any
    input_url: str
    dlq_url: str
    settings: Settings

    def examine(self, **changes: Any) -> list[Finding]:
        return examine(replace(self.settings, **changes), self.sqs, self.s3)


@pytest.fixture
def aws(moto: None) -> Aws:
    sqs = boto3.client("sqs")
    s3 = boto3.client("s3")
    dlq_url = sqs.create_queue(QueueName=DLQ, Attributes=FIFO)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    input_url = sqs.create_queue(QueueName=INPUT, Attributes={
        **FIFO, "MaximumMessageSize": "262144", "RedrivePolicy": orjson.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 30}).decode()})["QueueUrl"]
    s3.create_bucket(Bucket="scifi-books")
    s3.create_bucket(Bucket="romance-books",
                     CreateBucketConfiguration={"LocationConstraint": OTHER_REGION})
    settings = Settings(input_queue=INPUT,
                        genre_buckets={"scifi": "scifi-books", "romance": "romance-books"})
    return Aws(sqs, s3, input_url, dlq_url, settings)


def verdicts(findings: list[Finding]) -> list[tuple[str, Verdict]]:
    return [(finding.subject, finding.verdict) for finding in findings]


@pytest.mark.parametrize("s3_client", ["crt", "boto3"])
def test_what_can_work_passes_and_each_bucket_s_region_is_learned(aws: Aws, s3_client: str
                                                                  ) -> None:
    assert aws.examine(s3_client=s3_client) == [
        Finding(f"input queue {aws.input_url}", Verdict.OK, "FIFO"),
        Finding(f"dead-letter queue {aws.dlq_url}", Verdict.OK, "MaximumMessageSize 1048576"),
        Finding("bucket scifi-books (genre scifi)", Verdict.OK, "in us-east-1"),
        Finding("bucket romance-books (genre romance)", Verdict.OK, f"in {OTHER_REGION}"),
    ]


def test_a_standard_input_queue_is_refused_naming_input_queue(aws: Aws) -> None:
    url = aws.sqs.create_queue(QueueName="standard")["QueueUrl"]

    findings = aws.examine(input_queue=url)

    assert findings[0] == Finding(
        f"input queue {url}", Verdict.REFUSED,
        f"INPUT_QUEUE={url!r} is a standard queue: Shelver needs a FIFO queue (FifoQueue true, "
        "a name ending in .fifo), whose message groups keep each book's versions in order; set "
        "INPUT_QUEUE to a FIFO queue")
    assert [f.verdict for f in findings[1:]] == [Verdict.OK, Verdict.OK]  # the buckets


@pytest.mark.parametrize(("dlq_size", "verdict"), [
    (262143, Verdict.REFUSED), (262144, Verdict.OK), (1048576, Verdict.OK)])
def test_a_dead_letter_queue_must_take_the_input_queue_s_largest_messages(
        aws: Aws, dlq_size: int, verdict: Verdict) -> None:
    aws.sqs.set_queue_attributes(QueueUrl=aws.dlq_url,
                                 Attributes={"MaximumMessageSize": str(dlq_size)})

    finding = aws.examine()[1]

    assert (finding.subject, finding.verdict) == (f"dead-letter queue {aws.dlq_url}", verdict)
    if verdict is Verdict.REFUSED:
        assert finding.detail == (
            f"INPUT_QUEUE='{INPUT}': its dead-letter queue {aws.dlq_url} (RedrivePolicy) has "
            "MaximumMessageSize 262143, smaller than the input queue's 262144: a book of more "
            "than 262143 bytes could not be dead-lettered; set the dead-letter queue's "
            "MaximumMessageSize to at least 262144")


def test_what_the_consumers_retry_is_a_warning(aws: Aws) -> None:
    aws.sqs.create_queue(QueueName="plain.fifo", Attributes=FIFO)

    assert aws.examine(input_queue="missing.fifo",
                       genre_buckets={"horror": "missing-books"}) == [
        Finding("input queue missing.fifo", Verdict.WARNING,
                "GetQueueUrl: AWS.SimpleQueueService.NonExistentQueue: The specified queue does "
                "not exist."),
        Finding("bucket missing-books (genre horror)", Verdict.WARNING,
                "HeadBucket answered 404 (no such bucket)"),
    ]
    assert verdicts(aws.examine(input_queue="plain.fifo"))[:2] == [
        (f"input queue {aws.input_url.replace(INPUT, 'plain.fifo')}", Verdict.OK),
        ("dead-letter queue", Verdict.WARNING)]  # invalid books stay on the queue


def test_a_bucket_the_crt_client_cannot_reach_is_refused_naming_s3_client(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")

    findings = aws.examine(s3_client="crt", genre_buckets={"romance": "romance-books"})

    assert findings[-1].verdict is Verdict.REFUSED
    assert findings[-1].detail.startswith("S3_CLIENT=crt cannot be used: boto3 would reach ")
    assert findings[-1].detail.endswith("; set S3_CLIENT=boto3")
    assert aws.examine(s3_client="boto3", genre_buckets={"romance": "romance-books"})[-1] == \
        Finding("bucket romance-books (genre romance)", Verdict.OK, f"in {OTHER_REGION}")


def test_start_up_logs_what_it_found_and_refuses_with_every_refusal(
        aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.sqs.create_queue(QueueName="standard")
    # A proxy for everything but the endpoints of the client's own region: the CRT client can
    # be used there (check_environment), not for the bucket in another region.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "s3.amazonaws.com,sqs.us-east-1.amazonaws.com")
    log = Log()

    with pytest.raises(ConfigError) as refused:
        run(replace(aws.settings, input_queue="standard", s3_client="crt",
                    genre_buckets={"romance": "romance-books", "horror": "missing-books"}), log)

    assert str(refused.value).startswith("INPUT_QUEUE='standard' is a standard queue: ")
    assert "; S3_CLIENT=crt cannot be used: " in str(refused.value)
    assert log.lines == [
        ("warning", "preflight: bucket missing-books (genre horror): HeadBucket answered 404 "
                    "(no such bucket)")]


def test_aws_out_of_reach_only_warns_asking_each_service_once(
        aws_at: Callable[[str], None]) -> None:
    log = Log()
    with FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.outage_for(3600)
        aws_at(proxy.url)

        run(Settings(input_queue=INPUT, genre_buckets={"scifi": "a", "romance": "b"}), log)

        assert proxy.counters()["requests"] == 2  # one SQS call, one S3 call: one attempt each
    assert [(level, line.split(" (")[0]) for level, line in log.lines[:2]] == [
        ("warning", "preflight: SQS: not checked"), ("warning", "preflight: S3: not checked")]
    assert log.lines[2][1].startswith("preflight: done in ")


# -- what botocore tells without a call (as settings.py checked it before) ----------------------
REGION = {"AWS_REGION": "us-east-1"}


@pytest.fixture
def no_ambient_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No region anywhere botocore looks: environment, profile, config file."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@pytest.mark.usefixtures("no_ambient_region")
def test_a_missing_region_is_a_config_error_naming_aws_region() -> None:
    with pytest.raises(ConfigError) as raised:
        check_environment(Settings(), {})

    assert "AWS_REGION" in str(raised.value)
    assert "us-east-1" in str(raised.value)


@pytest.mark.usefixtures("no_ambient_region")
def test_aws_default_region_is_enough() -> None:
    check_environment(Settings(), {"AWS_DEFAULT_REGION": "eu-west-1"})


def test_a_crt_client_refuses_a_proxy_and_names_the_fallback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")  # the CRT clients take none
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    for variables, name in (({}, "S3_CLIENT"), ({"S3_CLIENT": "boto3"}, "SQS_CLIENT")):
        with pytest.raises(ConfigError) as raised:
            check_environment(Settings.from_env({**REGION, **variables}), REGION)
        assert f"{name}=crt cannot be used" in str(raised.value)
        assert "proxy" in str(raised.value)
        assert f"set {name}=boto3" in str(raised.value)
    check_environment(Settings(s3_client="boto3", sqs_client="boto3"), REGION)


def test_a_crt_client_without_awscrt_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("s3crt", "sqscrt"):  # as if awscrt were not installed
        monkeypatch.setitem(sys.modules, f"workers.aws.{module}", None)
        monkeypatch.delattr(workers.aws, module, raising=False)

    with pytest.raises(ConfigError, match="S3_CLIENT=crt needs the awscrt package"):
        check_environment(Settings(), REGION)
    with pytest.raises(ConfigError, match="SQS_CLIENT=crt needs the awscrt package"):
        check_environment(Settings(s3_client="boto3"), REGION)
    check_environment(Settings(s3_client="boto3", sqs_client="boto3"), REGION)


def test_the_bucket_lookup_carries_the_expected_owner_and_a_403_says_what_it_may_mean(
        aws: Aws) -> None:
    asked: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        asked.append(dict(params))

    aws.s3.meta.events.register("provide-client-params.s3.HeadBucket", record)
    findings = aws.examine(genre_bucket_owners={"scifi": "111122223333"})
    aws.s3.meta.events.unregister("provide-client-params.s3.HeadBucket", record)

    assert [params.get("ExpectedBucketOwner") for params in asked] == ["111122223333", None]
    # moto does not check the owner (nor does LocalStack): a 403 is what AWS would answer.
    assert findings[2] == Finding("bucket scifi-books (genre scifi)", Verdict.OK, "in us-east-1")


def test_a_403_with_an_expected_owner_is_a_warning_naming_the_owner_and_the_variable(
        aws: Aws) -> None:
    class Refusing:
        meta = aws.s3.meta

        def head_bucket(self, **params: Any) -> Any:
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"},
                               "ResponseMetadata": {"HTTPStatusCode": 403, "HTTPHeaders": {
                                   "x-amz-bucket-region": "us-east-1"}}}, "HeadBucket")

    settings = replace(aws.settings, genre_bucket_owners={"*": "111122223333"})
    findings = examine(settings, aws.sqs, Refusing())

    assert findings[2] == Finding(
        "bucket scifi-books (genre scifi)", Verdict.WARNING,
        "HeadBucket answered 403: access denied, or the bucket is not owned by account "
        "111122223333 (GENRE_BUCKET_OWNERS), in which case every write is refused")
