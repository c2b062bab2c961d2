"""Every chaos scenario at CI size (a few hundred books each): nothing lost, nothing out of
order, nothing stuck. `python -m tests.chaos` runs the same scenarios at full size."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.chaos.engine import REDUCED, Scenario, run_scenario, table
from tests.chaos.scenarios import SCENARIOS, nothing
from tests.support.aws import DEPLOYED_QUEUE, Aws
from workers.backoff import Backoff
from workers.books.processor import retries_exhausted_at
from workers.lease.settle import back_off_seconds
from workers.settings import Settings


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_nothing_is_lost(scenario: Scenario, aws: Aws, aws_env: dict[str, str],
                         run_dir: Path) -> None:
    row = run_scenario(aws, aws_env, run_dir, scenario, REDUCED)

    print("\n" + table([row]) + "".join(f"\nnote: {n}" for n in row.notes))
    assert row.problems == [], "\n".join(row.problems)
    assert row.stored + row.dead_lettered == row.sent
    if scenario.inject is not nothing:
        assert row.faults > 0, "no fault was injected: the scenario tested nothing"


def test_the_deployed_redrive_outlasts_an_hour_of_s3_outage(aws: Aws) -> None:
    # SQS counts every receive, also those of a message failing while S3 is down; Shelver
    # dead-letters a message still failing at its receive retries_exhausted_at(maxReceiveCount),
    # before SQS's redrive would move it. The message waits out its backoff between receives,
    # so it lasts at least the sum of the backoffs before that receive.
    redrive = orjson.loads(aws.attributes(aws.queue_url(DEPLOYED_QUEUE))["RedrivePolicy"])
    defaults = Settings()
    last = retries_exhausted_at(redrive["maxReceiveCount"])
    assert last is not None

    backoff = Backoff(defaults.retry_backoff_base_seconds, defaults.retry_backoff_max_seconds)
    lasts = sum(back_off_seconds(backoff, n) for n in range(1, last))

    assert lasts >= 3600, f"a valid book reaches the DLQ after {lasts} s of S3 outage"
