"""A real Prometheus (Debian's package) for tests and the dashboard picture: it scrapes Shelvers
on loopback, evaluates the project's rule files, and answers PromQL over its HTTP API."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import yaml
from prometheus_client.metrics import MetricWrapperBase

from scripts.emulator import free_port
from tests.support.aws import wait_until
from workers import metrics

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = (REPO / "deploy" / "prometheus" / "shelver.rules.yml",)
JOB = "shelver"
# Scraped and evaluated every second: rate() over a few seconds has samples to work with.
SCRAPE_SECONDS = 1
# Series Shelver makes at scrape time (service/status_metrics.py), and Prometheus's own.
SCRAPE_TIME_SERIES = frozenset({"shelver_build_info", "shelver_consumer_failing", "up"})
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def ensure_installed(binary: str) -> str:
    """The path of `prometheus` or `promtool`, installed from Debian first if missing."""
    path = shutil.which(binary)
    if path is None:  # `make test` installs it; a bare pytest run installs it here
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "prometheus"], check=True)
        path = shutil.which(binary)
    assert path, f"{binary} is not installed"
    return path


Series = list[tuple[float, float]]  # (Unix time, value)


# -- names: what a query or a rule may select ------------------------------------------------------
def exposed_series() -> set[str]:
    """Every series name Shelver's /metrics can show (and `up`)."""
    names = set(SCRAPE_TIME_SERIES)
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def rules(kind: str) -> list[dict[str, Any]]:
    """The rules of RULE_FILES that are `record` or `alert` rules."""
    return [rule for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


def recorded_series() -> set[str]:
    return {rule["record"] for rule in rules("record")}


def series_named(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not its functions, labels or strings)."""
    bare = re.sub(r'"[^"]*"', "", expr)  # strings
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)  # label matchers, ranges
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    words = set(re.findall(r"[a-zA-Z_:][\w:]*", bare))
    functions = set(re.findall(r"([a-zA-Z_]\w*)\s*\(", bare))
    return words - functions - {"and", "or", "unless", "offset", "bool"}


@dataclass
class Prometheus:
    """`prometheus` on a free loopback port, scraping `targets` as job "shelver"."""

    work_dir: Path
    targets: list[int]  # ports on 127.0.0.1
    rule_files: tuple[Path, ...] = RULE_FILES
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        targets = ", ".join(f"'127.0.0.1:{port}'" for port in self.targets)
        rules = "".join(f"  - {path}\n" for path in self.rule_files)
        return (f"global:\n  scrape_interval: {SCRAPE_SECONDS}s\n"
                f"  scrape_timeout: {SCRAPE_SECONDS}s\n"
                f"  evaluation_interval: {SCRAPE_SECONDS}s\n"
                + (f"rule_files:\n{rules}" if rules else "")
                + f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
                f"      - targets: [{targets}]\n")

    def start(self) -> Prometheus:
        config = self.work_dir / "prometheus.yml"
        config.write_text(self.config())
        self._log = open(self.work_dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [ensure_installed("prometheus"), f"--config.file={config}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             f"--storage.tsdb.path={self.work_dir / 'tsdb'}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the HTTP API ----------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer, else raises with the error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = orjson.loads(answer.read())
        except urllib.error.HTTPError as error:  # 400/422: a bad query, with Prometheus's reason
            body = orjson.loads(error.read())
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expression: str) -> float | None:
        """The first sample of an instant query; None if it has none or Prometheus is not up."""
        try:
            result = self.api("query", query=expression)["result"]
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None

    def query_range(self, expression: str, start: float, end: float, step: float
                    ) -> list[tuple[dict[str, str], Series]]:
        """Every series of a range query, (labels, points), with only its finite values
        (Grafana draws NaN and infinities as gaps: they are no data)."""
        result = self.api("query_range", query=expression, start=f"{start:.3f}",
                          end=f"{end:.3f}", step=f"{step:g}")["result"]
        found = []
        for series in result:
            points = [(float(t), float(v)) for t, v in series["values"]
                      if math.isfinite(float(v))]
            if points:
                found.append((dict(series["metric"]), points))
        return found

    def wait_for_scrape(self, after: float = 0.0, timeout: float = 60) -> None:
        """Until every target is up in a scrape that began after `after` (wall clock): what
        Shelver had counted by then is what the queries see."""
        wait_until(lambda: self.query(f'min(up{{job="{JOB}"}})') == 1
                   and (self.query(f'min(timestamp(up{{job="{JOB}"}}))') or 0) > after,
                   timeout, 0.5, "Prometheus to scrape every target")

    def log(self) -> str:
        try:
            return (self.work_dir / "prometheus.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
