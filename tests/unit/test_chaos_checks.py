"""The chaos suite's own checks, on fabricated S3 histories: a rewind must be seen also where a
book's versions repeat earlier bytes (so the ETag alone cannot say which message wrote them)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest

from tests.chaos.engine import Row, StorageCheck
from tests.chaos.workload import REPEAT_SHARE, Record, Workload, build_workload

GENRE, KEY = "scifi", "Dune.json"


def version(n: int, body: bytes, repeats: int = 0) -> Record:
    return Record("g", body, GENRE, KEY, n, repeats=repeats)


A = orjson.dumps({"id": "b-1", "title": "Dune", "genre": "scifi", "summary": "A"})
B = orjson.dumps({"id": "b-1", "title": "Dune", "genre": "scifi", "summary": "B"})
# Versions 1 to 3 of one book: A, B, A again (the same bytes as version 1, so the same ETag).
V1, V2, V3 = version(1, A), version(2, B), version(3, A, repeats=1)
WORKLOAD = Workload((V1, V2, V3), groups=1)
IDS = ("m-1", "m-2", "m-3")


def check(writes: Sequence[tuple[Record, str]]) -> Row:
    """Run the check on one key whose history is `writes`, oldest first: each the message whose
    body the version holds, and the message id its metadata names."""
    row = Row("fabricated")
    history = [(f"version-{i}", record.etag) for i, (record, _) in enumerate(writes)]
    metadata = {f"version-{i}": {"message-id": named} for i, (_, named) in enumerate(writes)}
    read: list[str] = []

    def head(version_id: str) -> dict[str, str]:
        read.append(version_id)
        return metadata[version_id]

    check = StorageCheck(WORKLOAD, IDS, row)
    check.history((GENRE, KEY), list(reversed(history)), head)
    check.finish()
    # Metadata is read only for the versions whose bytes several messages share.
    assert read == [f"version-{i}" for i, (r, _) in enumerate(writes) if r.body == A]
    return row


def test_a_history_in_send_order_is_clean() -> None:
    row = check([(V1, "m-1"), (V2, "m-2"), (V3, "m-3")])

    assert row.problems == []
    assert (row.stored, row.duplicates, row.order_violations, row.lost) == (3, 0, 0, 0)


def test_a_rewind_with_other_bytes_is_an_order_violation() -> None:
    # The scenario: seq 6 (B) put again over seq 7 (A).
    row = check([(V1, "m-1"), (V2, "m-2"), (V3, "m-3"), (V2, "m-2")])

    assert row.order_violations == 1
    assert row.duplicates == 1
    assert "scifi/Dune.json: version 2 written after version 3" in row.problems
    assert "scifi/Dune.json: ends with version 2, the last sent is 3" in row.problems


def test_a_rewind_with_the_same_bytes_is_seen_by_its_metadata() -> None:
    # Version 1 put again over version 3: the file's bytes are right, its sequence is not (the
    # next redelivery of version 2 would then be let through). Only the metadata tells.
    row = check([(V1, "m-1"), (V2, "m-2"), (V3, "m-3"), (V1, "m-1")])

    assert row.order_violations == 1
    assert row.duplicates == 1
    assert "scifi/Dune.json: version 1 written after version 3" in row.problems
    assert "scifi/Dune.json: ends with version 1, the last sent is 3" in row.problems


def test_a_version_whose_metadata_names_none_of_its_senders_is_a_problem() -> None:
    row = check([(V1, "m-1"), (V2, "m-2"), (V3, "m-2")])

    assert any("holds the bytes of versions 1, 3, but its metadata names message m-2" in p
               for p in row.problems)


def test_a_message_never_written_is_lost() -> None:
    row = check([(V1, "m-1"), (V3, "m-3")])

    assert row.lost == 1
    assert "1 valid message(s) never written, e.g. Dune.json v2" in row.problems


@pytest.mark.parametrize("seed", [0, 1])
def test_the_workload_repeats_earlier_bytes_within_a_book(seed: int) -> None:
    workload = build_workload(2000, 64, 0.01, "t", seed)
    later = [r for r in workload.valid if r.version > 1]
    repeats = [r for r in later if r.repeats]

    # About REPEAT_SHARE of the later versions repeat bytes: A, B, A and A, A both occur.
    assert REPEAT_SHARE / 2 < len(repeats) / len(later) < REPEAT_SHARE * 2
    assert {r.version - r.repeats for r in repeats} == {1, 2}
    sent = {(r.group, r.key, r.version): r.body for r in workload.valid}
    for r in repeats:
        assert r.body == sent[(r.group, r.key, r.repeats)]
        assert r.repeats < r.version
    # Equal bytes only ever within one book of one group.
    for same in workload.by_etag.values():
        assert len({(r.group, r.genre, r.key) for r in same}) == 1
