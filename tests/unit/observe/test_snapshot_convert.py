"""observe/snapshot.py's pure conversions: kubernetes client objects to the plain views of core.snapshot."""

from __future__ import annotations

import datetime as dt

import pytest
from kubernetes import client

from sunblend.api.spec import CapacityType
from sunblend.core import interruptions, nodes, snapshot
from sunblend.observe import snapshot as reader
from tests.unit import pools

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
L4 = {"nvidia.com/gpu.product": "NVIDIA-L4"}
SPEC = pools.pool_spec(
    regions=[pools.region("ap-south-1"), pools.region("eu-west-2")],
    gpuClasses=[
        {**pools.gpu_class("h100"), "nodeSelector": H100},
        {**pools.gpu_class("any"), "nodeSelector": {"nvidia.com/gpu.present": "true"}},
        {**pools.gpu_class("l4"), "nodeSelector": L4},
    ],
)


def node(
    labels: dict[str, str],
    *,
    name: str = "gpu-1",
    taints: list[client.V1Taint] | None = None,
    ready: str = "True",
    unschedulable: bool | None = None,
    allocatable: dict[str, str] | None = None,
) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1NodeSpec(taints=taints, unschedulable=unschedulable),
        status=client.V1NodeStatus(
            conditions=[
                client.V1NodeCondition(type="MemoryPressure", status="False"),
                client.V1NodeCondition(type="Ready", status=ready),
            ],
            allocatable={"cpu": "192", "nvidia.com/gpu": "8"} if allocatable is None else allocatable,
        ),
    )


def test_a_spot_node_with_an_interruption_taint():
    view = reader.node_view(
        node(
            {"topology.kubernetes.io/region": "ap-south-1", "karpenter.sh/capacity-type": "spot", **H100},
            taints=[
                client.V1Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule"),
                client.V1Taint(key="aws-node-termination-handler/spot-itn", value="abc", effect="NoSchedule"),
            ],
        ),
        SPEC,
    )
    assert view == snapshot.NodeView(
        name="gpu-1",
        region="ap-south-1",
        gpu_class="h100",
        capacity_type=CapacityType.SPOT,
        ready=True,
        unschedulable=False,
        interruption="aws-node-termination-handler/spot-itn",
        gpus=8,
        labels={"topology.kubernetes.io/region": "ap-south-1", "karpenter.sh/capacity-type": "spot", **H100},
    )


def test_a_node_outside_the_declared_regions_or_classes_is_not_the_pools():
    assert reader.node_view(node({"topology.kubernetes.io/region": "us-east-1", **H100}), SPEC) is None
    assert reader.node_view(node(H100), SPEC) is None
    assert reader.node_view(node({"topology.kubernetes.io/region": "eu-west-2", "gpu": "other"}), SPEC) is None


def test_the_first_class_that_selects_a_node_is_its_class():
    labels = {"topology.kubernetes.io/region": "eu-west-2", "nvidia.com/gpu.present": "true", **L4}
    view = reader.node_view(node(labels), SPEC)
    assert view is not None and view.gpu_class == "any"


def test_not_ready_cordoned_no_gpus_and_the_configured_rules():
    labels = {"topology.kubernetes.io/region": "eu-west-2", "example.com/lifecycle": "preemptible", **L4}
    capacity_rules = (nodes.CapacityTypeRule("example.com/lifecycle", {"preemptible": CapacityType.SPOT}),)
    interruption_rules = (interruptions.InterruptionRule("example.com/reclaim", "NoExecute"),)
    view = reader.node_view(
        node(
            labels,
            ready="Unknown",
            unschedulable=True,
            allocatable={"cpu": "4"},
            taints=[client.V1Taint(key="example.com/reclaim", effect="NoExecute")],
        ),
        SPEC,
        capacity_rules,
        interruption_rules,
    )
    assert view is not None
    assert (view.capacity_type, view.ready, view.unschedulable, view.gpus, view.interruption) == (
        CapacityType.SPOT,
        False,
        True,
        0,
        "example.com/reclaim",
    )
    # The default rules know neither the label nor the taint.
    default = reader.node_view(
        node(labels, taints=[client.V1Taint(key="example.com/reclaim", effect="NoExecute")]), SPEC
    )
    assert default is not None and (default.capacity_type, default.interruption) == (CapacityType.ON_DEMAND, None)


def test_a_node_without_a_status_is_not_ready():
    bare = client.V1Node(
        metadata=client.V1ObjectMeta(name="n", labels={"topology.kubernetes.io/region": "eu-west-2", **L4})
    )
    view = reader.node_view(bare, SPEC)
    assert view is not None and (view.ready, view.gpus, view.interruption) == (False, 0, None)


def test_taints_as_mappings():
    tainted = node(
        {},
        taints=[client.V1Taint(key="k", effect="NoSchedule"), client.V1Taint(key="j", value="v", effect="NoExecute")],
    )
    assert reader.taints(tainted) == [
        {"key": "k", "value": "", "effect": "NoSchedule"},
        {"key": "j", "value": "v", "effect": "NoExecute"},
    ]
    assert reader.taints(client.V1Node()) == []


@pytest.mark.parametrize(("quantity", "expected"), [("8", 8), ("1k", 1000), ("2000m", 2), (None, 0), ("lots", 0)])
def test_gpu_count(quantity, expected):
    assert reader.gpu_count(quantity) == expected


def container(gpus: str | None = None, *, limit: str | None = None, restart: str | None = None) -> client.V1Container:
    return client.V1Container(
        name="c",
        restart_policy=restart,
        resources=client.V1ResourceRequirements(
            requests={"cpu": "1", **({"nvidia.com/gpu": gpus} if gpus else {})},
            limits={"nvidia.com/gpu": limit} if limit else None,
        ),
    )


def pod(
    *,
    annotations: dict[str, str] | None = None,
    containers: list[client.V1Container] | None = None,
    init: list[client.V1Container] | None = None,
    node_name: str | None = "gpu-1",
    ready: str = "True",
    deleted: bool = False,
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="vllm-0",
            labels={"sunblend.dev/pool": "chat", "sunblend.dev/slice": "chat-ap-south-1-spot"},
            annotations=annotations,
            deletion_timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) if deleted else None,
        ),
        spec=client.V1PodSpec(
            node_name=node_name, containers=containers or [container("2"), container("1")], init_containers=init
        ),
        status=client.V1PodStatus(conditions=[client.V1PodCondition(type="Ready", status=ready)]),
    )


def test_a_running_pod():
    assert reader.pod_view(pod()) == snapshot.PodView(
        name="vllm-0",
        node="gpu-1",
        slice_name="chat-ap-south-1-spot",
        ready=True,
        gpus=3,
        do_not_disrupt=False,
        deleting=False,
    )


def test_a_pending_pod_being_deleted():
    view = reader.pod_view(pod(node_name=None, ready="False", deleted=True))
    assert (view.node, view.ready, view.deleting) == (None, False, True)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"karpenter.sh/do-not-disrupt": "true"}, True),
        ({"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}, True),
        ({"karpenter.sh/do-not-disrupt": "false"}, False),
        ({"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}, False),
        (None, False),
    ],
)
def test_do_not_disrupt(annotations, expected):
    assert reader.pod_view(pod(annotations=annotations)).do_not_disrupt is expected


def test_pod_gpus_counts_limits_sidecars_and_the_largest_init_container():
    assert reader.pod_gpus(client.V1PodSpec(containers=[container(limit="4")])) == 4
    sidecar = container("1", restart="Always")
    assert reader.pod_gpus(client.V1PodSpec(containers=[container("2")], init_containers=[sidecar])) == 3
    assert reader.pod_gpus(client.V1PodSpec(containers=[container("2")], init_containers=[container("8")])) == 8
    assert reader.pod_gpus(client.V1PodSpec(containers=[client.V1Container(name="plain")])) == 0
    assert reader.pod_gpus(None) == 0


def owner(kind: str = "InferencePool", name: str = "chat", api_version: str = "sunblend.dev/v1alpha1"):
    return client.V1OwnerReference(api_version=api_version, kind=kind, name=name, uid="u-1")


def test_a_slice_deployment_the_pool_owns():
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(
            name="chat-ap-south-1",
            labels={"sunblend.dev/pool": "chat"},
            resource_version="42",
            owner_references=[owner()],
        ),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels={"app": "x"}),
            template=client.V1PodTemplateSpec(),
        ),
        status=client.V1DeploymentStatus(ready_replicas=2),
    )
    assert reader.workload_view(deployment, "chat") == snapshot.WorkloadView(
        kind="Deployment",
        name="chat-ap-south-1",
        replicas=3,
        ready_replicas=2,
        resource_version="42",
        labels={"sunblend.dev/pool": "chat"},
        owned_by_pool=True,
    )
    assert reader.workload_view(deployment, "other").owned_by_pool is False


@pytest.mark.parametrize(
    "reference",
    [owner(name="other"), owner(kind="Deployment"), owner(api_version="inference.networking.x-k8s.io/v1alpha2")],
    ids=["another pool", "another kind", "another group's InferencePool"],
)
def test_only_a_reference_to_this_pool_is_ownership(reference):
    assert reader.owned_by(client.V1ObjectMeta(owner_references=[reference]), "chat") is False
    assert reader.owned_by(None, "chat") is False


def test_a_statefulset_without_status():
    workload = client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="vllm"),
        spec=client.V1StatefulSetSpec(
            selector=client.V1LabelSelector(match_labels={"app": "x"}), template=client.V1PodTemplateSpec()
        ),
    )
    view = reader.workload_view(workload, "chat")
    assert (view.kind, view.name, view.replicas, view.ready_replicas, view.owned_by_pool) == (
        "StatefulSet",
        "vllm",
        1,
        0,
        False,
    )


def test_an_hpa():
    hpa = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="vllm"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            max_replicas=10,
            scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="vllm"
            ),
        ),
    )
    assert reader.hpa_view(hpa) == snapshot.AutoscalerView("HorizontalPodAutoscaler", "vllm", "Deployment", "vllm")


def test_a_keda_scaled_object():
    scaled = {"metadata": {"name": "vllm-so"}, "spec": {"scaleTargetRef": {"name": "vllm"}}}
    assert reader.scaled_object_view(scaled) == snapshot.AutoscalerView("ScaledObject", "vllm-so", "Deployment", "vllm")
    stateful = {"metadata": {"name": "s"}, "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}}}
    assert reader.scaled_object_view(stateful) == snapshot.AutoscalerView("ScaledObject", "s", "StatefulSet", "db")
    for broken in ({"metadata": {"name": "x"}}, {"spec": {"scaleTargetRef": {}}}, "text", None):
        assert reader.scaled_object_view(broken) is None


def test_a_pdb_and_one_its_controller_has_not_counted_yet():
    budget = client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="vllm"),
        spec=client.V1PodDisruptionBudgetSpec(selector=client.V1LabelSelector(match_labels={"app": "vllm"})),
        status=client.V1PodDisruptionBudgetStatus(
            current_healthy=3, desired_healthy=2, disruptions_allowed=1, expected_pods=3
        ),
    )
    assert reader.budget_view(budget) == snapshot.BudgetView("vllm", {"app": "vllm"}, 1)
    fresh = client.V1PodDisruptionBudget(metadata=client.V1ObjectMeta(name="new"))
    assert reader.budget_view(fresh) == snapshot.BudgetView("new", {}, 0)


def test_selectors_as_text():
    assert reader.selector_text({"b": "2", "a": "1"}) == "a=1,b=2"
    selector = client.V1LabelSelector(
        match_labels={"app": "vllm"},
        match_expressions=[
            client.V1LabelSelectorRequirement(key="tier", operator="In", values=["gpu", "edge"]),
            client.V1LabelSelectorRequirement(key="canary", operator="NotIn", values=["true"]),
            client.V1LabelSelectorRequirement(key="model", operator="Exists"),
            client.V1LabelSelectorRequirement(key="legacy", operator="DoesNotExist"),
        ],
    )
    assert reader.label_selector_text(selector) == "app=vllm,tier in (edge,gpu),canary notin (true),model,!legacy"
    assert reader.label_selector_text(client.V1LabelSelector()) == ""
    assert reader.label_selector_text(None) == ""
