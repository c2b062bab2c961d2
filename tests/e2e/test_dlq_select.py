"""The DLQ workflow finished with the shipped tool, on real gunicorn and LocalStack: what is
not a book deleted (by reason, by id), what was refused for a missing genre redriven once the
genre is added (by genre), selectively, the rest left where it was; each with --dry-run first."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from tests.e2e.conftest import ShelverFactory
from tests.e2e.test_cli import genre_buckets, new_generation, ok
from tests.support.aws import Aws, Stack, book, wait_until


def test_dlq_delete_and_selective_redrive_finish_the_workflow(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, run_dir: Path) -> None:
    horror = aws.create_bucket(stack.buckets["scifi"].replace("scifi", "horror"))
    try:
        config = run_dir / "shelver.conf"
        config.write_text(f"GENRE_BUCKETS={genre_buckets(stack.buckets)}\n")
        shelver = shelver_factory(stack, SHELVER_CONFIG_FILE=str(config))
        shelver.wait_healthy()
        aws.send(stack.input_url, [("bad", b"{broken"), ("bad", b"not json either")]
                 + [("h", book(f"h-{n}", f"Horror {n}", "horror")) for n in range(3)]
                 + [("w", book("w-1", "Western", "western"))])
        wait_until(lambda: aws.counts(stack.dlq_url) == (6, 0) and aws.drained(stack.input_url),
                   60, 0.3, "six messages in the DLQ")

        # Delete what is not a book: a dry run first, which deletes nothing.
        dry = ok(shelver.cli("dlq", "delete", "--reason", "not_json", "--dry-run"))
        assert dry.count("would delete  ") == 2
        assert "dry run: would delete 2 of 6 message(s) read (reason not_json)" in dry
        assert aws.counts(stack.dlq_url) == (6, 0)
        deleted = ok(shelver.cli("dlq", "delete", "--reason", "not_json", "--rate", "5"))
        assert "deleted 2 of 2 message(s) selected (reason not_json)" in deleted
        assert "; 4 other(s) read, left in the queue" in deleted
        assert aws.counts(stack.dlq_url) == (4, 0)

        # Add the horror genre; redrive the horror books only.
        before = set(shelver.consumer_pids())
        config.write_text(f"GENRE_BUCKETS={genre_buckets({**stack.buckets, 'horror': horror})}\n")
        shelver.signal(signal.SIGHUP)
        new_generation(shelver, before)
        dry = ok(shelver.cli("dlq", "redrive", "--genre", "horror", "--dry-run"))
        assert "dry run: would move 3 of 4 message(s) read (genre horror)" in dry
        assert aws.counts(stack.dlq_url) == (4, 0)
        moved = ok(shelver.cli("dlq", "redrive", "--genre", "horror", "--reason",
                               "unknown_genre"))
        assert "moved 3 message(s) (reason unknown_genre and genre horror)" in moved
        wait_until(lambda: sorted(aws.keys(horror)) == [f"Horror {n}.json" for n in range(3)],
                   60, 0.3, "the horror books stored")
        wait_until(lambda: aws.drained(stack.input_url), 30, 0.3, "the input queue to drain")
        assert aws.counts(stack.dlq_url) == (1, 0)  # the western, not selected

        # The last one by its id, as peek shows it.
        peek = ok(shelver.cli("dlq", "peek"))
        match = re.search(r"^(\S+)  group w  original (\S+)$", peek, re.MULTILINE)
        assert match is not None, peek
        deleted = ok(shelver.cli("dlq", "delete", "--id", match[2]))  # the original id works
        assert "deleted 1 of 1 message(s) selected" in deleted
        assert aws.counts(stack.dlq_url) == (0, 0)
        # Nothing wrongly blamed: the redriven books did not come back.
        assert "Traceback" not in shelver.log()
    finally:
        aws.delete_bucket(horror)


def test_dlq_delete_refuses_to_run_without_a_selection(stack: Stack,
                                                      shelver_factory: ShelverFactory) -> None:
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    result = shelver.cli("dlq", "delete")
    assert result.returncode == 1
    assert "dlq delete needs --id or --reason" in result.stderr
