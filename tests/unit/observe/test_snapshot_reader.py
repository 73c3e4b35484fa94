"""observe/snapshot.py's SnapshotReader against canned API answers: no cluster and no network.

``Answers`` is an ``ApiClient`` whose ``call_api`` serves JSON from a table instead of the wire,
so the kubernetes client's own request building and decoding run; every request it sees is
recorded, with its timeout (from whichever of the reader's threads sent it).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import urllib.parse
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client import rest

from sunblend.api import load
from sunblend.api.spec import CapacityType
from sunblend.core import snapshot
from sunblend.observe import snapshot as reader
from tests.unit import pools

NS = "serving"
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


class Answers(client.ApiClient):
    """Serves ``table[(path, labelSelector)]`` (status, JSON body); anything else is a 404."""

    def __init__(self, table: dict[tuple[str, str | None], tuple[int, Any]]) -> None:
        super().__init__(client.Configuration(host="http://127.0.0.1:9"))
        self.table = table
        self.requests: list[tuple[str, str, str | None, object]] = []

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        parts = urllib.parse.urlsplit(url)
        selector = urllib.parse.parse_qs(parts.query).get("labelSelector", [None])[0]
        self.requests.append((method, parts.path, selector, _request_timeout))
        status, answer = self.table.get((parts.path, selector), (404, {"kind": "Status", "code": 404}))
        if isinstance(answer, Exception):
            raise answer
        response = urllib3.HTTPResponse(
            body=json.dumps(answer).encode(),
            status=status,
            reason={200: "OK", 403: "Forbidden", 404: "Not Found"}[status],
            headers={"content-type": "application/json"},
            preload_content=True,
        )
        return rest.RESTResponse(response)


def items(*objects: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"metadata": {}, "items": list(objects)}


def node(name: str, capacity: str, region: str = "ap-south-1", taints: list[dict[str, str]] | None = None) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {"topology.kubernetes.io/region": region, "karpenter.sh/capacity-type": capacity, **H100},
        },
        "spec": {"taints": taints or []},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, node_name: str, labels: dict[str, str]) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "vllm", "resources": {"requests": {"nvidia.com/gpu": "2"}}}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def deployment(name: str, labels: dict[str, str], owners: list[dict[str, str]] | None = None) -> dict:
    return {
        "metadata": {"name": name, "labels": labels, "resourceVersion": "7", "ownerReferences": owners or []},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}},
        },
        "status": {"replicas": 2, "readyReplicas": 1},
    }


POOL = load.parse_pool(
    {
        **pools.document(
            regions=[pools.region("ap-south-1")],
            gpuClasses=[{**pools.gpu_class("h100", gpus_per_node=8), "nodeSelector": H100}],
            modelServer={"tokensPerSecondPerReplica": 100, "workloadRef": {"name": "user-vllm"}},
        ),
        "metadata": {"name": "chat", "namespace": NS},
    }
)
OWNER = {"apiVersion": "sunblend.dev/v1alpha1", "kind": "InferencePool", "name": "chat", "uid": "u-1"}
NODES = "/api/v1/nodes", "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3"
POOL_PODS = f"/api/v1/namespaces/{NS}/pods", "sunblend.dev/pool=chat"
REF_PODS = f"/api/v1/namespaces/{NS}/pods", "app=user-vllm"
POOL_DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments", "sunblend.dev/pool=chat"
REF = f"/apis/apps/v1/namespaces/{NS}/deployments/user-vllm", None
HPAS = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", None
KEDA = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects", None
PDBS = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets", None


def cluster_answers() -> dict[tuple[str, str | None], tuple[int, Any]]:
    itn = {"key": "aws-node-termination-handler/spot-itn", "value": "e-1", "effect": "NoSchedule"}
    return {
        NODES: items(
            node("gpu-spot", "spot", taints=[itn]), node("gpu-od", "on-demand"), node("gpu-far", "spot", "us-east-1")
        ),
        POOL_PODS: items(pod("slice-0", "gpu-spot", {"sunblend.dev/pool": "chat", "sunblend.dev/slice": "slice"})),
        REF_PODS: items(pod("user-vllm-0", "gpu-od", {"app": "user-vllm"})),
        POOL_DEPLOYMENTS: items(deployment("slice", {"sunblend.dev/pool": "chat"}, [OWNER])),
        REF: (200, {"kind": "Deployment", **deployment("user-vllm", {})}),
        HPAS: items(
            {
                "metadata": {"name": "user-vllm"},
                "spec": {"maxReplicas": 4, "scaleTargetRef": {"kind": "Deployment", "name": "user-vllm"}},
            }
        ),
        PDBS: items(
            {
                "metadata": {"name": "user-vllm"},
                "spec": {"selector": {"matchLabels": {"app": "user-vllm"}}},
                "status": {
                    "disruptionsAllowed": 1,
                    "currentHealthy": 2,
                    "desiredHealthy": 1,
                    "expectedPods": 2,
                    "observedGeneration": 1,
                },
            }
        ),
    }


def test_one_read_of_a_pool():
    answers = Answers(cluster_answers())
    read = reader.SnapshotReader(answers).read(POOL)
    assert read.readable and read.reason == ""
    assert [(n.name, n.capacity_type, n.interruption, n.gpus, n.ready) for n in read.nodes] == [
        ("gpu-od", CapacityType.ON_DEMAND, None, 8, True),
        ("gpu-spot", CapacityType.SPOT, "aws-node-termination-handler/spot-itn", 8, True),
    ]
    assert [(p.name, p.node, p.slice_name, p.gpus) for p in read.pods] == [
        ("slice-0", "gpu-spot", "slice", 2),
        ("user-vllm-0", "gpu-od", None, 2),
    ]
    assert [(w.kind, w.name, w.replicas, w.ready_replicas, w.owned_by_pool) for w in read.workloads] == [
        ("Deployment", "slice", 2, 1, True),
        ("Deployment", "user-vllm", 2, 1, False),
    ]
    assert read.autoscaler_of("Deployment", "user-vllm") == snapshot.AutoscalerView(
        "HorizontalPodAutoscaler", "user-vllm", "Deployment", "user-vllm"
    )
    assert read.budgets == (snapshot.BudgetView("user-vllm", {"app": "user-vllm"}, 1),)
    # KEDA is not installed (404): no ScaledObjects, and still readable.
    assert all(a.kind == "HorizontalPodAutoscaler" for a in read.autoscalers)
    assert {(method, timeout) for method, _, _, timeout in answers.requests} == {("GET", 10)}
    assert {(path, selector) for _, path, selector, _ in answers.requests} == {
        NODES,
        POOL_PODS,
        REF_PODS,
        POOL_DEPLOYMENTS,
        REF,
        HPAS,
        KEDA,
        PDBS,
    }


def test_keda_scaled_objects_are_autoscalers():
    table = cluster_answers()
    table[KEDA] = items(
        {"apiVersion": "keda.sh/v1alpha1", "metadata": {"name": "so"}, "spec": {"scaleTargetRef": {"name": "slice"}}}
    )
    read = reader.SnapshotReader(Answers(table)).read(POOL)
    assert read.autoscaler_of("Deployment", "slice") == snapshot.AutoscalerView(
        "ScaledObject", "so", "Deployment", "slice"
    )


def test_a_missing_workload_ref_is_absent_not_an_error():
    table = cluster_answers()
    del table[REF]
    read = reader.SnapshotReader(Answers(table)).read(POOL)
    assert read.readable
    assert read.workload("Deployment", "user-vllm") is None
    assert [p.name for p in read.pods] == ["slice-0"]


def test_a_statefulset_workload_ref_is_read_as_one():
    document = POOL.model_dump(by_alias=True, mode="json")
    document["spec"]["modelServer"]["workloadRef"] = {"kind": "StatefulSet", "name": "user-vllm"}
    table = cluster_answers()
    table[(f"/apis/apps/v1/namespaces/{NS}/statefulsets/user-vllm", None)] = (
        200,
        {"kind": "StatefulSet", **deployment("user-vllm", {})},
    )
    read = reader.SnapshotReader(Answers(table)).read(load.parse_pool(document))
    assert read.readable, read.reason
    workload = read.workload("StatefulSet", "user-vllm")
    assert workload is not None and workload.replicas == 2


def test_a_class_without_a_selector_lists_no_nodes():
    document = POOL.model_dump(by_alias=True, mode="json")
    document["spec"]["gpuClasses"][0]["nodeSelector"] = {}
    answers = Answers(cluster_answers())
    read = reader.SnapshotReader(answers).read(load.parse_pool(document))
    assert read.readable and read.nodes == ()
    assert not any(path == "/api/v1/nodes" for _, path, _, _ in answers.requests)


@pytest.mark.parametrize(
    ("broken", "answer", "reason"),
    [
        (
            PDBS,
            (403, {"kind": "Status", "code": 403}),
            f"listing PodDisruptionBudgets in namespace {NS} failed: the API server answered 403 Forbidden",
        ),
        (
            POOL_PODS,
            (200, urllib3.exceptions.MaxRetryError(None, "/api", ConnectionRefusedError("Connection refused"))),
            "listing pods (sunblend.dev/pool=chat) in namespace serving failed: "
            "the API server could not be reached: Connection refused",
        ),
        (NODES, (200, TimeoutError("timed out")), "the API server could not be reached: timed out"),
        (KEDA, (403, {"kind": "Status", "code": 403}), "listing KEDA ScaledObjects in namespace serving failed"),
        (HPAS, (404, {}), "listing HorizontalPodAutoscalers in namespace serving failed: the API server answered 404"),
        (
            NODES,
            items({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "no-effect"}]}}),
            "listing nodes (nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3) failed: the answer could not be read",
        ),
    ],
    ids=["forbidden", "unreachable", "timeout", "keda forbidden", "hpa api missing", "undecodable"],
)
def test_a_failed_request_makes_an_unreadable_snapshot_that_says_why(broken, answer, reason):
    table = cluster_answers()
    table[broken] = answer
    read = reader.SnapshotReader(Answers(table)).read(POOL)
    assert read == snapshot.Snapshot(readable=False, reason=read.reason)
    assert reason in read.reason


def test_the_namespace_wide_lists_are_shared_by_the_pools_of_a_namespace_for_their_max_age():
    now = [100.0]
    shared = reader.SharedLists(max_age_seconds=5, clock=lambda: now[0])
    table = cluster_answers()
    table[(POOL_PODS[0], "sunblend.dev/pool=other")] = items()
    table[(POOL_DEPLOYMENTS[0], "sunblend.dev/pool=other")] = items()
    answers = Answers(table)
    pool_reader = reader.SnapshotReader(answers, shared=shared)
    first = pool_reader.read(POOL)
    other = POOL.model_copy(update={"metadata": POOL.metadata.model_copy(update={"name": "other"})})
    now[0] += 5
    second = pool_reader.read(other)
    assert second.readable, second.reason
    assert first.budgets == second.budgets and first.autoscalers == second.autoscalers
    shared_paths = {HPAS, KEDA, PDBS}
    listed = [(path, selector) for _, path, selector, _ in answers.requests]
    assert sorted(r for r in listed if r in shared_paths) == sorted(shared_paths)  # once each for both pools
    assert listed.count(POOL_DEPLOYMENTS) == 1 and (POOL_DEPLOYMENTS[0], "sunblend.dev/pool=other") in listed
    now[0] += 0.5  # older than the max age now: listed again
    pool_reader.read(POOL)
    listed = [(path, selector) for _, path, selector, _ in answers.requests]
    assert all(listed.count(path) == 2 for path in shared_paths)


def test_a_failed_shared_list_is_not_kept():
    table = cluster_answers()
    table[PDBS] = (403, {"kind": "Status", "code": 403})
    answers = Answers(table)
    pool_reader = reader.SnapshotReader(answers, shared=reader.SharedLists(clock=lambda: 0.0))
    assert not pool_reader.read(POOL).readable
    table[PDBS] = cluster_answers()[PDBS]
    read = pool_reader.read(POOL)
    assert read.readable and [b.name for b in read.budgets] == ["user-vllm"]


def test_one_fetch_answers_the_callers_that_arrive_while_it_runs():
    shared = reader.SharedLists(max_age_seconds=60)
    started, release = threading.Event(), threading.Event()
    fetched: list[int] = []

    def fetch() -> tuple[str, ...]:
        fetched.append(1)
        started.set()
        release.wait(5)
        return ("pdb",)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(shared.get, "budgets", NS, fetch)
        assert started.wait(5)
        waiting = [pool.submit(shared.get, "budgets", NS, fetch) for _ in range(3)]
        release.set()
        assert [f.result(5) for f in [first, *waiting]] == [("pdb",)] * 4
    assert fetched == [1]
    assert shared.get("budgets", "elsewhere", lambda: ("other",)) == ("other",)  # per namespace


def test_the_first_failure_in_a_fixed_order_is_the_reason():
    table = cluster_answers()
    table[PDBS] = (403, {"kind": "Status", "code": 403})
    table[POOL_DEPLOYMENTS] = (403, {"kind": "Status", "code": 403})
    for _ in range(5):  # whichever request fails first in time
        read = reader.SnapshotReader(Answers(table)).read(POOL)
        assert read.reason.startswith("listing Deployments (sunblend.dev/pool=chat) in namespace serving failed")
