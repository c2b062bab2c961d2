"""The start-up preflight against LocalStack and a real gunicorn: what the settings name is asked
of AWS before any consumer starts. A definite misconfiguration stops start-up with exit code 3 and
a message naming the variable (and `shelver check` fails the same way); AWS out of reach only
warns; a bucket in another region is written by the CRT client signed for that region."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.proxy import Exchange, FaultProxy

CONFIG_ERROR = 3
# A region other than the emulator's (AWS_REGION us-east-1), for a bucket created there.
OTHER_REGION = "eu-west-1"
# What the CRT S3 client calls itself in User-Agent (boto3's starts with "Boto3/").
CRT_USER_AGENT = "CRTS3NativeClient/"


@pytest.fixture
def standard_queue(aws: Aws) -> Iterator[tuple[str, str]]:
    """A standard (not FIFO) queue: (name, URL)."""
    name = f"t{uuid.uuid4().hex[:10]}-standard"
    url = aws.sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        yield name, url
    finally:
        aws.sqs.delete_queue(QueueUrl=url)


def test_a_standard_input_queue_stops_start_up_naming_input_queue(
        stack: Stack, standard_queue: tuple[str, str], shelver_factory: ShelverFactory):
    name, _ = standard_queue
    shelver = shelver_factory(stack, INPUT_QUEUE=name)

    assert shelver.wait_exit(60) == CONFIG_ERROR
    assert (f"shelver: configuration error: INPUT_QUEUE={name!r} is a standard queue"
            in shelver.log())
    assert "Traceback" not in shelver.log()
    check = shelver.cli("check")
    assert check.returncode == CONFIG_ERROR, check.stdout + check.stderr
    assert f"INPUT_QUEUE={name!r} is a standard queue" in check.stderr


def test_a_reload_to_a_standard_queue_is_refused_and_the_consumers_kept(
        aws: Aws, stack: Stack, standard_queue: tuple[str, str],
        shelver_factory: ShelverFactory, run_dir: Path):
    name, _ = standard_queue
    config = run_dir / "shelver.conf"
    config.write_text(f"INPUT_QUEUE={stack.input_name}\n")
    shelver = shelver_factory(stack, SHELVER_CONFIG_FILE=str(config))
    shelver.wait_healthy()
    consumers = set(shelver.consumer_pids())
    config.write_text(f"INPUT_QUEUE={name}\n")

    shelver.signal(signal.SIGHUP)

    wait_until(lambda: "keeping the running consumers" in shelver.log(), 30, 0.2,
               "the reload to be refused")
    assert f"keeping the running consumers: INPUT_QUEUE={name!r} is a standard queue" in \
        shelver.log()
    wait_until(lambda: shelver.log().count("Worker exiting") >= 2, 30, 0.2,
               "the old HTTP workers to exit")
    wait_until(lambda: shelver.get("/health").status == 200, 20, 0.2, "/health 200")
    assert set(shelver.consumer_pids()) == consumers
    aws.send(stack.input_url, [("g", book("k-1", "Kept Queue", "romance"))])
    wait_until(lambda: aws.objects(stack), 20, 0.2, "a book stored from the kept queue")


def test_a_dead_letter_queue_that_takes_smaller_messages_stops_start_up_naming_both(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory):
    aws.sqs.set_queue_attributes(QueueUrl=stack.dlq_url,
                                 Attributes={"MaximumMessageSize": "1024"})
    input_size = aws.attributes(stack.input_url)["MaximumMessageSize"]
    shelver = shelver_factory(stack)

    assert shelver.wait_exit(60) == CONFIG_ERROR
    log = shelver.log()
    assert f"shelver: configuration error: INPUT_QUEUE={stack.input_name!r}: its dead-letter " \
           f"queue {stack.dlq_url}" in log
    assert f"MaximumMessageSize 1024, smaller than the input queue's {input_size}" in log
    check = shelver.cli("check")
    assert check.returncode == CONFIG_ERROR, check.stdout + check.stderr
    assert f"MaximumMessageSize 1024, smaller than the input queue's {input_size}" in check.stderr


def test_sqs_out_of_reach_at_start_only_warns_and_a_standard_queue_found_later_is_reported(
        aws: Aws, stack: Stack, standard_queue: tuple[str, str],
        shelver_factory: ShelverFactory, aws_env: dict[str, str]):
    name, url = standard_queue
    # A message without a group: the receive path of a consumer that took the queue for FIFO
    # raised KeyError('MessageGroupId') on it, crashed, and its replacements did the same.
    aws.sqs.send_message(QueueUrl=url, MessageBody='{"id":"1","title":"T","genre":"scifi"}')
    with FaultProxy(aws_env["AWS_ENDPOINT_URL"]) as sqs_proxy:
        sqs_proxy.outage_for(3600)
        shelver = shelver_factory(stack, INPUT_QUEUE=name, AWS_ENDPOINT_URL_SQS=sqs_proxy.url)
        wait_until(lambda: shelver.get("/health/live").status == 200, 60, 0.3,
                   "Shelver started although SQS is out of reach")

        sqs_proxy.heal()

        def reported() -> bool:
            consumers = shelver.get("/health").body["consumers"]
            return all(f"INPUT_QUEUE={name!r} is a standard queue" in (c["last_error"] or "")
                       for c in consumers)

        wait_until(reported, 60, 0.3, "every consumer to report the standard queue")
        health = shelver.get("/health")
        assert health.status == 503
        assert {(c["state"], c["restarts"]) for c in health.body["consumers"]} == {
            ("backoff", 0)}
        assert shelver.exit_code() is None
        assert "Traceback" not in shelver.log()
        assert aws.counts(url)[0] == 1  # never received
        assert "preflight: SQS: not checked (" in shelver.log()


def credential_region(exchange: Exchange) -> str:
    """The region of an `Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/...`."""
    credential = exchange.headers["authorization"].split("Credential=", 1)[1]
    return credential.split("/")[2]


def test_a_bucket_in_another_region_is_written_by_the_crt_client_signed_for_its_region(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, s3_proxy: FaultProxy):
    # LocalStack accepts a request signed for any region, so a write signed for the wrong one
    # would be stored all the same: the proof is on the wire, in the Authorization header's
    # credential scope (on AWS such a write is refused, PermanentRedirect or
    # AuthorizationHeaderMalformed, and retried until the message runs out of receives).
    elsewhere = f"{stack.buckets['scifi']}-{OTHER_REGION}"
    aws.s3.create_bucket(Bucket=elsewhere,
                         CreateBucketConfiguration={"LocationConstraint": OTHER_REGION})
    try:
        buckets = {"scifi": elsewhere, "romance": stack.buckets["romance"]}
        s3_proxy.configure(journal=True)
        shelver = shelver_factory(stack, S3_CLIENT="crt", AWS_ENDPOINT_URL_S3=s3_proxy.url,
                                  GENRE_BUCKETS=",".join(f"{g}={b}" for g, b in buckets.items()))
        shelver.wait_healthy()

        aws.send(stack.input_url, [(f"g{n}", book(f"b-{n}", f"Book {n}", genre))
                                   for n in range(6) for genre in ("scifi", "romance")])

        expected = {f"Book {n}.json" for n in range(6)}
        wait_until(lambda: set(aws.keys(elsewhere)) == expected
                   and set(aws.keys(stack.buckets["romance"])) == expected, 60, 0.3,
                   "every book stored")
        writes = [e for e in s3_proxy.exchanges() if e.method == "PUT"]
        assert {(e.path.split("/")[1], credential_region(e), e.headers["user-agent"].startswith(
            CRT_USER_AGENT)) for e in writes} == {(elsewhere, OTHER_REGION, True),
                                                  (stack.buckets["romance"], "us-east-1", True)}

        # `shelver check` writes its probe with the consumers' own client, as they would.
        seen = len(s3_proxy.exchanges())
        check = shelver.cli("check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"ok    bucket {elsewhere} (genre scifi) writable" in check.stdout
        probes = [e for e in s3_proxy.exchanges()[seen:] if e.method == "PUT"]
        assert {(e.path.split("/")[1], credential_region(e), e.headers["user-agent"].startswith(
            CRT_USER_AGENT)) for e in probes} == {(elsewhere, OTHER_REGION, True),
                                                  (stack.buckets["romance"], "us-east-1", True)}
        assert all(e.path.split("/")[2] == ".shelver-check" for e in probes)
        assert f"preflight: bucket {elsewhere} (genre scifi): in {OTHER_REGION}" in \
            shelver.log()
    finally:
        aws.delete_bucket(elsewhere)
