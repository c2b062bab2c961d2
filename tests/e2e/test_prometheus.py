"""A real Prometheus scrapes Shelver's /metrics: the counters it records match what was sent."""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from scripts.emulator import free_port
from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until


def _ensure_installed(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:  # `make test` installs it; a bare pytest run installs it here
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "prometheus"], check=True)
        path = shutil.which(binary)
    assert path, f"{binary} is not installed"
    return path


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        binary = _ensure_installed("prometheus")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: shelver\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        processes.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _query(base: str, expression: str) -> float | None:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(expression)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            result = orjson.loads(answer.read())["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_counters_that_match_what_was_sent(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory, prometheus_for) -> None:
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    prometheus = prometheus_for(shelver.port)
    aws.send(stack.input_url, [(f"p{n % 3}", book(f"prom-{n}", f"Scraped {n}", "scifi"))
                               for n in range(30)] + [("p0", b"not a book")])
    wait_until(lambda: aws.drained(stack.input_url), 60, 0.5, "the input queue to drain")

    wait_until(lambda: _query(prometheus, 'up{job="shelver"}') == 1, 60, 0.5, "a scrape")
    wait_until(lambda: _query(prometheus, "sum(shelver_books_stored_total)") == 30, 30, 0.5,
               "Prometheus to see 30 stored books")
    assert _query(prometheus, "sum(shelver_messages_received_total)") == 31
    assert _query(prometheus, 'shelver_messages_dead_lettered_total{reason="not_json"}') == 1
    assert _query(prometheus, "shelver_consumers_alive") == 2
    assert _query(prometheus, "sum(shelver_processing_seconds_count)") == 31
    assert _query(prometheus, "sum(shelver_s3_put_seconds_count)") == 30
    wait_until(lambda: _query(prometheus, 'shelver_queue_messages{state="visible"}') == 0, 30,
               0.5, "the sampled queue depth")
    assert (_query(prometheus, "shelver_last_successful_poll_timestamp_seconds") or 0) > 0


def test_metrics_exposition_passes_promtool(stack: Stack, shelver_factory: ShelverFactory):
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    promtool = _ensure_installed("promtool")
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
        "shelver_consumers_alive",
        "shelver_last_successful_poll_timestamp_seconds",
        "shelver_processing_seconds_count",
        "shelver_s3_put_seconds_count",
    } <= samples
