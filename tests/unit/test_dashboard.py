"""The Grafana dashboard's JSON (deploy/grafana/shelver.json), statically: one data source
variable for everything, only defined variables, only metrics Shelver or its recording rules
make, panels on the grid. tests/e2e/test_dashboard.py runs every query against Prometheus."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import dashboard
from tests.support.prometheus import exposed_series, recorded_series, series_named

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard.load()


def test_series_named_finds_metric_names_only():
    assert series_named('histogram_quantile(0.9, sum by (le) (rate(x_bucket{a="b"}[5m])))') \
        == {"x_bucket"}
    assert series_named("time() - max by (instance) (job:y:max)") == {"job:y:max"}


def test_every_query_uses_series_that_exist(board: dict[str, Any]):
    known = exposed_series() | recorded_series()
    unknown = {q.panel: series_named(q.expr) - known for q in dashboard.queries(board)}
    assert {panel: names for panel, names in unknown.items() if names} == {}


def test_the_dashboard_shows_what_the_issue_asks_for(board: dict[str, Any]):
    used = {name for q in dashboard.queries(board) for name in series_named(q.expr)}
    assert {
        "shelver_books_stored_total", "shelver_messages_received_total",
        "shelver_messages_dead_lettered_total", "shelver_messages_retried_total",
        "shelver_queue_messages", "shelver_dead_letter_queue_messages",
        "shelver_message_age_seconds_bucket", "shelver_message_lag_seconds_bucket",
        "shelver_processing_seconds_bucket", "shelver_s3_put_seconds_bucket",
        "shelver_consumers_alive", "shelver_consumer_restarts_total",
        "shelver_receive_calls_total",
    } <= used
    # Reasons are never enumerated: new ones (say crashed_consumer) appear by themselves.
    assert not any("reason=" in q.expr for q in dashboard.queries(board))


def test_every_panel_and_query_uses_the_datasource_variable(board: dict[str, Any]):
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard.panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert [t["datasource"] for t in panel["targets"]] == [DATASOURCE] * len(panel["targets"])
    for template in board["templating"]["list"]:
        if template["type"] == "query":
            assert template["datasource"] == DATASOURCE


def test_queries_use_only_defined_variables(board: dict[str, Any]):
    defined = {v["name"] for v in board["templating"]["list"]} | set(dashboard.BUILT_INS)
    used = {name for q in dashboard.queries(board) for name in dashboard.variables_used(q.expr)}
    assert used <= defined
    assert {"__rate_interval", "job", "instance"} <= used


def test_substitution_refuses_an_unknown_variable():
    values = dashboard.grafana_values(600, 15)
    assert dashboard.substitute('rate(x{job="$job"}[$__rate_interval])', values) == \
        'rate(x{job="shelver"}[16s])'
    assert dashboard.substitute("rate(x[${__range}]) + [[job]]", values) == \
        "rate(x[600s]) + shelver"
    with pytest.raises(KeyError, match="namespace"):
        dashboard.substitute('x{namespace="$namespace"}', values)


def test_panels_have_unique_ids_and_refids_and_tile_the_grid(board: dict[str, Any]):
    every = [*board["panels"], *(p for r in board["panels"] for p in r.get("panels", []))]
    assert len({p["id"] for p in every}) == len(every)
    cells: set[tuple[int, int]] = set()
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(grid["x"] + dx, grid["y"] + dy)
                   for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    for panel in dashboard.panels(board):
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert panel["description"], panel["title"]
