"""The operator and the chart against a real kube-apiserver (the local control plane)."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import CHART_NAMESPACE, RELEASE, SERVICE_ACCOUNT, Operator, swapped_operator, wait_for
from tests.e2e.test_acting import QUIET, _offset

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import kwok_nodes  # noqa: E402  (the same fake GPU nodes `make demo` creates)

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _example(name: str = "follow-the-sun-india-uk") -> dict:
    return yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())


def _condition(pool: dict, kind: str) -> dict:
    return next((c for c in pool.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def test_helm_install_creates_the_charts_objects(chart):
    assert chart.get("crd", "inferencepools.sunblend.dev")["spec"]["names"]["shortNames"] == ["sbpool"]
    for kind, name in [("serviceaccount", RELEASE), ("deployment", RELEASE), ("service", f"{RELEASE}-metrics")]:
        assert chart.get(kind, name, "-n", CHART_NAMESPACE)["metadata"]["name"] == name
    assert chart.get("clusterrole", RELEASE)["rules"]
    deployment = chart.get("deployment", RELEASE, "-n", CHART_NAMESPACE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_becomes_ready_with_a_plan_within_10_seconds(operator, namespace, example):
    cluster = operator.cluster
    document = yaml.safe_load(example.read_text())
    started = time.monotonic()
    cluster.apply(document, namespace)
    name = document["metadata"]["name"]
    cluster.kubectl(
        "wait", "-n", namespace, f"inferencepools.sunblend.dev/{name}", "--for=condition=Ready", "--timeout=10s"
    )
    elapsed = time.monotonic() - started
    pool = cluster.get("inferencepools.sunblend.dev", name, "-n", namespace)
    status = pool["status"]
    assert elapsed < 10
    assert status["solveStatus"] == "Optimal"
    # This hour's savings depend on the hour (at night a pool may run all on-demand); the horizon's do not.
    assert status["costDollarsPerHour"] > 0 and 0 <= status["savingsPercent"] < 100
    assert status["horizonHours"] == 24 and 0 < status["horizonSavingsPercent"] < 100
    assert status["current"] and len(status["nextHours"]) == 24
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "Planned",
        "CapacityAvailable",
        "MetricsAvailable",
        "Acting",
        "DrainBlocked",
    }
    assert all(c["observedGeneration"] == pool["metadata"]["generation"] for c in status["conditions"])
    # kopf's bookkeeping lives in status.kopf, not in the user's annotations; no finalizer is added.
    assert not any("kopf" in key for key in pool["metadata"].get("annotations", {}))
    assert not pool["metadata"].get("finalizers")
    printed = cluster.kubectl("get", "inferencepools.sunblend.dev", name, "-n", namespace).stdout
    assert "True" in printed and str(status["costDollarsPerHour"]) in printed


def test_editing_the_spec_updates_the_status_with_the_new_generation(operator, namespace):
    cluster = operator.cluster
    document = _example()
    cluster.apply(document, namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "inferencepools.sunblend.dev/chat-india-uk", "--for=condition=Ready", "--timeout=10s"
    )
    before = cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace)
    edited = copy.deepcopy(document)
    edited["spec"]["regions"][0]["demand"]["peakTokensPerSecond"] = 60000
    cluster.apply(edited, namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "inferencepools.sunblend.dev/chat-india-uk", "--for=condition=Ready", "--timeout=10s"
    )
    after = wait_for(
        lambda: (
            (p := cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace))["status"].get(
                "observedGeneration"
            )
            == 2
            and p
        ),
        10,
        what="observedGeneration 2",
    )
    assert after["metadata"]["generation"] == 2
    assert _condition(after, "Ready")["observedGeneration"] == 2
    assert sum(h["demandTokensPerSecond"] for h in after["status"]["nextHours"]) > sum(
        h["demandTokensPerSecond"] for h in before["status"]["nextHours"]
    )


INVALID = {
    "wrong type": (
        lambda d: d["spec"]["modelServer"].update(gpusPerReplica="two"),
        'spec.modelServer.gpusPerReplica: Invalid value: "string": '
        'spec.modelServer.gpusPerReplica in body must be of type integer: "string"',
    ),
    "undeclared commitment region": (
        lambda d: d["spec"].update(commitments=[{"gpuClass": "h100", "region": "mars-1", "gpus": 8}]),
        "spec.commitments: Invalid value: every commitment must name a declared region",
    ),
    "peak below baseline": (
        lambda d: d["spec"]["regions"][0]["demand"].update(peakTokensPerSecond=1),
        "peakTokensPerSecond must be at least baselineTokensPerSecond",
    ),
    "fraction above one": (
        lambda d: d["spec"]["policy"].update(maxSpotFraction=1.5),
        "spec.policy.maxSpotFraction: Invalid value: 1.5: "
        "spec.policy.maxSpotFraction in body should be less than or equal to 1",
    ),
    "latency to an undeclared region": (
        lambda d: d["spec"]["policy"]["routing"]["latencies"].append(
            {"from": "ap-south-1", "to": "us-east-9", "milliseconds": 5}
        ),
        "every latency entry must name declared regions",
    ),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_the_api_server_rejects_invalid_pools_with_clear_messages(chart, namespace, case):
    change, message = INVALID[case]
    document = _example()
    change(document)
    run = chart.apply(document, namespace, check=False)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr


def test_an_infeasible_pool_is_not_ready_and_says_why(operator, namespace):
    cluster = operator.cluster
    document = _example()
    document["spec"]["policy"]["budgetDollarsPerHour"] = 50
    cluster.apply(document, namespace)
    pool = wait_for(
        lambda: (
            (p := cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace))
            and _condition(p, "Ready")
            and p
        ),
        10,
        what="a Ready condition",
    )
    ready = _condition(pool, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Infeasible")
    assert ready["message"].startswith("budget 50 $/h is below the cheapest feasible plan")
    events = cluster.get("events", "-n", namespace, "--field-selector", "reason=Infeasible")["items"]
    assert events and events[0]["message"] == ready["message"]


def test_deleting_a_pool_leaves_nothing_behind(operator, namespace):
    cluster = operator.cluster
    cluster.apply(_example(), namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "inferencepools.sunblend.dev/chat-india-uk", "--for=condition=Ready", "--timeout=10s"
    )
    assert 'pool="chat-india-uk"' in operator.metrics()
    cluster.kubectl("delete", "-n", namespace, "inferencepools.sunblend.dev/chat-india-uk", "--timeout=10s")
    assert cluster.get("inferencepools.sunblend.dev", "-n", namespace)["items"] == []
    wait_for(
        lambda: f'namespace="{namespace}",pool="chat-india-uk"' not in operator.metrics(), 10, what="metrics dropped"
    )


def test_restarting_the_operator_repeats_no_work(operator, namespace):
    cluster = operator.cluster
    cluster.apply(_example(), namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "inferencepools.sunblend.dev/chat-india-uk", "--for=condition=Ready", "--timeout=10s"
    )
    before = cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace)
    events_before = cluster.get("events", "-n", namespace)["items"]
    operator.stop()
    operator.start()
    time.sleep(3)  # resume handlers run at start-up
    after = cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace)
    events_after = cluster.get("events", "-n", namespace)["items"]
    assert after["status"]["conditions"] == before["status"]["conditions"]
    assert after["status"]["current"] == before["status"]["current"]
    assert [(e["reason"], e.get("count", 1)) for e in events_after] == [
        (e["reason"], e.get("count", 1)) for e in events_before
    ]


def test_the_operator_exposes_metrics_and_liveness(operator, namespace):
    cluster = operator.cluster
    cluster.apply(_example(), namespace)
    cluster.kubectl(
        "wait", "-n", namespace, "inferencepools.sunblend.dev/chat-india-uk", "--for=condition=Ready", "--timeout=10s"
    )
    text = operator.metrics()
    assert (
        f'sunblend_plan_cost_dollars_per_hour{{capacity_type="spot",namespace="{namespace}",pool="chat-india-uk"}}'
        in text
    )
    assert "sunblend_reconcile_duration_seconds_count" in text
    assert 'sunblend_solve_status_total{status="Optimal"}' in text
    assert (
        f'sunblend_plan_gpus{{capacity_type="on-demand",gpu_class="h100",namespace="{namespace}",pool="chat-india-uk",region="eu-west-2"}}'
        in text
    )


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("list", "inferencepools.sunblend.dev", True),
        ("watch", "inferencepools.sunblend.dev", True),
        ("patch", "inferencepools.sunblend.dev", True),
        ("patch", "inferencepools.sunblend.dev/status", True),
        ("create", "events", True),
        ("list", "nodes", True),
        ("get", "deployments.apps", True),
        ("patch", "deployments.apps", True),  # slices (server-side apply)
        ("delete", "deployments.apps", False),  # slices go with their pool, by owner reference
        ("delete", "inferencepools.sunblend.dev", False),
        ("create", "inferencepools.sunblend.dev", False),
        ("get", "secrets", False),
        ("list", "secrets", False),
        ("patch", "nodes", True),  # cordon
        ("delete", "nodes", False),
        ("delete", "pods", False),  # evictions only
        ("create", "pods/eviction", True),
    ],
)
def test_the_service_account_can_do_what_the_operator_needs_and_nothing_more(chart, verb, resource, allowed):
    subresource = []
    if "/" in resource:
        resource, sub = resource.split("/")
        subresource = ["--subresource", sub]
    run = chart.kubectl("auth", "can-i", verb, resource, *subresource, "--as", SERVICE_ACCOUNT, "-A", check=False)
    assert run.stdout.strip() == ("yes" if allowed else "no"), run.stdout + run.stderr


def test_the_status_shows_the_model_servers_replicas(operator, namespace, tmp_path):
    cluster = operator.cluster
    # At a quiet hour of the operator's clock: in the last 8 minutes of an hour the next hour's
    # plan boots ahead, and the planned replicas then exceed this hour's.
    with swapped_operator(operator, tmp_path / "operator.log", "--clock-offset-seconds", _offset(QUIET)):
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "vllm-llama-70b"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "vllm"}},
                "template": {
                    "metadata": {"labels": {"app": "vllm"}},
                    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]},
                },
            },
        }
        cluster.apply(deployment, namespace)
        cluster.apply(_example(), namespace)
        pool = wait_for(
            lambda: (
                (p := cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace))
                .get("status", {})
                .get("workload")
                and p
            ),
            10,
            what="status.workload",
        )
        workload = pool["status"]["workload"]
        assert (workload["kind"], workload["name"], workload["found"], workload["replicas"]) == (
            "Deployment",
            "vllm-llama-70b",
            True,
            3,
        )
        assert workload["plannedReplicas"] == sum(c["replicas"] for c in pool["status"]["current"])


def test_new_gpu_nodes_are_seen_without_any_change_to_the_pool(operator, namespace, tmp_path):
    """The re-plan loop notices the pool's GPU nodes changing and re-plans: CapacityAvailable flips."""
    cluster = operator.cluster
    operator.stop()
    quick = Operator(cluster, tmp_path / "operator.log")
    quick.extra_args = ["--replan-seconds", "1", "--clock-offset-seconds", _offset(QUIET)]  # not near :52
    document = _example()
    selector = {"sunblend.dev/test": namespace}
    document["spec"]["gpuClasses"][0]["nodeSelector"] = selector
    names = [f"{namespace}-{i}" for i in range(4)]
    try:
        quick.start()
        cluster.apply(document, namespace)
        cluster.kubectl(
            "wait",
            "-n",
            namespace,
            "inferencepools.sunblend.dev/chat-india-uk",
            "--for=condition=Ready",
            "--timeout=10s",
        )
        pool = cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace)
        assert _condition(pool, "CapacityAvailable")["reason"] == "CapacityShort"
        needed = {(c["region"], c["capacityType"]): c["nodes"] for c in pool["status"]["current"]}
        index = 0
        for (region, capacity_type), count in needed.items():
            for _ in range(count):
                node = kwok_nodes.node(region, capacity_type, index, name=f"{namespace}-{index}")
                node["metadata"]["labels"].update(selector)
                cluster.apply(node, namespace)
                names.append(node["metadata"]["name"])
                index += 1
        wait_for(
            lambda: (
                _condition(
                    cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace), "CapacityAvailable"
                ).get("status")
                == "True"
            ),
            20,
            what="CapacityAvailable=True after the nodes appeared",
        )
    finally:
        quick.stop()
        operator.start()
        for name in names:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)
