"""The `shelver` console script against LocalStack and a real gunicorn, and SHELVER_CONFIG_FILE
reloaded on SIGHUP: the operator's path from books in the DLQ to books on the shelf."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.shelver import GUNICORN, REPO, Shelver

GROUPS = 3
VERSIONS = 10  # per group: one receive reaches ten messages of a FIFO group, so stats sees all


def genre_buckets(buckets: dict[str, str]) -> str:
    return ",".join(f"{genre}={bucket}" for genre, bucket in buckets.items())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def new_generation(shelver: Shelver, before: set[int]) -> None:
    wait_until(lambda: not before & set(shelver.consumer_pids())
               and shelver.get("/health").status == 200, 30, 0.3, "a new generation")


def versions_in_order(aws: Aws, bucket: str) -> dict[str, list[Any]]:
    """Each key's stored `version` fields, oldest write first."""
    return {
        key: [orjson.loads(aws.s3.get_object(Bucket=bucket, Key=key, VersionId=version)
                           ["Body"].read())["version"] for version, _ in reversed(history)]
        for key, history in aws.object_versions(bucket).items()
        if not key.startswith(".")  # `shelver check` probes, deleted (here: delete markers)
    }


def test_horror_books_are_redriven_after_a_reload_and_all_stored_in_order(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, run_dir: Path):
    # Versioned: every write of a key is listed, so the order of the writes can be checked.
    horror = aws.create_bucket(stack.buckets["scifi"].replace("scifi", "horror"), versioned=True)
    try:
        config = run_dir / "shelver.conf"
        config.write_text(
            f"# the buckets of this deploy\nGENRE_BUCKETS={genre_buckets(stack.buckets)}\n")
        shelver = shelver_factory(stack, SHELVER_CONFIG_FILE=str(config))
        shelver.wait_healthy()
        # Each group: ten successive versions of one horror book, to be stored in that order.
        aws.send(stack.input_url, [
            (f"horror-{g}", book(f"h-{g}", f"Horror {g}", "horror", version=v))
            for v in range(VERSIONS) for g in range(GROUPS)])
        total = GROUPS * VERSIONS
        wait_until(lambda: aws.counts(stack.dlq_url) == (total, 0) and aws.drained(
            stack.input_url), 60, 0.3, f"{total} messages in the DLQ")

        stats = ok(shelver.cli("dlq", "stats"))
        assert f"messages           {total} (visible {total}, in flight 0, delayed 0)" in stats
        assert f"by shelver-reason ({total} read)\n        {total}  unknown_genre\n" in stats
        peek = ok(shelver.cli("dlq", "peek", "-n", "2"))
        assert peek.count("  reason  unknown_genre\n  detail  genre 'horror' has no bucket") == 2
        assert aws.counts(stack.dlq_url) == (total, 0)  # read, not consumed

        # The operator adds the genre and reloads.
        before = set(shelver.consumer_pids())
        config.write_text(f"GENRE_BUCKETS={genre_buckets({**stack.buckets, 'horror': horror})}\n")
        shelver.signal(signal.SIGHUP)
        new_generation(shelver, before)
        assert f"ok    bucket {horror} (genre horror) writable" in ok(shelver.cli("check"))

        dry = ok(shelver.cli("dlq", "redrive", "--dry-run"))
        assert dry.endswith(f"dry run: would move {total} message(s) to {stack.input_url}; "
                            "nothing moved\n")
        assert aws.counts(stack.dlq_url) == (total, 0)

        # Throttled, so the command sees the task running (LocalStack moves 30 in a few ms).
        started = time.monotonic()
        redrive = shelver.cli("dlq", "redrive", "--rate", "10")
        command_seconds = time.monotonic() - started
        assert f"moved {total} message(s) from {stack.dlq_url} to {stack.input_url}" in ok(
            redrive)
        expected = {f"Horror {g}.json": list(range(VERSIONS)) for g in range(GROUPS)}
        wait_until(lambda: versions_in_order(aws, horror) == expected, 60, 0.5,
                   "every redriven book stored, in order")
        stored_seconds = time.monotonic() - started
        assert aws.counts(stack.dlq_url) == (0, 0)
        wait_until(lambda: aws.drained(stack.input_url), 30, 0.3, "the input queue to drain")
        print(f"\nredrive of {total} books: command {command_seconds:.1f} s, "
              f"all stored {stored_seconds:.1f} s after it started")
        assert "Traceback" not in shelver.log()
    finally:
        aws.delete_bucket(horror)


def test_a_bad_config_file_on_sighup_is_logged_and_everything_keeps_running(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, run_dir: Path):
    config = run_dir / "shelver.conf"
    config.write_text(f"GENRE_BUCKETS={genre_buckets(stack.buckets)}\n")
    shelver = shelver_factory(stack, SHELVER_CONFIG_FILE=str(config))
    shelver.wait_healthy()
    consumers = set(shelver.consumer_pids())
    config.write_text("CONSUMERS=2\nGENRE_BUCKETS=horror\n")

    shelver.signal(signal.SIGHUP)

    wait_until(lambda: "keeping the running consumers" in shelver.log(), 20, 0.2,
               "the reload to be refused")
    assert f"{config} line 2: GENRE_BUCKETS='horror' is not valid" in shelver.log()
    # gunicorn replaced its HTTP workers all the same; once the old ones are gone, the new ones
    # answer: they serve the settings the consumers kept, not the broken file.
    wait_until(lambda: shelver.log().count("Worker exiting") >= 2, 30, 0.2,
               "the old HTTP workers to exit")
    wait_until(lambda: shelver.get("/health").status == 200, 20, 0.2, "/health 200")
    assert shelver.exit_code() is None
    assert set(shelver.consumer_pids()) == consumers
    aws.send(stack.input_url, [("g", book("k-1", "Kept Settings", "romance"))])
    wait_until(lambda: aws.objects(stack), 20, 0.2, "a book stored with the kept settings")


def test_a_bad_config_file_stops_start_up_naming_file_line_and_variable(
        aws_env: dict[str, str], run_dir: Path):
    config = run_dir / "shelver.conf"
    config.write_text("# tuned for the big queue\nCONSUMERS=many\n")
    shelver = Shelver(env={**aws_env, "SHELVER_CONFIG_FILE": str(config)}, run_dir=run_dir)

    result = subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py"], cwd=REPO,
                            env=shelver.full_env(), capture_output=True, text=True, timeout=60)

    assert result.returncode == 3
    assert (f"shelver: configuration error: {config} line 2: CONSUMERS='many' is not valid: "
            "expected an integer from 1 to 64") in result.stderr
    assert "Traceback" not in result.stderr
    assert shelver.cli("check").returncode == 3  # the command refuses the same file
