"""`make run` (scripts/run_local.py): the settings checked before anything starts; the local
stack's state kept from one run to the next; nothing listening beyond 127.0.0.1; a stop that
survives a Ctrl-C pressed again and again, and leaves exactly the emulator running."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from scripts.emulator import FAKE_AWS_ENV
from tests.local.conftest import (
    REPO,
    LocalStackPlace,
    MakeRun,
    MakeRunFactory,
    emulator_ready,
    emulator_tree,
)
from tests.support.aws import book, wait_until
from tests.support.listeners import command, listeners

BOOKS = 10
INPUT_QUEUE = "InputQueue.fifo"
DLQ = "InputQueueDLQ.fifo"


def gunicorn_refusal(place: LocalStackPlace, **settings: str) -> tuple[int, str]:
    """What gunicorn itself says of these settings, and its exit code."""
    env = {**place.env(**settings), **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": place.endpoint}
    result = subprocess.run([str(REPO / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1, result.stderr
    return result.returncode, lines[0]


@pytest.mark.parametrize("settings", [
    {"CONSUMERS": "abc"},
    {"GENRE_BUCKETS": "scifi=scifi,horror"},
])
def test_bad_settings_stop_make_run_before_anything_starts(place: LocalStackPlace,
                                                           settings: dict[str, str]) -> None:
    code, message = gunicorn_refusal(place, **settings)
    assert code == 3
    result = place.make("run", settings)
    assert message in result.stderr.splitlines(), result.stdout + result.stderr
    assert "Error 3" in result.stderr  # make reports the recipe's exit code
    # Nothing was started: no emulator (nor its pid file, data or log), no deploy, no gunicorn.
    output = result.stdout + result.stderr
    assert "LocalStack" not in output and "deploy" not in output and "gunicorn" not in output
    assert place.emulators() == [] and not place.pid_file.exists()
    assert not place.run_dir.exists() or list(place.run_dir.iterdir()) == []


def _stored(place: LocalStackPlace) -> dict[str, set[str]]:
    aws = place.aws()
    return {bucket: set(aws.keys(bucket)) for bucket in ("scifi", "romance")}


def _dead_letters(place: LocalStackPlace) -> int:
    aws = place.aws()
    return aws.counts(aws.queue_url(DLQ))[0]


def test_the_local_stack_keeps_books_dead_letters_and_buckets_across_runs(
        place: LocalStackPlace, make_run: MakeRunFactory) -> None:
    first = make_run()
    first.wait_serving()
    aws = place.aws()
    books = [book(f"b-{i}", f"Title {i}", ("scifi", "romance")[i % 2]) for i in range(BOOKS)]
    books[0]["id"] = "b-0 é%"  # not as it is in S3 metadata: percent-encoded
    books[2]["id"] = "b-2" + "x" * 1022  # too long even so: hashed
    aws.send(aws.queue_url(INPUT_QUEUE),
             [(f"g-{i}", orjson.dumps(b)) for i, b in enumerate(books)] + [("bad", b"not json")])
    expected = {"scifi": {f"Title {i}.json" for i in range(0, BOOKS, 2)},
                "romance": {f"Title {i}.json" for i in range(1, BOOKS, 2)}}
    wait_until(lambda: _stored(place) == expected, 120, 0.5, "the books stored")
    # What README's "What happens to a book" says each file carries.
    head = aws.s3.head_object(Bucket="scifi", Key="Title 0.json")
    assert head["ContentType"] == "application/json"
    assert set(head["Metadata"]) == {"book-id", "message-id", "message-group", "sequence-number"}
    assert head["Metadata"]["book-id"] == "b-0%20%C3%A9%25"
    assert head["Metadata"]["message-group"] == "g-0"
    assert head["Metadata"]["sequence-number"].isdigit()
    long_id = aws.s3.head_object(Bucket="scifi", Key="Title 2.json")["Metadata"]["book-id"]
    assert long_id == "sha256:" + hashlib.sha256(books[2]["id"].encode()).hexdigest()
    wait_until(lambda: _dead_letters(place) == 1, 120, 0.5, "the bad message dead-lettered")
    handmade = f"handmade-{uuid.uuid4().hex[:8]}"
    aws.create_bucket(handmade)
    aws.s3.put_object(Bucket=handmade, Key="note.txt", Body=b"kept")

    first.signal_group(signal.SIGINT)  # Ctrl-C
    first.wait_stopped()
    second = make_run()
    second.wait_serving()

    assert _stored(place) == expected
    assert _dead_letters(place) == 1
    assert place.aws().s3.get_object(Bucket=handmade, Key="note.txt")["Body"].read() == b"kept"
    second.signal_group(signal.SIGINT)
    second.wait_stopped()


def test_nothing_of_the_stack_listens_beyond_loopback(place: LocalStackPlace,
                                                      make_run: MakeRunFactory) -> None:
    run = make_run()
    run.wait_serving()
    found = listeners(run.processes() + emulator_tree(place))
    assert {(listener.address, listener.port) for listener in found} == {
        ("127.0.0.1", place.port), ("127.0.0.1", place.http_port)}, [str(x) for x in found]
    run.signal_group(signal.SIGTERM)
    run.wait_stopped()


# Where a stop can come: while the emulator starts, while osls deploys, while gunicorn boots,
# while it serves. Each with SIGTERM and with SIGINT, three in a row to the process group.
def _emulator_starting(place: LocalStackPlace) -> bool:
    return bool(place.emulators()) and not emulator_ready(place)


def _deploying(run: MakeRun) -> bool:
    return any("osls" in command(pid) and "npx" not in command(pid)
               for pid in run.processes())


def _booting(run: MakeRun) -> bool:
    return (any("gunicorn" in command(pid) for pid in run.processes())
            and not run.serving())


STOPS = [
    ("emulator starting", signal.SIGTERM, 0.0),
    ("deploying", signal.SIGINT, 0.0),
    ("gunicorn booting", signal.SIGTERM, 0.3),
    ("serving", signal.SIGINT, 0.3),
    ("emulator starting", signal.SIGINT, 0.3),
    ("deploying", signal.SIGTERM, 0.3),
    ("gunicorn booting", signal.SIGINT, 0.0),
    ("serving", signal.SIGTERM, 0.0),
]


def _leaves_exactly_a_ready_emulator_or_none(place: LocalStackPlace) -> int | None:
    """After a stop: LocalStack runs only if it was ready (then it is the one its pid file
    names, and answers); one still starting was stopped with everything else."""
    recorded = place.emulator_pid()
    if recorded is None:
        assert place.emulators() == []
        return None
    assert place.emulators() == [recorded]
    wait_until(lambda: emulator_ready(place), 60, 0.5, "the kept emulator answering")
    return recorded


def test_repeated_stop_signals_end_everything_but_the_emulator(
        place: LocalStackPlace, make_run: MakeRunFactory) -> None:
    kept: int | None = None
    for phase, signum, gap in STOPS:
        if phase == "emulator starting" and place.emulators():
            place.stop_emulator()
        run = make_run()
        if phase == "emulator starting":
            run.wait_for(lambda: _emulator_starting(place), phase)
        elif phase == "deploying":
            run.wait_for(lambda run=run: _deploying(run), phase)  # type: ignore[misc]
        elif phase == "gunicorn booting":
            run.wait_for(lambda run=run: _booting(run), phase)  # type: ignore[misc]
        else:
            run.wait_serving()
        run.signal_group(signum, times=3, gap=gap)
        run.wait_stopped()  # fails naming what is left of the session
        survivor = _leaves_exactly_a_ready_emulator_or_none(place)
        if phase != "emulator starting":
            # The emulator that served this run is kept, the same process as before.
            assert survivor is not None and (kept is None or survivor == kept), run.log()
        kept = survivor
        assert not (place.run_dir / "gunicorn.pid").exists()


def test_a_sigterm_make_forwards_ends_everything_but_the_emulator(
        place: LocalStackPlace, make_run: MakeRunFactory) -> None:
    """The signal the issue caught orphaning LocalStack: make forwards a SIGTERM to its recipe
    (here make alone gets three), while the recipe's own stop is under way."""
    run = make_run()
    run.wait_serving()
    for _ in range(3):
        os.kill(run.pid, signal.SIGTERM)
    run.wait_stopped()
    assert _leaves_exactly_a_ready_emulator_or_none(place) is not None


def test_make_reload_adds_a_genre_deployed_by_make_infra(place: LocalStackPlace,
                                                         make_run: MakeRunFactory,
                                                         tmp_path: Path) -> None:
    """README's recipe: the genre added to the config file, `make infra` (its bucket), `make
    reload` (SIGHUP: the consumers take the new genre), and its books are stored; taken out of
    the list again, its bucket stays, with its books."""
    config = tmp_path / "local.conf"
    config.write_text("GENRE_BUCKETS=scifi=scifi,romance=romance\n")
    run = make_run(SHELVER_CONFIG_FILE=str(config))
    run.wait_serving()
    config.write_text("GENRE_BUCKETS=scifi=scifi,romance=romance,horror=horror\n")
    infra = place.make("infra", {"SHELVER_CONFIG_FILE": str(config)})
    assert infra.returncode == 0, infra.stdout + infra.stderr
    aws = place.aws()
    assert "horror" in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}
    reload = place.make("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    aws.send(aws.queue_url(INPUT_QUEUE), [("h", orjson.dumps(book("h-1", "Dracula", "horror")))])
    wait_until(lambda: aws.keys("horror") == ["Dracula.json"], 120, 0.5, "the horror book stored")
    assert _dead_letters(place) == 0
    # Taken out of the list again, the genre's bucket leaves the stack, with its books kept.
    config.write_text("GENRE_BUCKETS=scifi=scifi,romance=romance\n")
    infra = place.make("infra", {"SHELVER_CONFIG_FILE": str(config)})
    assert infra.returncode == 0, infra.stdout + infra.stderr
    outputs = aws.client("cloudformation").describe_stacks(
        StackName="shelver-local")["Stacks"][0]["Outputs"]
    assert "HorrorBucketName" not in {output["OutputKey"] for output in outputs}
    assert aws.keys("horror") == ["Dracula.json"]
    run.signal_group(signal.SIGINT)
    run.wait_stopped()
