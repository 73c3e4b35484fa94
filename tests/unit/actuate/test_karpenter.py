"""The karpenter node provider: the pure NodePool builder, and what it refuses to touch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import workloads
from sunblend.actuate.providers import base, karpenter
from sunblend.api import constants, load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from tests.unit import pools

UID = "0f5b2c7e-0000-4000-8000-000000000001"
SPOT = ("ap-south-1", "h100", CapacityType.SPOT)
ON_DEMAND = ("ap-south-1", "h100", CapacityType.ON_DEMAND)
COMMITTED = ("ap-south-1", "h100", CapacityType.COMMITTED)
EU_SPOT = ("eu-west-2", "h100", CapacityType.SPOT)
H100_SELECTOR = {"node.kubernetes.io/instance-type": "gpu-8x-h100", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _pool(name: str = "chat", selector: dict[str, str] | None = None, gpus: int = 8) -> spec.InferencePool:
    document = pools.document(
        regions=[pools.region("ap-south-1", "Asia/Kolkata"), pools.region("eu-west-2", "Europe/London")],
        gpuClasses=[
            {
                **pools.gpu_class("h100", gpus, spot=1.0, committed=2.0),
                "nodeSelector": H100_SELECTOR if selector is None else selector,
            }
        ],
        actuation={"disruption": {"maxNodesAtOnce": 2}},
    )
    document["metadata"] = {"name": name, "namespace": "serving"}
    return load.parse_pool(document)


def _requirements(document: dict[str, Any]) -> dict[str, list[str]]:
    found = document["spec"]["template"]["spec"]["requirements"]
    assert all(r["operator"] == "In" for r in found)
    return {r["key"]: r["values"] for r in found}


def test_name_is_deterministic_and_names_the_offer() -> None:
    assert karpenter.nodepool_name("chat", SPOT) == "sunblend-chat-h100-spot-ap-south-1"
    assert karpenter.nodepool_name("chat", COMMITTED) == "sunblend-chat-h100-committed-ap-south-1"
    assert karpenter.nodepool(_pool(), UID, SPOT, 2)["metadata"]["name"] == "sunblend-chat-h100-spot-ap-south-1"


def test_long_or_odd_names_are_hashed_to_a_dns_label() -> None:
    long_name = "a-very-long-pool-name-that-goes-on-and-on-and-on"
    name = karpenter.nodepool_name(long_name, ON_DEMAND)
    assert len(name) <= 63
    assert karpenter._DNS_LABEL.match(name)
    assert name != karpenter.nodepool_name(long_name, SPOT)
    odd = karpenter.nodepool_name("Chat_Pool", SPOT)
    assert karpenter._DNS_LABEL.match(odd) and len(odd) <= 63


@pytest.mark.parametrize(
    ("offer", "capacity", "weight"),
    [(COMMITTED, "reserved", 30), (SPOT, "spot", 20), (ON_DEMAND, "on-demand", 10)],
)
def test_capacity_type_and_weight(offer: Any, capacity: str, weight: int) -> None:
    document = karpenter.nodepool(_pool(), UID, offer, 1)
    assert _requirements(document)["karpenter.sh/capacity-type"] == [capacity]
    assert document["spec"]["weight"] == weight


def test_weights_prefer_reserved_then_spot_then_on_demand() -> None:
    weights = karpenter.WEIGHTS
    assert weights[CapacityType.COMMITTED] > weights[CapacityType.SPOT] > weights[CapacityType.ON_DEMAND] >= 1
    assert max(weights.values()) <= 100


def test_requirements_pin_region_and_gpu_class_labels() -> None:
    requirements = _requirements(karpenter.nodepool(_pool(), UID, EU_SPOT, 1))
    assert requirements == {
        "karpenter.sh/capacity-type": ["spot"],
        constants.REGION_LABEL: ["eu-west-2"],
        "node.kubernetes.io/instance-type": ["gpu-8x-h100"],
        "nvidia.com/gpu.product": ["NVIDIA-H100-80GB-HBM3"],
    }


def test_limit_is_planned_nodes_times_gpus_per_node() -> None:
    assert karpenter.nodepool(_pool(), UID, SPOT, 2)["spec"]["limits"] == {"nvidia.com/gpu": "16"}
    assert karpenter.nodepool(_pool(gpus=4), UID, SPOT, 3)["spec"]["limits"] == {"nvidia.com/gpu": "12"}
    assert karpenter.nodepool(_pool(), UID, SPOT, 0)["spec"]["limits"] == {"nvidia.com/gpu": "0"}
    with pytest.raises(base.ProviderFailed):
        karpenter.nodepool(_pool(), UID, SPOT, -1)


def test_labels_and_annotations_say_whose_it_is() -> None:
    metadata = karpenter.nodepool(_pool(), UID, SPOT, 1)["metadata"]
    assert metadata["labels"][constants.MANAGED_BY_LABEL] == constants.MANAGED_BY
    assert metadata["labels"][constants.POOL_LABEL] == "chat"
    assert metadata["labels"][constants.POOL_NAMESPACE_LABEL] == "serving"
    assert metadata["annotations"] == {
        karpenter.POOL_REF_ANNOTATION: "serving/chat",
        karpenter.POOL_UID_ANNOTATION: UID,
    }
    assert "ownerReferences" not in metadata  # cluster-scoped: no owner across namespaces
    assert "namespace" not in metadata


def test_template_labels_put_the_class_labels_on_the_nodes() -> None:
    labels = karpenter.nodepool(_pool(), UID, SPOT, 1)["spec"]["template"]["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    # Karpenter sets a well-known label from the instance type it picks: a requirement, not a label.
    assert "node.kubernetes.io/instance-type" not in labels
    assert labels[constants.POOL_LABEL] == "chat"
    assert labels[constants.GPU_CLASS_LABEL] == "h100"
    assert labels[constants.PROVIDER_LABEL] == "karpenter"
    assert not any(k.split("/")[0].endswith("karpenter.sh") for k in labels)


def test_provider_labels_are_requirements_only() -> None:
    pool = _pool(selector={"karpenter.k8s.aws/instance-gpu-name": "h100"})
    document = karpenter.nodepool(pool, UID, SPOT, 1)
    assert _requirements(document)["karpenter.k8s.aws/instance-gpu-name"] == ["h100"]
    assert "karpenter.k8s.aws/instance-gpu-name" not in document["spec"]["template"]["metadata"]["labels"]


def test_restricted_class_labels_are_refused() -> None:
    with pytest.raises(base.ProviderFailed, match=r"kubernetes\.io/hostname"):
        karpenter.nodepool(_pool(selector={"kubernetes.io/hostname": "n1"}), UID, SPOT, 1)
    with pytest.raises(base.ProviderFailed, match=r"karpenter\.sh/nodepool"):
        karpenter.nodepool(_pool(selector={"karpenter.sh/nodepool": "x"}), UID, SPOT, 1)


def test_disruption_is_when_empty_within_the_pools_budget() -> None:
    document = karpenter.nodepool(_pool(), UID, SPOT, 1)
    assert document["spec"]["disruption"] == {
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": karpenter.CONSOLIDATE_AFTER,
        "budgets": [{"nodes": "2"}],
    }


def test_node_class_ref_and_gpu_taint() -> None:
    ref = karpenter.NodeClassRef("karpenter.k8s.aws", "EC2NodeClass", "gpu")
    template = karpenter.nodepool(_pool(), UID, SPOT, 1, ref)["spec"]["template"]["spec"]
    assert template["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}
    assert template["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    default = karpenter.nodepool(_pool(), UID, SPOT, 1)["spec"]["template"]["spec"]["nodeClassRef"]
    assert default == {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}


def test_builder_is_pure() -> None:
    pool = _pool()
    before = pool.model_dump()
    first = karpenter.nodepool(pool, UID, SPOT, 2)
    second = karpenter.nodepool(pool, UID, SPOT, 2)
    assert first == second
    assert pool.model_dump() == before


class FakeCustomObjects:
    """The CustomObjectsApi calls the provider makes, over a dict of cluster-scoped NodePools."""

    def __init__(self, existing: dict[str, dict[str, Any]] | None = None) -> None:
        self.objects = copy.deepcopy(existing or {})
        self.calls: list[tuple[str, str]] = []

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str, **_: Any) -> dict[str, Any]:
        assert (group, version, plural) == ("karpenter.sh", "v1", "nodepools")
        self.calls.append(("get", name))
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[name])

    def patch_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str, body: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        assert kwargs["field_manager"] == "sunblend"
        assert kwargs["_content_type"] == workloads.APPLY
        self.calls.append(("apply", name))
        current = self.objects.get(name)
        if current is None:
            assert kwargs["force"] is False, "a NodePool sunblend has not read is never forced"
            self.objects[name] = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": "1"}}
            return body
        assert kwargs["force"] is True
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        version_now = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.objects[name] = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": version_now}}
        return body

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the provider must not call {name}")


def _provider(fake: FakeCustomObjects) -> karpenter.KarpenterProvider:
    provider = karpenter.KarpenterProvider.__new__(karpenter.KarpenterProvider)
    provider._custom = fake  # type: ignore[assignment]
    provider._node_class_ref = karpenter.NodeClassRef()
    return provider


def _command(nodes: int, observed: int = 0) -> commands.SetNodes:
    return commands.SetNodes(offer=SPOT, nodes=nodes, observed=observed, reason="plan")


NAME = "sunblend-chat-h100-spot-ap-south-1"


def test_set_nodes_creates_then_applies_the_limit() -> None:
    fake = FakeCustomObjects()
    provider = _provider(fake)
    said = provider.set_nodes(_pool(), UID, _command(2), snapshot.Snapshot())
    assert said == f"NodePool {NAME} created: limit nvidia.com/gpu 16 (2 nodes)"
    said = provider.set_nodes(_pool(), UID, _command(1, observed=2), snapshot.Snapshot())
    assert said.startswith(f"NodePool {NAME} applied: limit nvidia.com/gpu 8 (1 nodes)")
    assert "only blocks new launches" in said
    assert fake.objects[NAME]["spec"]["limits"] == {"nvidia.com/gpu": "8"}
    assert [c[0] for c in fake.calls] == ["get", "apply", "get", "apply"]


def test_constructor_takes_an_api_client() -> None:
    from kubernetes import client

    provider = karpenter.KarpenterProvider(client.ApiClient(), karpenter.NodeClassRef(name="gpu"))
    assert provider.name is spec.NodeProviderName.KARPENTER
    assert provider._node_class_ref.name == "gpu"


def test_an_unowned_nodepool_is_never_touched() -> None:
    theirs = {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": NAME, "resourceVersion": "7"}}
    fake = FakeCustomObjects({NAME: theirs})
    with pytest.raises(base.ProviderFailed, match="not labelled"):
        _provider(fake).set_nodes(_pool(), UID, _command(2), snapshot.Snapshot())
    assert fake.calls == [("get", NAME)]
    assert fake.objects[NAME] == theirs


def test_a_nodepool_of_another_pool_is_never_touched() -> None:
    other = karpenter.nodepool(_pool(), "other-uid", SPOT, 1)
    other["metadata"]["annotations"][karpenter.POOL_REF_ANNOTATION] = "elsewhere/chat"
    other["metadata"]["resourceVersion"] = "3"
    fake = FakeCustomObjects({NAME: other})
    with pytest.raises(base.ProviderFailed, match="elsewhere/chat"):
        _provider(fake).set_nodes(_pool(), UID, _command(2), snapshot.Snapshot())
    assert fake.calls == [("get", NAME)]


def test_a_sunblend_nodepool_that_names_no_pool_is_never_touched() -> None:
    unnamed = karpenter.nodepool(_pool(), UID, SPOT, 1)
    del unnamed["metadata"]["annotations"][karpenter.POOL_REF_ANNOTATION]
    unnamed["metadata"]["resourceVersion"] = "3"
    fake = FakeCustomObjects({NAME: unnamed})
    with pytest.raises(base.ProviderFailed, match="unnamed"):
        _provider(fake).set_nodes(_pool(), UID, _command(2), snapshot.Snapshot())
    assert fake.calls == [("get", NAME)]


def test_api_errors_become_provider_failed() -> None:
    class Broken(FakeCustomObjects):
        def get_cluster_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(base.ProviderFailed, match="403 Forbidden"):
        _provider(Broken()).set_nodes(_pool(), UID, _command(1), snapshot.Snapshot())

    class Gone(FakeCustomObjects):
        def get_cluster_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise ConnectionRefusedError("refused")

    with pytest.raises(base.ProviderFailed, match="ConnectionRefusedError"):
        _provider(Gone()).set_nodes(_pool(), UID, _command(1), snapshot.Snapshot())


def test_a_nodepool_replaced_since_it_was_read_is_refused() -> None:
    fake = FakeCustomObjects()
    provider = _provider(fake)
    provider.set_nodes(_pool(), UID, _command(1), snapshot.Snapshot())
    original_get = fake.get_cluster_custom_object

    def stale_get(*args: Any, **kwargs: Any) -> dict[str, Any]:
        found = original_get(*args, **kwargs)
        fake.objects[NAME]["metadata"]["resourceVersion"] = "99"  # replaced right after the read
        return found

    fake.get_cluster_custom_object = stale_get  # type: ignore[method-assign]
    with pytest.raises(base.ProviderFailed, match="409"):
        provider.set_nodes(_pool(), UID, _command(2), snapshot.Snapshot())
