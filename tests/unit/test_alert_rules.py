"""The chart's alerting rules and Grafana dashboard, checked without a cluster.

promtool (Debian's prometheus package, ``make prometheus``) checks the rules file and runs its
unit tests, tests/promtool/sunblend-alerts.test.yaml. The rest reads the files: every alert has a
case that fires and one that does not, and the rules and the dashboard name only metrics that the
operator (handlers/metrics.py, leader election's ``sunblend_leader`` included) and the GPU agent
(agent/exporter.py) export. The e2e test tests/e2e/test_dashboard.py runs the dashboard's
queries against a real Prometheus, and renders both with helm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import prometheus_client as prom
import pytest
import yaml

from sunblend.agent import exporter, nvml
from sunblend.handlers import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "sunblend" / "rules" / "sunblend-alerts.yaml"
RULE_TESTS = ROOT / "tests" / "promtool" / "sunblend-alerts.test.yaml"
DASHBOARD = ROOT / "charts" / "sunblend" / "dashboards" / "sunblend.json"

LEADER_METRIC = "sunblend_leader"
"""Leader election's gauge, by identity: 1 on the leader, 0 on the others (SunblendNoLeader reads it)."""

ALERTS = {
    "SunblendSpotFallbackTooLong",
    "SunblendBudgetExceeded",
    "SunblendCapacityShort",
    "SunblendPlanInfeasible",
    "SunblendMetricsUnavailable",
    "SunblendNoLeader",
}


def _promtool() -> str:
    found = os.environ.get("SUNBLEND_PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).is_file():
        pytest.skip("promtool is missing: run `make prometheus` (Debian's prometheus package ships it)")
    return found


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def _exported(registry: prom.CollectorRegistry) -> set[str]:
    """The series names a registry exposes, labelled or not, with the client's suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))}


def test_promtool_checks_the_rules_file():
    run = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in run.stdout


def test_promtool_unit_tests_of_every_alert_pass():
    run = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_the_rules_are_the_expected_alerts_each_with_a_severity_and_words():
    rules = _rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_alert_has_a_case_that_fires_and_one_that_does_not():
    document = yaml.safe_load(RULE_TESTS.read_text())
    assert document["rule_files"] == ["../../charts/sunblend/rules/sunblend-alerts.yaml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            (fires if expected else quiet).add(check["alertname"])
            for alert in expected:
                assert alert["exp_annotations"]["description"], check["alertname"]
    assert fires == ALERTS
    assert quiet == ALERTS


def test_the_rules_and_the_dashboard_name_only_metrics_that_are_exported():
    agent = exporter.Exporter(nvml.fake_profile("h100-mig", gpus=2, utilization=0.5), node="gpu-1")
    agent.sample()
    known = _exported(metrics.REGISTRY) | _exported(agent.registry)
    named = {
        name
        for expr in [rule["expr"] for rule in _rules()] + _dashboard_exprs()
        for name in re.findall(r"\bsunblend_[a-z0-9_]+", expr)
    }
    assert named, "no sunblend metric found in the rules or the dashboard"
    assert named - known == set()
    assert {"sunblend_plan_cost_dollars_per_hour", "sunblend_gpu_utilization_ratio", LEADER_METRIC} <= named


def test_the_dashboard_has_the_panels_and_each_target_a_query():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in panels}
    for wanted in (
        "Cost per hour by capacity type",
        "Savings versus all on-demand, by pool",
        "GPUs by region",
        "GPU utilisation by node",
        "Cost per million tokens",
    ):
        assert wanted in titles
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "pool", "model"}
    assert variables["datasource"]["type"] == "datasource"
