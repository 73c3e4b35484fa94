"""Commands re-checked against a fresh snapshot: stale ones are set aside with a reason, fresh ones kept."""

from __future__ import annotations

from sunblend.actuate import manifests, validate
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot

POOL = "chat"
SPOT = ("ap-south-1", "h100", CapacityType.SPOT)
ON_DEMAND = ("ap-south-1", "h100", CapacityType.ON_DEMAND)
SPOT_SLICE = manifests.slice_name(POOL, SPOT)


def _node(name: str, offer=SPOT, unschedulable: bool = False, interruption: str | None = None) -> snapshot.NodeView:
    region, gpu_class, capacity_type = offer
    return snapshot.NodeView(
        name, region, gpu_class, capacity_type, ready=True, unschedulable=unschedulable, interruption=interruption
    )


def _slice(replicas: int, name: str = SPOT_SLICE) -> snapshot.WorkloadView:
    return snapshot.WorkloadView("Deployment", name, replicas, replicas, owned_by_pool=True)


def _hpa(target: str, kind: str = "Deployment") -> snapshot.AutoscalerView:
    return snapshot.AutoscalerView("HorizontalPodAutoscaler", "chat-hpa", kind, target)


def _check(command_list, fresh):
    return validate.validate(command_list, fresh, POOL)


def test_a_command_whose_premise_still_holds_is_kept():
    scale = commands.ScaleSlice(SPOT, 4, observed=2, reason="peak")
    result = _check([scale], snapshot.Snapshot(workloads=(_slice(2),)))
    assert result.valid == (scale,) and result.stale == ()


def test_a_scale_decided_on_replicas_that_have_since_changed_is_stale():
    scale = commands.ScaleSlice(SPOT, 4, observed=2, reason="peak")
    result = _check([scale], snapshot.Snapshot(workloads=(_slice(3),)))
    assert result.valid == ()
    [(command, reason)] = result.stale
    assert command is scale
    assert "3 replicas now, not 2" in reason


def test_a_new_slice_is_valid_only_while_it_is_still_absent():
    create = commands.ScaleSlice(SPOT, 2, observed=None, reason="new offer")
    assert _check([create], snapshot.Snapshot()).valid == (create,)
    [(_, reason)] = _check([create], snapshot.Snapshot(workloads=(_slice(1),))).stale
    assert "not absent" in reason


def test_a_slice_an_autoscaler_now_targets_is_left_to_it():
    scale = commands.ScaleSlice(SPOT, 4, observed=2, reason="peak")
    fresh = snapshot.Snapshot(workloads=(_slice(2),), autoscalers=(_hpa(SPOT_SLICE),))
    [(_, reason)] = _check([scale], fresh).stale
    assert "HorizontalPodAutoscaler chat-hpa" in reason


def test_a_users_workload_follows_the_same_rules():
    scale = commands.ScaleWorkload("StatefulSet", "llm", 5, observed=3, reason="peak")
    workload = snapshot.WorkloadView("StatefulSet", "llm", 3, 3)
    assert _check([scale], snapshot.Snapshot(workloads=(workload,))).valid == (scale,)
    assert _check([scale], snapshot.Snapshot(workloads=(workload,), autoscalers=(_hpa("llm", "StatefulSet"),))).stale
    assert _check([scale], snapshot.Snapshot()).stale  # the workload was deleted


def test_draining_a_vanished_node_is_stale():
    drain = commands.Drain("gpu-1", SPOT, pods=("p1",), reason="consolidate")
    cordon = commands.Cordon("gpu-1", SPOT, reason="consolidate")
    result = _check([cordon, drain], snapshot.Snapshot(nodes=(_node("gpu-2"),)))
    assert result.valid == ()
    assert [reason for _, reason in result.stale] == ["node gpu-1 is gone", "node gpu-1 is gone"]


def test_a_node_whose_offer_changed_is_not_touched():
    cordon = commands.Cordon("gpu-1", SPOT, reason="consolidate")
    [(_, reason)] = _check([cordon], snapshot.Snapshot(nodes=(_node("gpu-1", ON_DEMAND),))).stale
    assert "ap-south-1/h100/on-demand now" in reason


def test_a_drain_needs_a_cordoned_node_or_a_cordon_before_it_in_the_batch():
    drain = commands.Drain("gpu-1", SPOT, pods=("p1",), reason="consolidate")
    cordon = commands.Cordon("gpu-1", SPOT, reason="consolidate")
    schedulable = snapshot.Snapshot(nodes=(_node("gpu-1"),))
    assert "schedulable again" in _check([drain], schedulable).stale[0][1]
    assert _check([drain, cordon], schedulable).valid == (cordon,)  # the cordon must come first
    assert _check([cordon, drain], schedulable).valid == (cordon, drain)
    assert _check([drain], snapshot.Snapshot(nodes=(_node("gpu-1", unschedulable=True),))).valid == (drain,)


def test_set_nodes_counts_only_uninterrupted_nodes_of_its_offer():
    interrupted = _node("c", interruption="aws-node-termination-handler/spot-itn")
    fresh = snapshot.Snapshot(nodes=(_node("a"), _node("b"), interrupted, _node("d", ON_DEMAND)))
    keep = commands.SetNodes(SPOT, 3, observed=2, reason="peak")
    stale = commands.SetNodes(SPOT, 4, observed=3, reason="peak")
    result = _check([keep, stale], fresh)
    assert result.valid == (keep,)
    assert result.stale[0][1] == "ap-south-1/h100/spot has 2 nodes now, not 3 as decided"


def test_nothing_is_valid_when_the_cluster_could_not_be_read():
    scale = commands.ScaleSlice(SPOT, 4, observed=None, reason="peak")
    result = _check([scale], snapshot.Snapshot(readable=False, reason="connection refused"))
    assert result.valid == ()
    assert result.stale == ((scale, "the cluster could not be read: connection refused"),)


def test_the_order_of_valid_commands_is_kept():
    fresh = snapshot.Snapshot(nodes=(_node("gpu-1"),), workloads=(_slice(1),))
    batch = [
        commands.SetNodes(SPOT, 2, observed=1, reason="peak"),
        commands.ScaleSlice(SPOT, 2, observed=1, reason="peak"),
        commands.Cordon("gpu-1", SPOT, reason="x"),
    ]
    assert _check(batch, fresh).valid == tuple(batch)
