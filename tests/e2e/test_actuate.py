"""The writers against a real kube-apiserver, scheduler, controller-manager and kwok GPU nodes.

Slices built by ``actuate.manifests`` are applied by ``actuate.workloads``; the real scheduler
places their pods, the real disruption controller keeps their PDBs' status, and evictions by
``actuate.drain`` go through the real Eviction API.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from sunblend.actuate import drain, manifests, workloads
from sunblend.api import constants, crd, load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import nodes, snapshot
from tests.e2e.conftest import Cluster, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import kwok_nodes  # noqa: E402  (the same fake GPU nodes `make demo` creates)

REGION = "ap-south-1"
SPOT = (REGION, "h100", CapacityType.SPOT)
ON_DEMAND = (REGION, "h100", CapacityType.ON_DEMAND)
AKS_SPOT_TAINT = {"key": "kubernetes.azure.com/scalesetpriority", "value": "spot", "effect": "NoSchedule"}


@dataclass
class Stage:
    """A namespace holding a real InferencePool, two kwok GPU nodes only its class selects, and clients."""

    namespace: str
    pool: spec.InferencePool
    uid: str
    spot_node: str
    on_demand_node: str
    core: client.CoreV1Api
    apps: client.AppsV1Api
    policy: client.PolicyV1Api
    writer: workloads.WorkloadWriter
    drainer: drain.Drainer

    def slice(self, offer, replicas: int) -> dict:
        return manifests.slice_deployment(self.pool, self.uid, offer, replicas, nodes.DEFAULT_RULES)

    def pods(self, offer) -> list:
        selector = ",".join(f"{k}={v}" for k, v in manifests.selector(self.pool.metadata.name, offer).items())
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=10).items

    def running(self, offer, count: int) -> list:
        """Wait for ``count`` running pods of ``offer``'s slice, and return them."""

        def ready():
            pods = [p for p in self.pods(offer) if p.metadata.deletion_timestamp is None]
            running = [p for p in pods if p.status.phase == "Running" and p.spec.node_name]
            return running if len(running) == count == len(pods) else None

        return wait_for(ready, 60, 0.5, what=f"{count} running pods of {manifests.slice_name('chat', offer)}")


def _pool_document(namespace: str) -> dict:
    template = {
        "metadata": {"labels": {"app": "chat"}},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "registry.invalid/vllm:none",
                    "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    }
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "modelServer": {"gpusPerReplica": 1, "tokensPerSecondPerReplica": 100, "template": template},
            "regions": [
                {
                    "name": REGION,
                    "timeZone": "Asia/Kolkata",
                    "demand": {"baselineTokensPerSecond": 100, "peakTokensPerSecond": 100},
                }
            ],
            "gpuClasses": [
                {
                    "name": "h100",
                    "nodeSelector": {"sunblend.dev/test": namespace},
                    "prices": {"onDemand": 3.0, "spot": 1.0},
                }
            ],
            "actuation": {"mode": "Advisory"},  # the operator, if running, must not act on this pool
        },
    }


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> client.ApiClient:
    """A Python client for the cluster, with the CRD of the current models installed."""
    cluster.apply(crd.render(), "default")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{constants.CRD_NAME}", "--timeout=30s")
    return config.new_client_from_config(config_file=str(cluster.kubeconfig), persist_config=False)


@pytest.fixture
def stage(cluster: Cluster, api: client.ApiClient, namespace: str) -> Iterator[Stage]:
    document = _pool_document(namespace)
    cluster.apply(document, namespace)
    uid = cluster.get("inferencepools.sunblend.dev", "chat", "-n", namespace)["metadata"]["uid"]
    made = []
    for capacity_type in ("spot", "on-demand"):
        node = kwok_nodes.node(REGION, capacity_type, 0, name=f"{namespace}-{capacity_type}")
        node["metadata"]["labels"]["sunblend.dev/test"] = namespace
        if capacity_type == "spot":
            node["spec"]["taints"].append(AKS_SPOT_TAINT)
        cluster.apply(node, namespace)
        made.append(node["metadata"]["name"])
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    policy = client.PolicyV1Api(api)
    for name in made:
        wait_for(lambda n=name: _ready(core, n), 30, what=f"node {name} Ready")
    try:
        yield Stage(
            namespace=namespace,
            pool=load.parse_pool(document),
            uid=uid,
            spot_node=made[0],
            on_demand_node=made[1],
            core=core,
            apps=apps,
            policy=policy,
            writer=workloads.WorkloadWriter(apps, policy),
            drainer=drain.Drainer(core),
        )
    finally:
        for name in made:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def _ready(core: client.CoreV1Api, node: str) -> bool:
    conditions = core.read_node(node, _request_timeout=10).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _budget_settled(stage: Stage, name: str, healthy: int) -> bool:
    """Whether the disruption controller has counted ``healthy`` pods against the PDB's current spec."""
    pdb = stage.policy.read_namespaced_pod_disruption_budget(name, stage.namespace, _request_timeout=10)
    status = pdb.status
    return (
        status is not None
        and status.observed_generation == pdb.metadata.generation
        and status.current_healthy == healthy
        and status.expected_pods == healthy
    )


def _view(pod, do_not_disrupt: bool = False) -> snapshot.PodView:
    return snapshot.PodView(
        name=pod.metadata.name,
        node=pod.spec.node_name,
        slice_name=pod.metadata.labels[constants.SLICE_LABEL],
        ready=True,
        gpus=1,
        do_not_disrupt=do_not_disrupt,
    )


def _exists_undeleted(stage: Stage, pod: str) -> bool:
    found = stage.core.list_namespaced_pod(stage.namespace, field_selector=f"metadata.name={pod}").items
    return bool(found) and found[0].metadata.deletion_timestamp is None


def test_each_slice_runs_only_on_its_offers_nodes_and_is_deleted_with_its_pool(stage: Stage):
    for offer, replicas in ((SPOT, 2), (ON_DEMAND, 1)):
        stage.writer.apply_slice(stage.namespace, stage.slice(offer, replicas))
        stage.writer.apply_budget(stage.namespace, manifests.slice_budget(stage.pool, stage.uid, offer, 1))
    # Applying again is harmless: server-side apply updates the fields sunblend owns.
    stage.writer.apply_slice(stage.namespace, stage.slice(SPOT, 3))

    assert {p.spec.node_name for p in stage.running(SPOT, 3)} == {stage.spot_node}
    assert {p.spec.node_name for p in stage.running(ON_DEMAND, 1)} == {stage.on_demand_node}

    name = manifests.slice_name("chat", SPOT)
    deployment = stage.apps.read_namespaced_deployment(name, stage.namespace)
    assert deployment.metadata.owner_references[0].uid == stage.uid
    assert deployment.metadata.labels[constants.CAPACITY_TYPE_LABEL] == "spot"
    pdb = stage.policy.read_namespaced_pod_disruption_budget(name, stage.namespace)
    assert pdb.spec.max_unavailable == 1
    assert pdb.spec.selector.match_labels == manifests.selector("chat", SPOT)

    client.CustomObjectsApi(stage.core.api_client).delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, stage.namespace, constants.PLURAL, "chat"
    )

    def collected():
        left = stage.apps.list_namespaced_deployment(stage.namespace).items
        left_budgets = stage.policy.list_namespaced_pod_disruption_budget(stage.namespace).items
        return not left and not left_budgets

    wait_for(collected, 60, 0.5, what="the garbage collector to delete the pool's slices and PDBs")


def test_replicas_are_written_through_the_scale_subresource_even_after_a_conflict(stage: Stage):
    name = manifests.slice_name("chat", ON_DEMAND)
    stage.writer.apply_slice(stage.namespace, stage.slice(ON_DEMAND, 1))
    version = stage.apps.read_namespaced_deployment_scale(name, stage.namespace).metadata.resource_version

    stage.writer.scale(stage.namespace, "Deployment", name, 2, expected_resource_version=version)
    assert stage.apps.read_namespaced_deployment(name, stage.namespace).spec.replicas == 2

    # A version from before the last write: the API server answers 409; the replicas are still the
    # 2 the decision saw, so the writer writes once more, testing them.
    stage.writer.scale(stage.namespace, "Deployment", name, 3, expected_resource_version=version, expected_replicas=2)
    assert stage.apps.read_namespaced_deployment(name, stage.namespace).spec.replicas == 3
    assert {p.spec.node_name for p in stage.running(ON_DEMAND, 3)} == {stage.on_demand_node}

    # Someone else scaled it since the decision (made at 2 replicas): nothing is written.
    with pytest.raises(workloads.ScaleConflict, match="3 replicas now, not 2"):
        stage.writer.scale(
            stage.namespace, "Deployment", name, 1, expected_resource_version=version, expected_replicas=2
        )
    assert stage.apps.read_namespaced_deployment(name, stage.namespace).spec.replicas == 3

    with pytest.raises(workloads.ActuationFailed, match="404"):
        stage.writer.scale(stage.namespace, "Deployment", "no-such-slice", 1, expected_resource_version=None)


def test_evictions_go_through_the_budgets_and_a_cordoned_node_takes_no_new_pods(stage: Stage):
    spot_name = manifests.slice_name("chat", SPOT)
    stage.writer.apply_slice(stage.namespace, stage.slice(SPOT, 2))
    stage.writer.apply_budget(stage.namespace, manifests.slice_budget(stage.pool, stage.uid, SPOT, 1))
    stage.writer.apply_slice(stage.namespace, stage.slice(ON_DEMAND, 1))
    strict = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "strict"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": manifests.selector("chat", ON_DEMAND)}},
    }
    stage.policy.create_namespaced_pod_disruption_budget(stage.namespace, strict)
    spot_pods = stage.running(SPOT, 2)
    [on_demand_pod] = stage.running(ON_DEMAND, 1)
    wait_for(lambda: _budget_settled(stage, "strict", 1), 30, what="the strict PDB's status")
    wait_for(lambda: _budget_settled(stage, spot_name, 2), 30, what="the slice PDB's status")

    # minAvailable equal to the replicas: the API server says wait (429), and the pod stays.
    assert stage.drainer.evict(stage.namespace, on_demand_pod.metadata.name) is drain.EvictionResult.BLOCKED
    assert _exists_undeleted(stage, on_demand_pod.metadata.name)
    assert stage.drainer.evict(stage.namespace, "no-such-pod") is drain.EvictionResult.GONE

    stage.drainer.cordon(stage.spot_node)
    stage.drainer.cordon(stage.spot_node)  # idempotent
    assert stage.core.read_node(stage.spot_node).spec.unschedulable is True
    with pytest.raises(drain.NodeGone):
        stage.drainer.cordon(f"{stage.namespace}-no-such-node")

    first, second = spot_pods
    outcome = stage.drainer.drain(stage.namespace, stage.spot_node, [_view(first), _view(second, True)])
    assert (outcome.evicted, outcome.protected, outcome.blocked) == (
        (first.metadata.name,),
        (second.metadata.name,),
        (),
    )
    wait_for(lambda: not _exists_undeleted(stage, first.metadata.name), 30, what="the evicted pod to terminate")
    # maxUnavailable 1 is spent: the next eviction of the slice must wait.
    assert stage.drainer.evict(stage.namespace, second.metadata.name) is drain.EvictionResult.BLOCKED
    assert _exists_undeleted(stage, second.metadata.name)

    # The replacement stays pending: its only node is cordoned and the on-demand node is not spot.
    def replacement():
        fresh = [p for p in stage.pods(SPOT) if p.metadata.name not in {first.metadata.name, second.metadata.name}]
        return fresh or None

    def unschedulable():
        pods = replacement() or []
        conditions = [c for p in pods for c in (p.status.conditions or []) if c.type == "PodScheduled"]
        return [c for c in conditions if c.status == "False" and c.reason == "Unschedulable"]

    wait_for(unschedulable, 30, what="the scheduler to find no node for the replacement")
    assert all(p.spec.node_name is None for p in replacement() or [])
