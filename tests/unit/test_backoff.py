"""The one backoff policy: nothing before a failure, then the first delay, doubling, capped."""

from __future__ import annotations

import pytest

from workers.backoff import Backoff


@pytest.mark.parametrize(("failures", "expected"),
                         [(-1, 0), (0, 0), (1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (7, 30)])
def test_capped_doubling(failures: int, expected: float) -> None:
    assert Backoff(1.0, 30.0).delay(failures) == expected


def test_a_first_delay_above_the_cap_is_cut_to_the_cap() -> None:
    assert Backoff(50.0, 30.0).delay(1) == 30


def test_a_very_long_run_of_failures_stays_at_the_cap() -> None:
    assert Backoff(2.0, 300.0).delay(10_000) == 300
