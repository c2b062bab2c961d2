"""The `shelver` command against the local stack with only the quickstart's set-up (`make
shelver ARGS=...`, or `.venv/bin/shelver --local`), in a shell that has AWS settings of its own
which must not be used: a profile, a real-looking key, a service endpoint elsewhere."""

from __future__ import annotations

import subprocess

import orjson

from tests.local.conftest import REPO, LocalStackPlace
from tests.support.aws import book

# What an operator's shell may hold; any of it used would send the command elsewhere (the
# SQS endpoint is a closed port: a call sent there fails).
SHELL_AWS = {"AWS_PROFILE": "production", "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
             "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
             "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9"}


def shelver(place: LocalStackPlace, args: str) -> str:
    result = place.make("shelver", {"ARGS": args, **SHELL_AWS}, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_shelver_works_on_the_local_stack_without_variables_and_shows_what_landed(
        place: LocalStackPlace) -> None:
    infra = place.make("infra")  # the emulator started, serverless.yml deployed
    assert infra.returncode == 0, infra.stdout + infra.stderr
    aws = place.aws()
    body = orjson.dumps(book("d-1", "Dune", "scifi"))
    aws.s3.put_object(Bucket="scifi", Key="Dune.json", Body=body,
                      Metadata={"book-id": "d-1", "message-id": "m-1"})

    assert "all checks passed" in shelver(place, "check")
    assert f"dead-letter queue  {place.endpoint}/000000000000/InputQueueDLQ.fifo" in shelver(
        place, "dlq stats")
    listed = shelver(place, "ls")
    assert listed.startswith("scifi\tDune.json\t")
    assert listed.count("\n") == 1  # one book: romance has none
    shown = shelver(place, "show Dune")
    assert shown.startswith("s3://scifi/Dune.json  (genre scifi")
    assert "  book-id          d-1\n  message-id       m-1\n" in shown
    assert shown.endswith(body.decode() + "\n")
    assert "sent 3 book(s)" in shelver(place, "send --count 3 --genres romance")
    assert aws.counts(aws.queue_url("InputQueue.fifo")) == (3, 0)

    # The command itself, as the README shows it; aimed anywhere but this machine, refused.
    env = place.env(**SHELL_AWS)
    direct = subprocess.run([str(REPO / ".venv/bin/shelver"), "--local", "--endpoint-url",
                             place.endpoint, "ls", "scifi"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0 and direct.stdout.startswith("scifi\tDune.json"), direct.stderr
    away = subprocess.run([str(REPO / ".venv/bin/shelver"), "--local", "--endpoint-url",
                           "https://sqs.eu-west-1.amazonaws.com", "dlq", "stats"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert away.returncode == 3
    assert "the local emulator listens on 127.0.0.1 only" in away.stderr
