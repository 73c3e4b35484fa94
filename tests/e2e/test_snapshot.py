"""observe/snapshot.py against a real kube-apiserver (the local control plane), kwok GPU nodes and real controllers.

kwok plays the kubelet of two fake 8-GPU nodes (one spot, tainted by the AWS Node Termination
Handler; one on-demand); the scheduler binds the pool's pods to them and the disruption
controller counts the PDB. The reader must see it all in one read. A reader pointed at a closed
port must say the cluster is unreadable instead of raising.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from sunblend.api import crd, load
from sunblend.api.spec import CapacityType
from sunblend.core import snapshot
from sunblend.observe import snapshot as reader
from sunblend.observe import watched
from tests.e2e.conftest import Cluster, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import kwok_nodes  # noqa: E402  (the same fake GPU nodes `make demo` creates)

ITN = {"key": "aws-node-termination-handler/spot-itn", "value": "9f1c2e", "effect": "NoSchedule"}


def pool_document(selector: dict[str, str]) -> dict:
    return {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "chat"},
        "spec": {
            "modelServer": {"tokensPerSecondPerReplica": 2000, "workloadRef": {"name": "user-vllm"}},
            "regions": [
                {
                    "name": "ap-south-1",
                    "timeZone": "Asia/Kolkata",
                    "demand": {"baselineTokensPerSecond": 4000, "peakTokensPerSecond": 20000},
                }
            ],
            "gpuClasses": [{"name": "h100", "nodeSelector": selector, "prices": {"spot": 2.25, "onDemand": 8.94}}],
            "actuation": {"mode": "Advisory"},
        },
    }


def deployment(name: str, replicas: int, labels: dict[str, str], selector: dict[str, str], **extra: dict) -> dict:
    """A GPU Deployment whose pods go only to this test's nodes, tolerating their taints."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, **extra.get("metadata", {})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **labels}, **extra.get("template", {})},
                "spec": {
                    "nodeSelector": {**selector, "topology.kubernetes.io/region": "ap-south-1"},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.11.0",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture
def nodes(cluster: Cluster, namespace: str):
    """A spot node carrying the NTH interruption taint and an on-demand node, labelled for this test only."""
    selector = {"sunblend.dev/test": namespace}
    spot = kwok_nodes.node("ap-south-1", "spot", 0, name=f"{namespace}-spot")
    spot["spec"]["taints"].append(ITN)
    on_demand = kwok_nodes.node("ap-south-1", "on-demand", 1, name=f"{namespace}-od")
    elsewhere = kwok_nodes.node("us-east-1", "on-demand", 2, name=f"{namespace}-us")  # an undeclared region
    made = [spot, on_demand, elsewhere]
    try:
        for node in made:
            node["metadata"]["labels"].update(selector)
            cluster.apply(node, namespace)
        yield selector
    finally:
        for node in made:
            cluster.kubectl("delete", "node", node["metadata"]["name"], "--wait=false", check=False)


def test_one_read_sees_the_pools_nodes_pods_workloads_autoscaler_and_budget(cluster, namespace, nodes):
    cluster.kubectl("apply", "-f", "-", input=crd.render())
    cluster.kubectl("wait", "--for=condition=Established", "crd/inferencepools.sunblend.dev", "--timeout=30s")
    cluster.apply(pool_document(nodes), namespace)
    created = cluster.get("inferencepools.sunblend.dev", "chat", "-n", namespace)
    owner = {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "name": "chat",
        "uid": created["metadata"]["uid"],
    }
    pool_labels = {"sunblend.dev/pool": "chat", "sunblend.dev/slice": "chat-ap-south-1"}
    cluster.apply(
        deployment(
            "chat-ap-south-1",
            2,
            pool_labels,
            nodes,
            metadata={"ownerReferences": [owner]},
            template={"annotations": {"karpenter.sh/do-not-disrupt": "true"}},
        ),
        namespace,
    )
    cluster.apply(deployment("user-vllm", 1, {}, nodes), namespace)
    cluster.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "user-vllm"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "user-vllm"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                    }
                ],
            },
        },
        namespace,
    )
    cluster.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "chat-ap-south-1"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "chat-ap-south-1"}}},
        },
        namespace,
    )
    pool = load.parse_pool(cluster.get("inferencepools.sunblend.dev", "chat", "-n", namespace))
    snapshot_reader = reader.SnapshotReader(config.new_client_from_config(config_file=str(cluster.kubeconfig)))

    def settled() -> snapshot.Snapshot | None:
        read = snapshot_reader.read(pool)
        assert read.readable, read.reason
        done = (
            len(read.pods) == 3
            and all(p.ready and p.node for p in read.pods)
            and read.budgets
            and read.budgets[0].disruptions_allowed == 1
        )
        return read if done else None

    read = wait_for(settled, 90, interval=1, what="three Ready pods bound to nodes and a counted PDB")

    spot, on_demand = f"{namespace}-spot", f"{namespace}-od"
    assert [(n.name, n.region, n.gpu_class, n.capacity_type, n.interruption, n.gpus) for n in read.nodes] == [
        (on_demand, "ap-south-1", "h100", CapacityType.ON_DEMAND, None, 8),
        (spot, "ap-south-1", "h100", CapacityType.SPOT, ITN["key"], 8),
    ]
    assert all(n.ready and not n.unschedulable for n in read.nodes)

    slice_pods = [p for p in read.pods if p.slice_name == "chat-ap-south-1"]
    user_pods = [p for p in read.pods if p.slice_name is None]
    assert len(slice_pods) == 2 and len(user_pods) == 1
    assert {p.node for p in read.pods} <= {spot, on_demand}
    assert all(p.gpus == 1 and not p.deleting for p in read.pods)
    assert all(p.do_not_disrupt for p in slice_pods) and not user_pods[0].do_not_disrupt
    assert sum(len(read.pods_on(n)) for n in (spot, on_demand)) == 3

    owned = read.workload("Deployment", "chat-ap-south-1")
    user = read.workload("Deployment", "user-vllm")
    assert owned is not None and (owned.replicas, owned.ready_replicas, owned.owned_by_pool) == (2, 2, True)
    assert owned.labels == pool_labels and owned.resource_version
    assert user is not None and (user.replicas, user.owned_by_pool) == (1, False)
    assert [w.name for w in read.workloads] == ["chat-ap-south-1", "user-vllm"]

    # No KEDA here: its CRD's absence (a 404) means no ScaledObjects, not an unreadable cluster.
    assert read.autoscalers == (
        snapshot.AutoscalerView("HorizontalPodAutoscaler", "user-vllm", "Deployment", "user-vllm"),
    )
    assert read.autoscaler_of("Deployment", "chat-ap-south-1") is None
    assert read.budgets == (snapshot.BudgetView("chat-ap-south-1", {"app": "chat-ap-south-1"}, 1),)

    # The same read from watch-fed records (observe/watched.py), which then follow a cordon.
    records = watched.Watched(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    records.start()
    try:
        wait_for(lambda: records.synced, 30, what="the pods, Deployments and nodes listed and watched")
        recorded = reader.SnapshotReader(
            config.new_client_from_config(config_file=str(cluster.kubeconfig)), records=records
        )
        assert recorded.read(pool) == snapshot_reader.read(pool)
        cluster.kubectl("cordon", spot)
        wait_for(
            lambda: next(n for n in recorded.read(pool).nodes if n.name == spot).unschedulable,
            30,
            what="the records to see the cordon",
        )
        cluster.kubectl("scale", "deployment/chat-ap-south-1", "-n", namespace, "--replicas=1")
        wait_for(
            lambda: (
                (w := recorded.read(pool).workload("Deployment", "chat-ap-south-1")) is not None and w.replicas == 1
            ),
            30,
            what="the records to see the scale",
        )
        assert recorded.read(pool).nodes == snapshot_reader.read(pool).nodes
    finally:
        records.stop()


def test_a_reader_pointed_at_a_closed_port_says_the_cluster_is_unreadable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    closed = reader.SnapshotReader(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}")))
    pool = load.parse_pool(pool_document({"sunblend.dev/test": "closed"}) | {"metadata": {"namespace": "x"}})
    started = time.monotonic()
    read = closed.read(pool)
    assert time.monotonic() - started < 10
    assert read == snapshot.Snapshot(readable=False, reason=read.reason)
    assert read.reason.startswith("listing Deployments (sunblend.dev/pool=pool) in namespace x failed: ")
    assert "could not be reached" in read.reason and "Connection refused" in read.reason
