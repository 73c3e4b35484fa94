"""The Grafana dashboard's queries against a real Prometheus that scrapes a running operator, and the
chart's PrometheusRule and dashboard ConfigMap as helm renders them.

Debian's Prometheus scrapes, every second: the session's operator (``sunblend run``, its metrics
port), and the fixtures of test_prometheus.py (fresh instances for this module): two fake-NVML agent
processes (gpu-mumbai-1 with two GPUs at 80%, gpu-london-1 with GPU 0 in MIG and GPU 1 at 30%) and
the vLLM and DCGM-style endpoints. Once the operator has planned the example pool, every target of
every panel in charts/sunblend/dashboards/sunblend.json runs as an instant query, with its Grafana
variables replaced by concrete values, and must parse and return at least one series. The
variables' own queries must return values too. Everything started here is stopped here.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Operator, wait_for
from tests.e2e.test_chart import _helm, helm  # noqa: F401
from tests.e2e.test_operator import _example
from tests.e2e.test_prometheus import Prometheus, agents, model_servers, prometheus_binary  # noqa: F401

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sunblend"
DASHBOARD = CHART / "dashboards" / "sunblend.json"
RULES = CHART / "rules" / "sunblend-alerts.yaml"
POOL = "chat-india-uk"


def _targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query target of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["refId"], t["expr"]) for p in panels for t in p.get("targets", []) if t.get("expr")]


TARGETS = _targets()


def concrete(expr: str, namespace: str) -> str:
    """``expr`` with Grafana's variables replaced: this test's pool, every model, a 1 m interval."""
    values = {"namespace": namespace, "pool": POOL, "model": ".*"}
    out = re.sub(r"\$\{?__\w+\}?", "1m", expr)  # $__rate_interval, $__interval, $__range
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], out)
    assert "$" not in out, out
    return out


def query(url: str, expr: str) -> list[dict]:
    """An instant query's result; a query Prometheus rejects fails the test at once."""
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"Prometheus rejected {expr!r}: HTTP {error.code} {error.read().decode()}") from error
    assert answer["status"] == "success", answer
    assert answer["data"]["resultType"] == "vector", answer
    return list(answer["data"]["result"])


@pytest.fixture(scope="module")
def planned(operator: Operator) -> Iterator[str]:
    """The example pool, planned by the session's operator, in a namespace of this module's own."""
    cluster = operator.cluster
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        cluster.apply(_example(), namespace)
        cluster.kubectl(
            "wait", "-n", namespace, f"inferencepools.sunblend.dev/{POOL}", "--for=condition=Ready", "--timeout=30s"
        )
        yield namespace
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: Path,  # noqa: F811
    agents: list[dict],  # noqa: F811
    model_servers: dict[str, list[dict]],  # noqa: F811
    operator: Operator,
    planned: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    """Prometheus scraping the operator, the agents and the model servers, once it holds the pool's plan."""
    operator_target = [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}]
    running = Prometheus(
        tmp_path_factory.mktemp("prometheus"), {"sunblend": operator_target, "agent": agents, **model_servers}
    )
    running.start()
    try:
        for expr in (
            f'sunblend_plan_cost_dollars_per_hour{{namespace="{planned}", pool="{POOL}"}}',
            "sunblend_gpu_utilization_ratio",
            'rate({__name__=~"vllm[:_]generation_tokens_total"}[1m])',
        ):
            wait_for(lambda e=expr: query(running.url, e), 30, what=f"series for {expr} in Prometheus")
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(("title", "ref", "expr"), TARGETS, ids=[f"{t}/{r}" for t, r, _ in TARGETS])
def test_every_dashboard_query_parses_and_returns_series(prometheus, planned, title, ref, expr):
    ready = concrete(expr, planned)
    result = wait_for(lambda: query(prometheus.url, ready), 30, what=f"{title} ({ref}): series for {ready}")
    assert all(len(series["value"]) == 2 for series in result)


def test_the_dashboard_variables_list_the_pool_and_the_model(prometheus, planned):
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    wanted = {"namespace": planned, "pool": POOL, "model": "llama-3-70b"}
    for name, value in wanted.items():
        definition = variables[name]["query"]["query"]
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", definition).groups()
        match = urllib.parse.urlencode({"match[]": concrete(selector, planned)})
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/label/{label}/values?{match}", timeout=10) as response:
            values = json.loads(response.read())["data"]
        assert value in values, f"${name}: {values}"


def test_the_cost_and_gpu_panels_agree_with_the_pool_status(prometheus, planned, operator):
    pool = operator.cluster.get("inferencepools.sunblend.dev", POOL, "-n", planned)
    exprs = {(title, ref): expr for title, ref, expr in TARGETS}
    cost = query(prometheus.url, concrete(exprs["Planned cost this hour", "A"], planned))
    assert float(cost[0]["value"][1]) == pytest.approx(pool["status"]["costDollarsPerHour"], abs=0.01)
    by_region = query(prometheus.url, concrete(exprs["GPUs by region", "A"], planned))
    expected: dict[str, int] = {}
    for capacity in pool["status"]["current"]:
        expected[capacity["region"]] = expected.get(capacity["region"], 0) + capacity["gpus"]
    assert {s["metric"]["region"]: int(float(s["value"][1])) for s in by_region} == expected
    utilisation = query(prometheus.url, concrete(exprs["GPU utilisation by node", "A"], planned))
    assert {s["metric"]["node"]: float(s["value"][1]) for s in utilisation} == pytest.approx(
        {"gpu-mumbai-1": 0.8, "gpu-london-1": 0.3}
    )


def _rendered(helm_binary: str, *sets: str) -> list[dict]:
    run = _helm(helm_binary, "template", "t", str(CHART), *[a for s in sets for a in ("--set", s)])
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def test_helm_renders_the_prometheus_rule_and_the_dashboard_when_enabled(helm):  # noqa: F811
    documents = _rendered(
        helm,
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.labels.release=kube-prometheus-stack",
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.namespace=monitoring",
        "metrics.grafanaDashboard.annotations.grafana_folder=sunblend",
    )
    rule = next(d for d in documents if d["kind"] == "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())  # the very groups promtool tests
    dashboard = next(
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "t-sunblend-dashboard"
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "sunblend"}
    assert json.loads(dashboard["data"]["sunblend.json"]) == json.loads(DASHBOARD.read_text())


def test_neither_is_rendered_by_default_and_the_schema_is_closed(helm):  # noqa: F811
    documents = _rendered(helm)
    assert "PrometheusRule" not in {d["kind"] for d in documents}
    assert not any("grafana_dashboard" in (d["metadata"].get("labels") or {}) for d in documents)
    bad = _helm(helm, "template", "t", str(CHART), "--set", "metrics.prometheusRule.enable=true")
    assert bad.returncode != 0 and "additional properties 'enable' not allowed" in bad.stderr
