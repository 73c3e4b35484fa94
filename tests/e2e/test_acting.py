"""The operator acts, against a real kube-apiserver, scheduler, controller-manager and kwok GPU nodes.

Each test stops the session's operator and runs its own (``sunblend run`` as a subprocess)
restricted to the test's namespace, with a fast loop and, where the hour matters, a clock
moved to a chosen time of day (``--clock-offset-seconds``). Everything is read back through
kubectl, as a user would.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, Operator, enforcing, swapped_operator, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import kwok_nodes  # noqa: E402

POOL = "chat"
QUIET = dt.time(2, 10)  # 07:40 in Mumbai, 02:10 in London: quiet in both
INDIA_EVENING = dt.time(14, 10)  # 19:40 in Mumbai: India's evening peak


def _offset(at: dt.time) -> str:
    """Seconds to add to the real clock so that it reads ``at`` (UTC) today or tomorrow."""
    now = dt.datetime.now(dt.UTC)
    target = dt.datetime.combine(now.date(), at, tzinfo=dt.UTC)
    if target < now:
        target += dt.timedelta(days=1)
    return str(int((target - now).total_seconds()))


def _pool(namespace: str, regions: list[dict], **spec: object) -> dict:
    document = {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "modelServer": {
                "gpusPerReplica": 2,
                "tokensPerSecondPerReplica": 1000,
                "template": {
                    "metadata": {"labels": {"app": "chat"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "vllm/vllm-openai",
                                "resources": {
                                    "requests": {"cpu": "1", "nvidia.com/gpu": "2"},
                                    "limits": {"nvidia.com/gpu": "2"},
                                },
                            }
                        ]
                    },
                },
            },
            "regions": regions,
            "gpuClasses": [
                {
                    "name": "h100",
                    "gpusPerNode": 8,
                    "nodeSelector": {"sunblend.dev/test": namespace},
                    "prices": {"spot": 2.0, "onDemand": 8.0},
                }
            ],
            "policy": {"headroom": 0, "maxSpotFraction": 0.5, "spotLossServedFraction": 0.5, "minReplicasPerRegion": 1},
            "actuation": {"mode": "Enforce", "disruption": {"maxNodesAtOnce": 1}},
            **spec,
        },
    }
    return document


MUMBAI = {
    "name": "ap-south-1",
    "timeZone": "Asia/Kolkata",
    "demand": {"baselineTokensPerSecond": 1000, "peakTokensPerSecond": 6000, "busyHours": {"start": 18, "end": 23}},
}
LONDON = {
    "name": "eu-west-2",
    "timeZone": "Europe/London",
    "demand": {"baselineTokensPerSecond": 1000, "peakTokensPerSecond": 1000},
}


def _nodes(cluster: Cluster, namespace: str, layout: dict[tuple[str, str], int]) -> list[str]:
    names = []
    for (region, capacity_type), count in layout.items():
        for i in range(count):
            name = f"{namespace}-{region}-{capacity_type}-{i}"
            node = kwok_nodes.node(region, capacity_type, i, name=name)
            node["metadata"]["labels"]["sunblend.dev/test"] = namespace
            cluster.apply(node, namespace)
            names.append(name)
    cluster.kubectl("wait", "--for=condition=Ready", "node", *names, "--timeout=60s")
    return names


@contextmanager
def _acting_operator(operator: Operator, namespace: str, tmp_path: Path, *args: str) -> Iterator[Operator]:
    """The session's operator stopped; one of this test's own running instead, then swapped back."""
    with swapped_operator(operator, tmp_path / "operator.log", *enforcing(namespace), *args) as own:
        yield own


def _slices(cluster: Cluster, namespace: str) -> dict[str, dict]:
    found = cluster.get("deployments", "-n", namespace, "-l", f"sunblend.dev/pool={POOL}")["items"]
    return {d["metadata"]["name"]: d for d in found}


def _replicas(cluster: Cluster, namespace: str) -> dict[str, int]:
    return {name: d["spec"]["replicas"] for name, d in _slices(cluster, namespace).items()}


def _keep_all_pods(cluster: Cluster, namespace: str) -> None:
    """A PodDisruptionBudget that allows no eviction of the pool's 4 pods."""
    cluster.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "keep-all"},
            "spec": {"minAvailable": 4, "selector": {"matchLabels": {"app": "chat"}}},
        },
        namespace,
    )


def _pool_status(cluster: Cluster, namespace: str) -> dict:
    return cluster.get("inferencepools.sunblend.dev", POOL, "-n", namespace).get("status", {})


def _condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def _running_pods(cluster: Cluster, namespace: str) -> list[dict]:
    pods = cluster.get("pods", "-n", namespace, "-l", f"sunblend.dev/pool={POOL}")["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def _if(value, keep):
    """``value`` when ``keep(value)``, else None: for polling until something holds."""
    return value if keep(value) else None


def _events(cluster: Cluster, namespace: str) -> list[dict]:
    return cluster.get("events", "-n", namespace)["items"]


def test_slices_follow_the_plan_through_the_day_and_spot_loss_falls_back_to_on_demand(operator, namespace, tmp_path):
    cluster = operator.cluster
    nodes = _nodes(
        cluster,
        namespace,
        {("ap-south-1", "spot"): 1, ("ap-south-1", "on-demand"): 2, ("eu-west-2", "on-demand"): 1},
    )
    slice_od = f"{POOL}-ap-south-1-h100-on-demand"
    slice_spot = f"{POOL}-ap-south-1-h100-spot"
    try:
        # Quiet hours: one on-demand node's worth (4 replicas) in each region, nothing on spot.
        with _acting_operator(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(QUIET)):
            cluster.apply(_pool(namespace, [MUMBAI, LONDON]), namespace)
            wait_for(
                lambda: _replicas(cluster, namespace) == {slice_od: 4, f"{POOL}-eu-west-2-h100-on-demand": 4},
                60,
                what="one on-demand slice per region, 4 replicas each",
            )
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 8, 90, what="8 pods running on kwok nodes")
        slice_deployment = _slices(cluster, namespace)[slice_od]
        terms = slice_deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        requirements = [
            {(r["key"], r["operator"], tuple(r.get("values", ()))) for r in t["matchExpressions"]} for t in terms
        ]
        assert all(("topology.kubernetes.io/region", "In", ("ap-south-1",)) in r for r in requirements)
        assert all(("sunblend.dev/test", "In", (namespace,)) in r for r in requirements)
        assert any(("karpenter.sh/capacity-type", "In", ("on-demand",)) in r for r in requirements)
        assert slice_deployment["metadata"]["ownerReferences"][0]["kind"] == "InferencePool"
        labels = {
            n["metadata"]["name"]: n["metadata"]["labels"]
            for n in cluster.get("nodes", "-l", f"sunblend.dev/test={namespace}")["items"]
        }
        for pod in _running_pods(cluster, namespace):
            node_labels = labels[pod["spec"]["nodeName"]]
            region = "ap-south-1" if "ap-south-1" in pod["metadata"]["labels"]["sunblend.dev/slice"] else "eu-west-2"
            assert node_labels["topology.kubernetes.io/region"] == region
            assert node_labels["karpenter.sh/capacity-type"] == "on-demand"
        status = _pool_status(cluster, namespace)
        assert status["actuation"]["mode"] == "Enforce"
        assert _condition(status, "Acting")["reason"] == "Enforcing"

        # India's evening peak: the operator restarts with its clock there and plans the new hour;
        # Mumbai needs two nodes, half of them spot.
        with _acting_operator(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(INDIA_EVENING)) as own:
            wait_for(
                lambda: (r := _replicas(cluster, namespace)).get(slice_spot) == 4 and r.get(slice_od) == 4,
                60,
                what="Mumbai's spot slice at 4 replicas beside 4 on-demand",
            )
            spot_node = f"{namespace}-ap-south-1-spot-0"
            wait_for(
                lambda: sum(p["spec"]["nodeName"] == spot_node for p in _running_pods(cluster, namespace)) == 4,
                90,
                what="4 pods running on the spot node",
            )
            # Spot is lost: Node Termination Handler's taint. Within one loop the on-demand slice grows.
            cluster.kubectl(
                "taint", "node", spot_node, "aws-node-termination-handler/spot-itn=true:NoSchedule", "--overwrite"
            )
            wait_for(
                lambda: _replicas(cluster, namespace).get(slice_od) == 8, 20, what="the on-demand slice grown to 8"
            )
            wait_for(
                lambda: {"SpotInterrupted", "FellBackToOnDemand"} <= {e["reason"] for e in _events(cluster, namespace)},
                20,
                what="SpotInterrupted and FellBackToOnDemand events (posted after the step's writes)",
            )
            described = cluster.kubectl("describe", "inferencepools.sunblend.dev", POOL, "-n", namespace).stdout
            assert "SpotInterrupted" in described
            (tmp_path / "describe-after-spot-interruption.txt").write_text(described)
            scraped = wait_for(
                lambda: _if(own.metrics(), lambda m: 'sunblend_events_total{reason="SpotInterrupted"} 1.0' in m),
                20,
                what="the SpotInterrupted event counted in the operator's metrics",
            )
            assert 'sunblend_decided_commands_total{kind="ScaleSlice"}' in scraped
            risk = _pool_status(cluster, namespace)["policyState"]["spotRisk"]["ap-south-1/h100/spot"]
            assert risk["cap"] == 0 and risk["lost"] >= 1  # planned at no spot there for the retry window

        # Deleting the pool deletes its slices (owner references; the garbage collector does it).
        cluster.kubectl("delete", "inferencepools.sunblend.dev", POOL, "-n", namespace)
        wait_for(lambda: not _slices(cluster, namespace), 60, what="the slices deleted with the pool")
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_a_pdb_holds_a_drain_back_and_nothing_is_force_deleted(operator, namespace, tmp_path):
    cluster = operator.cluster
    nodes = _nodes(cluster, namespace, {("eu-west-2", "on-demand"): 2})
    try:
        with _acting_operator(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(QUIET)):
            # Four replicas on two nodes: the scheduler spreads them, the plan wants one node.
            _keep_all_pods(cluster, namespace)
            cluster.apply(_pool(namespace, [LONDON]), namespace)
            pods = wait_for(
                lambda: _if(_running_pods(cluster, namespace), lambda p: len(p) == 4), 90, what="4 pods running"
            )
            spread = {p["spec"]["nodeName"] for p in pods}
            assert len(spread) == 2, "the scheduler was expected to spread the pods over both nodes"
            status = wait_for(
                lambda: _if(
                    _pool_status(cluster, namespace),
                    lambda s: _condition(s, "DrainBlocked").get("reason") == "DrainBlocked",
                ),
                60,
                what="DrainBlocked=True because of the PodDisruptionBudget",
            )
            assert "PodDisruptionBudget" in _condition(status, "DrainBlocked")["message"]
            cordoned = [n for n in nodes if cluster.get("node", n)["spec"].get("unschedulable")]
            assert len(cordoned) == 1
            still = {p["metadata"]["name"] for p in _running_pods(cluster, namespace)}
            assert still == {p["metadata"]["name"] for p in pods}  # nothing evicted, nothing force-deleted
            # The budget is lifted: the drain completes and the pods move to the other node.
            cluster.kubectl("delete", "pdb", "keep-all", "-n", namespace)
            wait_for(
                lambda: (
                    {p["spec"]["nodeName"] for p in _running_pods(cluster, namespace)} == set(nodes) - set(cordoned)
                    and len(_running_pods(cluster, namespace)) == 4
                ),
                90,
                what="all 4 pods on the node that was kept",
            )
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_an_hpa_keeps_its_workload_and_advisory_mode_writes_nothing_but_status(operator, namespace, tmp_path):
    cluster = operator.cluster
    nodes = _nodes(cluster, namespace, {("eu-west-2", "on-demand"): 1})
    server = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "server"}},
            "template": {
                "metadata": {"labels": {"app": "server"}},
                "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]},
            },
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "server"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "server"},
            "minReplicas": 3,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    try:
        cluster.apply(server, namespace)
        cluster.apply(hpa, namespace)
        before = cluster.get("deployment", "server", "-n", namespace)["metadata"]["generation"]
        with _acting_operator(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(QUIET)):
            owned = _pool(namespace, [LONDON])
            owned["spec"]["modelServer"].pop("template")
            owned["spec"]["modelServer"]["workloadRef"] = {"name": "server"}
            cluster.apply(owned, namespace)
            acting = wait_for(
                lambda: _if(
                    _condition(_pool_status(cluster, namespace), "Acting"),
                    lambda c: c.get("reason") == "OwnedByAutoscaler",
                ),
                30,
                what="Acting=False (OwnedByAutoscaler)",
            )
            assert (
                "HorizontalPodAutoscaler/server scales Deployment/server; sunblend recommends 4 replicas"
                in acting["message"]
            )
            time.sleep(6)  # three more loops of the operator (2 s each)
            deployment = cluster.get("deployment", "server", "-n", namespace)
            assert (deployment["metadata"]["generation"], deployment["spec"]["replicas"]) == (before, 3)
            assert not any(m.get("manager") == "sunblend" for m in deployment["metadata"].get("managedFields", []))

            # Advisory mode: the commands are in the status, and nothing else is written.
            advisory = _pool(namespace, [LONDON], actuation={"mode": "Advisory"})
            advisory["metadata"]["name"] = "advice"
            cluster.apply(advisory, namespace)
            status = wait_for(
                lambda: _if(
                    cluster.get("inferencepools.sunblend.dev", "advice", "-n", namespace).get("status", {}),
                    lambda s: s.get("actuation", {}).get("commands"),
                ),
                30,
                what="the advisory pool's proposed commands",
            )
            assert status["actuation"]["mode"] == "Advisory"
            assert {"kind": "ScaleSlice", "target": "eu-west-2/h100/on-demand", "value": 4} in [
                {k: c[k] for k in ("kind", "target", "value")} for c in status["actuation"]["commands"]
            ]
            assert _condition(status, "Acting")["reason"] == "Advisory"
            assert not cluster.get("deployments", "-n", namespace, "-l", "sunblend.dev/pool=advice")["items"]
            assert not cluster.get("pdb", "-n", namespace)["items"]
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_per_region_workload_refs_are_scaled_through_the_scale_subresource(operator, namespace, tmp_path):
    cluster = operator.cluster

    def deployment(name: str) -> dict:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]},
                },
            },
        }

    for name in ("server-mumbai", "server-london"):
        cluster.apply(deployment(name), namespace)
    pool = _pool(namespace, [MUMBAI, LONDON])
    pool["spec"]["modelServer"].pop("template")
    pool["spec"]["modelServer"]["workloadRefs"] = [
        {"region": "ap-south-1", "name": "server-mumbai"},
        {"region": "eu-west-2", "name": "server-london"},
    ]
    bad = {
        **pool,
        "spec": {**pool["spec"], "modelServer": {**pool["spec"]["modelServer"], "workloadRef": {"name": "x"}}},
    }
    refused = cluster.apply(bad, namespace, check=False)
    assert refused.returncode != 0 and "only one of them" in refused.stderr  # the API server's CEL rule
    with _acting_operator(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(INDIA_EVENING)):
        cluster.apply(pool, namespace)

        def replicas() -> dict[str, int]:
            found = cluster.get("deployments", "-n", namespace)["items"]
            return {d["metadata"]["name"]: d["spec"]["replicas"] for d in found}

        # India's evening: 6,000 tokens/s is 6 replicas' worth, the plan rounds up to whole nodes (8);
        # London is quiet: one node, 4 replicas.
        wait_for(lambda: replicas() == {"server-mumbai": 8, "server-london": 4}, 60, what="each region's replicas")
        status = _pool_status(cluster, namespace)
        assert [(w["region"], w["plannedReplicas"]) for w in status["workloads"]] == [
            ("ap-south-1", 8),
            ("eu-west-2", 4),
        ]


def _kwok_nodes(cluster: Cluster, namespace: str) -> list[dict]:
    return cluster.get("nodes", "-l", f"sunblend.dev/provider=kwok,sunblend.dev/pool-namespace={namespace}")["items"]


def _by_offer(found: list[dict]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for node in found:
        labels = node["metadata"]["labels"]
        key = (labels["topology.kubernetes.io/region"], labels["karpenter.sh/capacity-type"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_the_kwok_provider_makes_the_planned_nodes_boots_them_and_replaces_lost_spot(operator, namespace, tmp_path):
    cluster = operator.cluster
    args = ("--node-provider", "kwok", "--kwok-delay-seconds", "6", "--replan-seconds", "1")
    try:
        with _acting_operator(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(INDIA_EVENING), *args):
            cluster.apply(_pool(namespace, [MUMBAI, LONDON]), namespace)
            # India's evening: Mumbai wants one spot and one on-demand node, London one on-demand node.
            wanted = {("ap-south-1", "spot"): 1, ("ap-south-1", "on-demand"): 1, ("eu-west-2", "on-demand"): 1}
            wait_for(lambda: _by_offer(_kwok_nodes(cluster, namespace)) == wanted, 30, what="the planned kwok nodes")
            booting = [
                n
                for n in _kwok_nodes(cluster, namespace)
                if any(t["key"] == "sunblend.dev/provisioning" for t in n["spec"].get("taints", []))
            ]
            assert booting, "new nodes boot behind the provisioning taint first"
            node = booting[0]
            assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
            assert node["metadata"]["labels"]["sunblend.dev/test"] == namespace  # the GPU class's nodeSelector
            wait_for(
                lambda: (
                    not any(
                        t["key"] == "sunblend.dev/provisioning"
                        for n in _kwok_nodes(cluster, namespace)
                        for t in n["spec"].get("taints", [])
                    )
                ),
                30,
                what="every kwok node booted",
            )
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 12, 90, what="12 pods running on kwok nodes")
            spot = next(
                n["metadata"]["name"]
                for n in _kwok_nodes(cluster, namespace)
                if n["metadata"]["labels"]["karpenter.sh/capacity-type"] == "spot"
            )
            cluster.kubectl("taint", "node", spot, "aws-node-termination-handler/spot-itn=true:NoSchedule")
            wait_for(
                lambda: _by_offer(_kwok_nodes(cluster, namespace)).get(("ap-south-1", "on-demand")) == 2,
                30,
                what="a second on-demand node in Mumbai replacing the lost spot",
            )
            wait_for(
                lambda: "SpotInterrupted" in {e["reason"] for e in _events(cluster, namespace)},
                20,
                what="a SpotInterrupted event",
            )
    finally:
        cluster.kubectl(
            "delete", "nodes", "-l", f"sunblend.dev/pool-namespace={namespace}", "--wait=false", check=False
        )
