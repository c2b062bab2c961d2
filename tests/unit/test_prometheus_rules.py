"""The alert and recording rules (deploy/prometheus/shelver.rules.yml): valid for promtool, unit
tested by promtool (tests/prometheus/shelver.rules.test.yml), every alert tested firing and not
firing, annotated, and given a runbook section in docs/operations.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import (
    RULE_FILES,
    ensure_installed,
    exposed_series,
    recorded_series,
    rules,
    series_named,
)

REPO = Path(__file__).resolve().parents[2]
RULES_TEST = REPO / "tests" / "prometheus" / "shelver.rules.test.yml"
OPERATIONS = REPO / "docs" / "operations.md"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ensure_installed("promtool"), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules("alert")}


def test_the_rule_files_pass_promtool_check():
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_reads_series_that_exist():
    """promtool's unit tests feed the rules the names they use: a misspelt metric passes them."""
    known = exposed_series() | recorded_series()
    unknown = {rule.get("alert", rule.get("record")): series_named(rule["expr"]) - known
               for rule in rules("alert") + rules("record")}
    assert {name: names for name, names in unknown.items() if names} == {}


def test_promtool_unit_tests_can_fail(tmp_path: Path):
    """Wrong expectations are reported: the suite above does not pass by accident."""
    suite = yaml.safe_load(RULES_TEST.read_text())
    suite["rule_files"] = [str(path) for path in RULE_FILES]
    tests = {test["name"]: test for test in suite["tests"]}
    tests["S3 refuses every write"]["alert_rule_test"][1]["exp_alerts"] = []
    tests["replicas share one queue, its depths are not added up"][
        "promql_expr_test"][0]["exp_samples"][0]["value"] = 98  # added up instead of the max
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(suite))

    result = promtool("test", "rules", str(broken))

    assert result.returncode != 0
    report = result.stdout + result.stderr
    assert "alertname: ShelverS3Failing, time: 5m" in report
    assert "job:shelver_queue_backlog:max" in report


def test_every_alert_is_tested_firing_and_not_firing():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert {name: cases.get(name, set()) for name in alerts()} == {
        name: {True, False} for name in alerts()}


def runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/operations.md's headings: lower case, punctuation dropped."""
    headings = re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_says_what_to_look_at_and_has_a_runbook(name: str):
    rule = alerts()[name]
    annotations = rule["annotations"]

    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert annotations["summary"].strip()
    assert len(annotations["description"]) > len(annotations["summary"])
    assert annotations["runbook"] == f"docs/operations.md#{name.lower()}"
    assert name.lower() in runbook_anchors(), f"no section '{name}' in {OPERATIONS.name}"


def test_prometheus_loads_the_rule_files():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    loaded = {(PROMETHEUS_CONFIG.parent / f).resolve() for f in config["rule_files"]}
    assert loaded == {path.resolve() for path in RULE_FILES}
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))  # checks the rule files too
    assert result.returncode == 0, result.stdout + result.stderr
