"""The pure builders of a pool's slices and their PodDisruptionBudgets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sunblend.actuate import manifests
from sunblend.api import constants, load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import nodes
from tests.unit import pools

UID = "0f5b2c7e-0000-4000-8000-000000000001"
SPOT = ("ap-south-1", "h100", CapacityType.SPOT)
ON_DEMAND = ("ap-south-1", "h100", CapacityType.ON_DEMAND)
COMMITTED = ("ap-south-1", "h100", CapacityType.COMMITTED)
H100_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _template() -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "chat"}},
        "spec": {
            "containers": [{"name": "server", "image": "vllm", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
            "tolerations": [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        },
    }


def _pool(template: dict[str, Any] | None = None, name: str = "chat") -> spec.InferencePool:
    document = pools.document(
        modelServer={"gpusPerReplica": 1, "tokensPerSecondPerReplica": 100, "template": template or _template()},
        regions=[pools.region("ap-south-1", "Asia/Kolkata")],
        gpuClasses=[{**pools.gpu_class("h100", 8, spot=1.0), "nodeSelector": H100_SELECTOR}],
    )
    document["metadata"] = {"name": name, "namespace": "serving"}
    return load.parse_pool(document)


def _terms(deployment: dict[str, Any]) -> list[list[dict[str, Any]]]:
    affinity = deployment["spec"]["template"]["spec"]["affinity"]
    required = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [term["matchExpressions"] for term in required["nodeSelectorTerms"]]


def _matches(expressions: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """The API server's reading of one nodeSelectorTerm (In, NotIn, Exists, DoesNotExist)."""
    for e in expressions:
        value = labels.get(e["key"])
        ok = {
            "In": value in e.get("values", []),
            "NotIn": value not in e.get("values", []),
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[e["operator"]]
        if not ok:
            return False
    return True


def _schedulable(deployment: dict[str, Any], labels: dict[str, str]) -> bool:
    return any(_matches(term, labels) for term in _terms(deployment))


def test_slice_names_are_deterministic_lower_case_dns_labels():
    assert manifests.slice_name("chat", SPOT) == "chat-ap-south-1-h100-spot"
    assert manifests.slice_name("chat", ON_DEMAND) == "chat-ap-south-1-h100-on-demand"
    assert manifests.slice_name("Chat", SPOT) == manifests.slice_name("Chat", SPOT) == "chat-ap-south-1-h100-spot"


def test_long_or_dotted_names_are_cut_to_63_characters_with_a_hash_that_keeps_them_apart():
    long_a = "a" * 70
    long_b = "a" * 69 + "b"
    names = {manifests.slice_name(pool, SPOT) for pool in (long_a, long_b, "my.pool", "my-pool")}
    assert len(names) == 4
    for name in names:
        assert len(name) <= 63
        assert manifests._DNS_LABEL.match(name), name
    assert manifests.slice_name(long_a, SPOT) == manifests.slice_name(long_a, SPOT)


def test_a_long_pool_name_becomes_a_valid_pool_label_value():
    value = manifests.label_value("p" * 100)
    assert len(value) <= 63
    assert manifests.label_value("chat") == "chat"


def test_the_slice_is_owned_by_the_pool_labelled_and_selects_only_its_pods():
    deployment = manifests.slice_deployment(_pool(), UID, SPOT, 3, nodes.DEFAULT_RULES)
    meta = deployment["metadata"]
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    assert meta["name"] == "chat-ap-south-1-h100-spot" and meta["namespace"] == "serving"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "sunblend.dev/v1alpha1",
            "kind": "InferencePool",
            "name": "chat",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"] == {
        "app": "chat",
        constants.POOL_LABEL: "chat",
        constants.SLICE_LABEL: "chat-ap-south-1-h100-spot",
        constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
        constants.REGION_LABEL: "ap-south-1",
        constants.GPU_CLASS_LABEL: "h100",
        constants.CAPACITY_TYPE_LABEL: "spot",
    }
    assert deployment["spec"]["replicas"] == 3
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {constants.POOL_LABEL: "chat", constants.SLICE_LABEL: "chat-ap-south-1-h100-spot"}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items() and pod_labels["app"] == "chat"


def test_every_term_requires_the_region_and_the_gpu_class_labels():
    deployment = manifests.slice_deployment(_pool(), UID, ON_DEMAND, 1, nodes.DEFAULT_RULES)
    for term in _terms(deployment):
        assert {"key": constants.REGION_LABEL, "operator": "In", "values": ["ap-south-1"]} in term
        assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]} in term


@pytest.mark.parametrize("offer", [SPOT, ON_DEMAND, COMMITTED], ids=lambda o: o[2].value)
@pytest.mark.parametrize(
    "capacity_labels",
    [
        {},
        {"karpenter.sh/capacity-type": "spot"},
        {"karpenter.sh/capacity-type": "on-demand"},
        {"karpenter.sh/capacity-type": "reserved"},
        {"karpenter.sh/capacity-type": "unknown"},
        {"eks.amazonaws.com/capacityType": "SPOT"},
        {"eks.amazonaws.com/capacityType": "ON_DEMAND"},
        {"cloud.google.com/gke-spot": "true"},
        {"kubernetes.azure.com/scalesetpriority": "spot"},
        {"kubernetes.azure.com/scalesetpriority": "regular"},
        {"karpenter.sh/capacity-type": "on-demand", "cloud.google.com/gke-spot": "true"},
        {"karpenter.sh/capacity-type": "weird", "cloud.google.com/gke-spot": "true"},
    ],
)
def test_a_slice_schedules_exactly_on_the_nodes_counted_as_its_capacity_type(offer, capacity_labels):
    deployment = manifests.slice_deployment(_pool(), UID, offer, 1, nodes.DEFAULT_RULES)
    labels = {constants.REGION_LABEL: "ap-south-1", **H100_SELECTOR, **capacity_labels}
    counted = nodes.capacity_type(labels, nodes.DEFAULT_RULES)
    assert _schedulable(deployment, labels) == (counted == offer[2])


def test_the_terms_for_each_capacity_type_with_the_default_rules():
    def capacity_parts(offer):
        deployment = manifests.slice_deployment(_pool(), UID, offer, 1, nodes.DEFAULT_RULES)
        return [term[2:] for term in _terms(deployment)]  # after region and GPU class

    karpenter_known = {
        "key": "karpenter.sh/capacity-type",
        "operator": "NotIn",
        "values": ["on-demand", "reserved", "spot"],
    }
    assert capacity_parts(COMMITTED) == [
        [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["reserved"]}]
    ]
    spot = capacity_parts(SPOT)
    assert len(spot) == 4
    assert spot[0] == [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]
    assert spot[1] == [karpenter_known, {"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}]
    on_demand = capacity_parts(ON_DEMAND)
    assert len(on_demand) == 3  # karpenter, EKS, and a node no rule recognises
    assert [e["operator"] for e in on_demand[-1]] == ["NotIn"] * 4


def test_unlabelled_nodes_count_as_on_demand_and_only_on_demand_slices_go_there():
    bare = {constants.REGION_LABEL: "ap-south-1", **H100_SELECTOR}
    assert _schedulable(manifests.slice_deployment(_pool(), UID, ON_DEMAND, 1, nodes.DEFAULT_RULES), bare)
    assert not _schedulable(manifests.slice_deployment(_pool(), UID, SPOT, 1, nodes.DEFAULT_RULES), bare)


def test_only_spot_slices_tolerate_the_spot_taints_and_every_slice_tolerates_the_gpu_taint():
    spot_taints = [
        {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
        for key, value in constants.SPOT_TAINTS
    ]
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    users = _template()["spec"]["tolerations"]
    for offer in (SPOT, ON_DEMAND, COMMITTED):
        tolerations = manifests.slice_deployment(_pool(), UID, offer, 1, nodes.DEFAULT_RULES)["spec"]["template"][
            "spec"
        ]["tolerations"]
        assert tolerations[: len(users)] == users
        assert gpu in tolerations
        assert all((t in tolerations) == (offer == SPOT) for t in spot_taints)


def test_the_users_affinity_is_merged_not_replaced_and_the_template_is_not_changed():
    template = _template()
    pod_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}]}
    users_term = {"matchExpressions": [{"key": "team", "operator": "In", "values": ["ml"]}]}
    preferred = [{"weight": 1, "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]}}]
    template["spec"]["affinity"] = {
        "podAntiAffinity": pod_affinity,
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [users_term]},
            "preferredDuringSchedulingIgnoredDuringExecution": preferred,
        },
    }
    pool = _pool(template)
    before = copy.deepcopy(pool.spec.model_server.template)
    deployment = manifests.slice_deployment(pool, UID, SPOT, 1, nodes.DEFAULT_RULES)
    affinity = deployment["spec"]["template"]["spec"]["affinity"]
    assert affinity["podAntiAffinity"] == pod_affinity
    assert affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    terms = _terms(deployment)
    assert len(terms) == 4 and all(term[0] == users_term["matchExpressions"][0] for term in terms)
    assert pool.spec.model_server.template == before


def test_a_bare_pod_spec_is_accepted_as_the_template():
    bare = _template()["spec"]
    deployment = manifests.slice_deployment(_pool(bare), UID, SPOT, 1, nodes.DEFAULT_RULES)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["name"] == "server"
    assert deployment["spec"]["template"]["metadata"]["labels"][constants.SLICE_LABEL] == "chat-ap-south-1-h100-spot"


def test_a_pool_without_a_template_cannot_become_a_slice():
    document = pools.document()
    pool = load.parse_pool(document)
    with pytest.raises(manifests.ManifestError):
        manifests.slice_deployment(pool, UID, ("r1", "gpu", CapacityType.SPOT), 1, nodes.DEFAULT_RULES)


def test_capacity_types_no_rule_names_cannot_be_scheduled():
    rules = (nodes.CapacityTypeRule("cloud.google.com/gke-spot", {"true": CapacityType.SPOT}),)
    with pytest.raises(manifests.ManifestError, match="committed"):
        manifests.slice_deployment(_pool(), UID, COMMITTED, 1, rules)


def test_the_budget_is_owned_by_the_pool_and_selects_the_slice():
    pdb = manifests.slice_budget(_pool(), UID, SPOT, 2)
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["metadata"]["name"] == "chat-ap-south-1-h100-spot"
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == UID
    assert pdb["spec"] == {
        "selector": {"matchLabels": {constants.POOL_LABEL: "chat", constants.SLICE_LABEL: "chat-ap-south-1-h100-spot"}},
        "maxUnavailable": 2,
    }
