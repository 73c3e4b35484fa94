"""Status built from a plan: conditions as metav1.Condition, transitions, capacity shortfalls."""

from __future__ import annotations

import datetime as dt

from sunblend.api.spec import CapacityType
from sunblend.core import blend, nodes, report
from tests.unit import pools

NOW = dt.datetime(2026, 11, 23, 12, 5, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=10)


def _plan(**spec_fields):
    problem = pools.blend_problem(now=NOW, **spec_fields)
    return blend.plan(problem)


def _by_type(status):
    return {c.type: c for c in status.conditions}


def test_a_planned_pool_is_ready_with_observed_generation():
    status = report.planned_status(_plan(), 3, NOW, [], None)
    conditions = _by_type(status)
    assert conditions["Ready"].status == "True" and conditions["Ready"].reason == "Planned"
    assert conditions["Planned"].status == "True"
    assert conditions["CapacityAvailable"].status == "Unknown"
    assert {c.observed_generation for c in status.conditions} == {3}
    assert status.planned_hour == "2026-11-23T12:00:00Z"
    assert status.current and len(status.next_hours) == 24


def test_transition_time_moves_only_when_the_status_changes():
    first = report.planned_status(_plan(), 1, NOW, [], None)
    previous = [c.model_dump(by_alias=True) for c in first.conditions]
    again = report.planned_status(_plan(), 2, LATER, previous, None)
    assert _by_type(again)["Ready"].last_transition_time == "2026-11-23T12:05:00Z"
    broken = report.invalid_status("spec.x: bad", 3, LATER, previous)
    assert _by_type(broken)["Ready"].last_transition_time == "2026-11-23T12:15:00Z"
    assert _by_type(broken)["Ready"].reason == "InvalidSpec"


def test_an_infeasible_plan_is_not_ready_and_says_why():
    plan = _plan(policy={"budgetDollarsPerHour": 1})
    status = report.planned_status(plan, 1, NOW, [], {})
    ready = _by_type(status)["Ready"]
    assert (ready.status, ready.reason) == ("False", "Infeasible")
    assert ready.message.startswith("budget 1 $/h is below the cheapest feasible plan")
    assert status.current == []


def test_capacity_shortfall_names_the_missing_nodes():
    plan = _plan(gpuClasses=[pools.gpu_class(spot=1.0, onDemand=3.0)], regions=[pools.region("r1", base=1000)])
    present = {("r1", "gpu", CapacityType.ON_DEMAND): 100}
    status = report.planned_status(plan, 1, NOW, [], present)
    capacity = _by_type(status)["CapacityAvailable"]
    assert (capacity.status, capacity.reason) == ("False", "CapacityShort")
    assert capacity.message == "r1 gpu spot: 0/10 nodes"


def test_nodes_are_counted_by_region_class_and_configured_capacity_type():
    pool_spec = pools.pool_spec(
        regions=[pools.region("eu-west-2")],
        gpuClasses=[{**pools.gpu_class("h100"), "nodeSelector": {"nvidia.com/gpu.product": "H100"}}],
    )
    labels = [
        {
            "topology.kubernetes.io/region": "eu-west-2",
            "nvidia.com/gpu.product": "H100",
            "karpenter.sh/capacity-type": "spot",
        },
        {
            "topology.kubernetes.io/region": "eu-west-2",
            "nvidia.com/gpu.product": "H100",
            "eks.amazonaws.com/capacityType": "ON_DEMAND",
        },
        {
            "topology.kubernetes.io/region": "eu-west-2",
            "nvidia.com/gpu.product": "H100",
            "cloud.google.com/gke-spot": "true",
        },
        {
            "topology.kubernetes.io/region": "eu-west-2",
            "nvidia.com/gpu.product": "H100",
            "karpenter.sh/capacity-type": "reserved",
        },
        {"topology.kubernetes.io/region": "us-east-1", "nvidia.com/gpu.product": "H100"},
        {"topology.kubernetes.io/region": "eu-west-2", "nvidia.com/gpu.product": "A100"},
    ]
    assert nodes.count(pool_spec, labels, nodes.DEFAULT_RULES) == {
        ("eu-west-2", "h100", CapacityType.SPOT): 2,
        ("eu-west-2", "h100", CapacityType.ON_DEMAND): 1,
        ("eu-west-2", "h100", CapacityType.COMMITTED): 1,
    }
    custom = nodes.rules_from_config([{"label": "example.com/lifecycle", "values": {"preemptible": "spot"}}])
    assert nodes.capacity_type({"example.com/lifecycle": "preemptible"}, custom) is CapacityType.SPOT
