"""The Grafana dashboard against the real thing: after an operator's day (an S3 outage, a drain
with poison, a consumer killed), every panel's every query, sent as Grafana would to the real
Prometheus that scraped that Shelver (rules loaded), returns data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import PrometheusFactory, ShelverFactory
from tests.support import dashboard, workday
from tests.support.aws import Aws, Stack
from tests.support.proxy import FaultProxy

STEP_SECONDS = 2


@pytest.fixture
def workday_stack(aws: Aws) -> Iterator[Stack]:
    with aws.cloned_stack(visibility_timeout=workday.VISIBILITY_TIMEOUT) as stack:
        yield stack


def test_every_dashboard_query_returns_data_after_a_day_of_work(
        aws: Aws, workday_stack: Stack, s3_proxy: FaultProxy, shelver_factory: ShelverFactory,
        prometheus_for: PrometheusFactory):
    shelver = shelver_factory(workday_stack, AWS_ENDPOINT_URL_S3=s3_proxy.url)
    shelver.wait_healthy()
    prometheus = prometheus_for(shelver)

    day = workday.live_through(aws, workday_stack, shelver, s3_proxy, prometheus)

    wanted = dashboard.queries(dashboard.load())
    # The check can fail: a metric that does not exist, and a query Prometheus refuses.
    missing = dashboard.Query("canary", "A", 'sum(rate(shelver_no_such_metric_total{job="$job"}'
                              "[$__rate_interval]))", "")
    broken = dashboard.Query("canary", "B", "sum(rate(shelver_books_stored_total[$__range)", "")
    answers = dashboard.run(prometheus, [*wanted, missing, broken], day.start, day.end,
                            STEP_SECONDS)

    problems = [a.problem for a in answers if a.problem]
    assert problems[:-2] == [], "\n".join(problems[:-2]) + "\n" + prometheus.log()[-2000:]
    assert problems[-2].startswith("canary [A] returned no data: "), problems
    assert problems[-1].startswith("canary [B] failed: bad_data: "), problems
