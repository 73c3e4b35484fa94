"""The kwok provider's pure parts: the nodes it makes, and which it may delete."""

from __future__ import annotations

import datetime as dt

from kubernetes import client

from sunblend.actuate.providers import kwok
from sunblend.api import load
from sunblend.api.spec import CapacityType
from sunblend.core import snapshot
from tests.unit import pools

SPOT = ("r1", "gpu", CapacityType.SPOT)


def _pool():
    document = pools.document(
        gpuClasses=[{**pools.gpu_class(gpus_per_node=8, spot=1.0), "nodeSelector": {"gpu": "h100"}}]
    )
    document["metadata"]["namespace"] = "ns"
    return load.parse_pool(document)


def test_a_node_carries_region_capacity_type_class_labels_and_gpus_and_boots_behind_a_taint():
    at = dt.datetime(2026, 11, 23, 12, 3, tzinfo=dt.UTC)
    node = kwok.node_manifest(_pool(), SPOT, "kwok-t-r1-gpu-spot-0", at)
    labels = node["metadata"]["labels"]
    assert labels["topology.kubernetes.io/region"] == "r1"
    assert labels["karpenter.sh/capacity-type"] == "spot"
    assert labels["gpu"] == "h100"
    assert (labels["sunblend.dev/provider"], labels["sunblend.dev/pool"], labels["sunblend.dev/pool-namespace"]) == (
        "kwok",
        "t",
        "ns",
    )
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert {"key": "sunblend.dev/provisioning", "value": "true", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["metadata"]["annotations"]["sunblend.dev/ready-at"] == "2026-11-23T12:03:00+00:00"
    ready = kwok.node_manifest(_pool(), SPOT, "n", None)
    assert all(t["key"] != "sunblend.dev/provisioning" for t in ready["spec"]["taints"])


def test_only_its_own_empty_nodes_are_deleted_booting_and_newest_first():
    own = {"sunblend.dev/provider": "kwok", "sunblend.dev/pool": "t", "sunblend.dev/pool-namespace": "ns"}
    nodes = (
        snapshot.NodeView("kwok-0", *SPOT, True, labels=own),
        snapshot.NodeView("kwok-1", *SPOT, True, labels=own),
        snapshot.NodeView("kwok-2", *SPOT, False, labels=own),
        snapshot.NodeView("busy", *SPOT, True, labels=own),
        snapshot.NodeView("users", *SPOT, True, labels={}),
    )
    view = snapshot.Snapshot(nodes=nodes, pods=(snapshot.PodView("p", "busy", "slice", True),))
    assert kwok.removable(_pool(), SPOT, view, 2) == ["kwok-2", "kwok-1"]
    assert kwok.removable(_pool(), SPOT, view, 10) == ["kwok-2", "kwok-1", "kwok-0"]


def test_names_are_deterministic_and_fit_a_label():
    long = load.parse_pool({**pools.document(), "metadata": {"name": "a" * 60}})
    name = kwok.node_name(long, SPOT, 3)
    assert len(name) <= 63 and name == kwok.node_name(long, SPOT, 3)


class _NodeApi:
    """Stands in for CoreV1Api: reads give the stored nodes, patches are recorded."""

    def __init__(self, stored):
        self.stored = stored
        self.patched = []

    def read_node(self, name, **_):
        return self.stored[name]

    def patch_node(self, name, body, **_):
        self.patched.append((name, body))


def _stored(name, taints):
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, annotations={"sunblend.dev/ready-at": "2026-11-23T12:00:00+00:00"}),
        spec=client.V1NodeSpec(taints=[client.V1Taint(key=k, value="true", effect="NoSchedule") for k in taints]),
    )


def test_settle_lifts_only_the_provisioning_taint_and_leaves_a_booted_node_that_went_not_ready_alone():
    own = {"sunblend.dev/provider": "kwok", "sunblend.dev/pool": "t", "sunblend.dev/pool-namespace": "ns"}
    view = snapshot.Snapshot(
        nodes=(
            snapshot.NodeView("booting", *SPOT, False, labels=own),
            snapshot.NodeView("flapping", *SPOT, False, labels=own),  # booted long ago, its kubelet went NotReady
            snapshot.NodeView("ready", *SPOT, True, labels=own),
        )
    )
    api = _NodeApi(
        {
            "booting": _stored("booting", ["sunblend.dev/provisioning", "nvidia.com/gpu"]),
            "flapping": _stored("flapping", ["node.kubernetes.io/not-ready"]),
        }
    )
    provider = kwok.KwokProvider.__new__(kwok.KwokProvider)
    provider._core = api
    booted = provider.settle(_pool(), view, dt.datetime(2026, 11, 23, 12, 5, tzinfo=dt.UTC))
    assert booted == ["kwok: node booting has booted"]
    assert api.patched == [
        ("booting", {"spec": {"taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]}})
    ]
