"""observe/watched.py's records, fed list answers and watch events directly: no cluster.

The reader must see through the records what it would list (test_snapshot_reader's canned
answers, listed cluster-wide as the watches list them), follow changes and deletions, and read
around records that are not synced.
"""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.observe import snapshot as reader
from sunblend.observe import watched
from tests.unit.observe.test_snapshot_reader import (
    NODES,
    NS,
    POOL,
    POOL_DEPLOYMENTS,
    POOL_PODS,
    Answers,
    cluster_answers,
    deployment,
    items,
    pod,
)

ALL_PODS = "/api/v1/pods", "sunblend.dev/pool"
ALL_DEPLOYMENTS = "/apis/apps/v1/deployments", "sunblend.dev/pool"
REGION_NODES = "/api/v1/nodes", "topology.kubernetes.io/region"
OWNER = {"apiVersion": "sunblend.dev/v1alpha1", "kind": "InferencePool", "name": "chat", "uid": "u-1"}


def _in(namespace: str, document: dict) -> dict:
    document["metadata"]["namespace"] = namespace
    return document


def watched_answers() -> dict:
    table = cluster_answers()
    pool_labels = {"sunblend.dev/pool": "chat", "sunblend.dev/slice": "slice"}
    table[ALL_PODS] = items(
        _in(NS, pod("slice-0", "gpu-spot", pool_labels)),
        _in("elsewhere", pod("other-0", "gpu-od", {"sunblend.dev/pool": "chat"})),  # same name, another namespace
    )
    table[ALL_DEPLOYMENTS] = items(_in(NS, deployment("slice", {"sunblend.dev/pool": "chat"}, [OWNER])))
    table[REGION_NODES] = table[NODES]
    return table


def listed(answers: Answers) -> watched.Watched:
    records = watched.Watched(answers)
    for reflector in (records.pods, records.deployments, records.nodes):
        reflector._relist()  # what the thread does first
    return records


def test_a_read_from_synced_records_equals_a_read_from_lists_and_lists_none_of_them():
    direct = reader.SnapshotReader(Answers(cluster_answers())).read(POOL)
    answers = Answers(watched_answers())
    records = listed(answers)
    assert records.synced
    answers.requests.clear()
    assert reader.SnapshotReader(answers, records=records).read(POOL) == direct
    asked = {(path, selector) for _, path, selector, _ in answers.requests}
    assert not asked & {NODES, POOL_PODS, POOL_DEPLOYMENTS}


def test_records_that_are_not_synced_are_read_around():
    answers = Answers(watched_answers())
    records = listed(answers)
    records.nodes.unsync()
    answers.requests.clear()
    read = reader.SnapshotReader(answers, records=records).read(POOL)
    assert read.readable
    asked = {(path, selector) for _, path, selector, _ in answers.requests}
    assert {NODES, POOL_PODS, POOL_DEPLOYMENTS} <= asked


def _node(name: str, labels: dict[str, str], unschedulable: bool = False) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1NodeSpec(unschedulable=unschedulable),
        status=client.V1NodeStatus(conditions=[client.V1NodeCondition(type="Ready", status="True")]),
    )


def test_nodes_are_found_by_every_label_of_a_selector_and_follow_label_changes_and_deletion():
    records = watched.Watched(Answers({}))
    nodes = records.nodes
    region = {"topology.kubernetes.io/region": "ap-south-1"}
    nodes.replace([_node("a", {**region, "gpu": "h100"}), _node("b", {**region, "gpu": "h100", "pool": "x"})])
    assert [r.name for r in records.nodes_selected({"gpu": "h100"})] == ["a", "b"]
    assert [r.name for r in records.nodes_selected({"gpu": "h100", "pool": "x"})] == ["b"]
    assert records.nodes_selected({}) == []
    nodes.apply("MODIFIED", _node("a", {**region, "gpu": "a100"}, unschedulable=True))
    assert [r.name for r in records.nodes_selected({"gpu": "h100"})] == ["b"]
    [moved] = records.nodes_selected({"gpu": "a100"})
    assert moved.unschedulable
    nodes.apply("DELETED", _node("b", {}))
    assert records.nodes_selected({"gpu": "h100"}) == []
    assert nodes._index.keys() == {(k, v) for k, v in {**region, "gpu": "a100"}.items()}  # nothing left behind


def test_pods_follow_watch_events_per_namespace_and_pool():
    answers = Answers(watched_answers())
    records = listed(answers)
    assert [p.name for p in records.pool_pods(NS, "chat")] == ["slice-0"]
    assert [p.name for p in records.pool_pods("elsewhere", "chat")] == ["other-0"]
    moved = client.V1Pod(
        metadata=client.V1ObjectMeta(name="slice-1", namespace=NS, labels={"sunblend.dev/pool": "chat"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="vllm")], node_name="gpu-od"),
    )
    records.pods.apply("ADDED", moved)
    assert sorted(p.name for p in records.pool_pods(NS, "chat")) == ["slice-0", "slice-1"]
    records.pods.apply("DELETED", moved)
    assert [p.name for p in records.pool_pods(NS, "chat")] == ["slice-0"]
    assert [w.name for w in records.pool_workloads(NS, "chat")] == ["slice"]
    assert records.pool_workloads(NS, "other") == []


def test_a_failed_list_leaves_the_records_unsynced_and_a_failed_watch_unsyncs_them():
    records = watched.Watched(Answers({}))  # every list is a 404
    with pytest.raises(ApiException):
        records.pods._relist()
    assert not records.pods.synced
    synced = listed(Answers(watched_answers()))
    assert synced.synced
    synced.deployments.unsync()  # what the thread does when its watch fails, until it lists again
    assert not synced.synced
