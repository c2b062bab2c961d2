"""A real Prometheus scrapes Shelver's /metrics: the counters it records match what was sent."""

from __future__ import annotations

import subprocess
import time
import urllib.request

from tests.e2e.conftest import PrometheusFactory, ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.prometheus import ensure_installed


def test_prometheus_scrapes_counters_that_match_what_was_sent(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory,
        prometheus_for: PrometheusFactory) -> None:
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    prometheus = prometheus_for(shelver)
    aws.send(stack.input_url, [(f"p{n % 3}", book(f"prom-{n}", f"Scraped {n}", "scifi"))
                               for n in range(30)] + [("p0", b"not a book")])
    wait_until(lambda: aws.drained(stack.input_url), 60, 0.5, "the input queue to drain")

    # Every counter moves before its message's delete: a scrape after the drain sees them all.
    prometheus.wait_for_scrape(after=time.time())
    query = prometheus.query
    assert query("sum(shelver_books_stored_total)") == 30
    assert query("sum(shelver_messages_received_total)") == 31
    assert query('shelver_messages_dead_lettered_total{reason="not_json"}') == 1
    assert query("shelver_consumers_alive") == 2
    assert query("shelver_consumers_configured") == 2
    assert query("sum(shelver_processing_seconds_count)") == 31
    assert query("sum(shelver_s3_put_seconds_count)") == 30
    assert query("sum(shelver_message_age_seconds_count)") == 31
    assert query("sum(shelver_message_lag_seconds_count)") == 30
    # Sent and stored within the minute, on one machine's clock.
    assert query('sum(shelver_message_lag_seconds_bucket{le="60.0"})') == 30
    wait_until(lambda: query('shelver_queue_messages{state="visible"}') == 0, 30,
               0.5, "the sampled queue depth")
    wait_until(lambda: query('shelver_dead_letter_queue_messages{state="visible"}') == 1, 30,
               0.5, "the sampled dead-letter queue depth")
    assert (query("shelver_last_successful_poll_timestamp_seconds") or 0) > 0
    assert query('count(shelver_build_info{version!="", python!="", boto3!=""})') == 1


def test_metrics_exposition_passes_promtool(stack: Stack, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    promtool = ensure_installed("promtool")
    with urllib.request.urlopen(shelver.url + "/metrics", timeout=10) as answer:
        exposition = answer.read()
    result = subprocess.run([promtool, "check", "metrics"], input=exposition,
                            capture_output=True, timeout=60)
    # promtool exits 1 on lint findings (e.g. naming advice) and 3 on a broken exposition.
    assert result.returncode in (0, 1), result.stderr.decode()
    assert b"error while linting" not in result.stderr
    samples = {line.rpartition(" ")[0] for line in exposition.decode().splitlines()
               if line and not line.startswith("#")}
    assert {
        "shelver_messages_received_total",
        'shelver_books_stored_total{genre="scifi"}',
        'shelver_books_stored_total{genre="romance"}',
        'shelver_messages_dead_lettered_total{reason="unknown_genre"}',
        'shelver_receive_calls_total{result="error"}',
        "shelver_visibility_extensions_total",
        'shelver_consumer_restarts_total{reason="died"}',
        'shelver_queue_messages{state="in_flight"}',
        'shelver_dead_letter_queue_messages{state="visible"}',
        "shelver_consumers_alive",
        "shelver_consumers_configured",
        "shelver_last_successful_poll_timestamp_seconds",
        "shelver_processing_seconds_count",
        "shelver_s3_put_seconds_count",
        "shelver_message_age_seconds_count",
        "shelver_message_lag_seconds_count",
    } <= samples
    assert any(sample.startswith("shelver_build_info{") for sample in samples)
