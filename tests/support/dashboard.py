"""The Grafana dashboard (deploy/grafana/shelver.json) read the way Grafana runs it: every panel's
every query, with the template variables replaced by concrete values, sent to a real Prometheus
as a range query. Used by the dashboard test and by `make dashboard-picture`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.support.prometheus import JOB, SCRAPE_SECONDS, Prometheus, Series

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "shelver.json"
# Grafana's built-in variables the dashboard may use; everything else must be a template one.
BUILT_INS = ("__rate_interval", "__interval", "__range", "__range_s")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Query:
    panel: str
    ref_id: str
    expr: str
    legend: str


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = orjson.loads(path.read_bytes())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that draws something, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panels(panel)
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [Query(panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
            for panel in panels(dashboard) for target in panel["targets"]]


def variables_used(expr: str) -> set[str]:
    return {next(g for g in match.groups() if g) for match in _VARIABLE.finditer(expr)}


def grafana_values(range_seconds: float, step_seconds: float) -> dict[str, str]:
    """What Grafana puts in for its built-ins, for a Prometheus data source whose scrape interval
    is SCRAPE_SECONDS: $__interval is the step, and $__rate_interval is
    max($__interval + scrape interval, 4 x scrape interval)."""
    rate_interval = max(step_seconds + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)
    return {
        "__interval": f"{step_seconds:g}s",
        "__rate_interval": f"{rate_interval:g}s",
        "__range": f"{range_seconds:.0f}s",
        "__range_s": f"{range_seconds:.0f}",
        # The template variables: this job, and "All" instances (the variable's allValue).
        "job": JOB,
        "instance": ".*",
    }


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace $name, ${name} and [[name]]; a variable without a value is an error."""
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]
    return _VARIABLE.sub(value, expr)


@dataclass(frozen=True)
class Answer:
    query: Query
    expr: str  # as sent
    series: list[tuple[dict[str, str], Series]]  # (labels, points)
    error: str | None = None

    @property
    def problem(self) -> str | None:
        if self.error is not None:
            return f"{self.query.panel} [{self.query.ref_id}] failed: {self.error} ({self.expr})"
        if not self.series:
            return f"{self.query.panel} [{self.query.ref_id}] returned no data: {self.expr}"
        return None


def run(prometheus: Prometheus, wanted: list[Query], start: float, end: float,
        step: float) -> list[Answer]:
    """Each query as Grafana would send it for the time range [start, end]."""
    values = grafana_values(end - start, step)
    answers = []
    for query in wanted:
        expr = substitute(query.expr, values)
        try:
            answers.append(Answer(query, expr, prometheus.query_range(expr, start, end, step)))
        except ValueError as error:
            answers.append(Answer(query, expr, [], str(error)))
    return answers
