"""The node-change cap when more nodes run now than their offer allows (regression).

Two committed nodes run while the commitment covers one GPU (one 1-GPU node). Every plan runs at
most one committed node, so going into the first hour it removes the other: one node change,
counted against ``maxNodeChangesPerHour`` like any other (``core.changes``, and the reference
model in ``test_reference``). The planner's ramp used to keep the current nodes as they were,
above the commitment, and report that plan Optimal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from sunblend.api.spec import CapacityType
from sunblend.core import blend, check, coupled, problem
from sunblend.core.plan import SolveStatus
from tests.unit import pools
from tests.unit.core.test_reference import assert_agrees

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
COMMITTED = ("r0", "g0", CapacityType.COMMITTED)
ON_DEMAND = ("r0", "g0", CapacityType.ON_DEMAND)


def _document(cap: int, hours: int = 1, demand: float = 0) -> dict[str, Any]:
    """The hypothesis draw that failed: no demand, one commitment of 1 GPU of g0 in r0."""
    return {
        "modelServer": {"gpusPerReplica": 1, "tokensPerSecondPerReplica": 500},
        "regions": [pools.region("r0", base=demand, peak=demand, busy=(0, 1))],
        "gpuClasses": [
            pools.gpu_class("g0", onDemand=0.5, spot=0.075, committed=0.075),
            {**pools.gpu_class("g1", onDemand=0.5), "regionPrices": [{"region": "r0", "onDemand": 0.5}]},
        ],
        "commitments": [{"gpuClass": "g0", "region": "r0", "gpus": 1}],
        "policy": {
            "headroom": 0.0,
            "maxSpotFraction": 0.0,
            "spotLossServedFraction": 0.0,
            "minReplicasPerRegion": 0,
            "routing": {"maxLatencyMs": 0, "latencies": []},
            "maxNodeChangesPerHour": cap,
        },
        "planning": {"horizonHours": hours, "relativeGap": 0},
    }


def _plan(document: dict[str, Any], current: dict[problem.OfferKey, int]) -> tuple[problem.BlendProblem, Any]:
    blend_problem = problem.from_spec(pools.pool_spec(**document), NOW, current_nodes=current)
    return blend_problem, blend.plan(blend_problem)


def _nodes(plan: Any, hour: int = 0) -> dict[problem.OfferKey, int]:
    return {(a.region, a.gpu_class, a.capacity_type): a.nodes for a in plan.allocations_at(hour) if a.nodes}


def test_the_change_that_removes_a_node_above_the_commitment_is_spent_first() -> None:
    # Cap 1; running 2 committed and 1 on-demand. The one change must remove the second committed
    # node, so the on-demand node stays: $0.075 sunk + $0.50 on-demand.
    current = {COMMITTED: 2, ON_DEMAND: 1}
    blend_problem, plan = _plan(_document(cap=1), current)
    assert plan.status is SolveStatus.OPTIMAL
    assert _nodes(plan) == {COMMITTED: 1, ON_DEMAND: 1}
    assert plan.total_dollars == pytest.approx(0.575)
    assert check.violations(blend_problem, plan) == []
    assert_agrees(pools.pool_spec(**_document(cap=1)), NOW, current)


def test_no_plan_keeps_a_cap_of_zero_when_a_node_above_the_commitment_runs() -> None:
    current = {COMMITTED: 2}
    _, plan = _plan(_document(cap=0), current)
    assert plan.status is SolveStatus.INFEASIBLE
    assert plan.message == (
        "maxNodeChangesPerHour 0 is too low: 2 committed g0 nodes run in r0 but its commitment (1 GPU) can "
        "run only 1; removing the 1 node(s) above that takes 1 node change(s) in the first hour"
    )
    assert_agrees(pools.pool_spec(**_document(cap=0)), NOW, current)


def test_without_the_early_check_the_search_still_finds_no_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    # The candidates themselves must not keep nodes above an offer's limit (the ramp used to).
    monkeypatch.setattr(coupled, "forced_removals", lambda _: {})
    _, plan = _plan(_document(cap=0), {COMMITTED: 2})
    assert plan.status is SolveStatus.INFEASIBLE
    assert "maxNodeChangesPerHour 0" in plan.message


def test_the_ramp_removes_nodes_above_the_commitment_within_the_cap() -> None:
    # Three hours, 500 tok/s, cap 2; running 4 committed nodes on a 1-node commitment: 3 must go
    # in the first hour, one more change than the cap allows: no plan.
    current = {COMMITTED: 4}
    _, plan = _plan(_document(cap=2, hours=3, demand=500), current)
    assert plan.status is SolveStatus.INFEASIBLE
    # Cap 3: the first hour spends all three changes on them, and the committed node serves.
    blend_problem, plan = _plan(_document(cap=3, hours=3, demand=500), current)
    assert plan.status is SolveStatus.OPTIMAL
    assert all(_nodes(plan, t) == {COMMITTED: 1} for t in range(3))
    assert check.violations(blend_problem, plan) == []
    assert_agrees(pools.pool_spec(**_document(cap=3, hours=3, demand=500)), NOW, current)


def test_the_checker_counts_the_first_hours_changes_against_the_current_nodes() -> None:
    current = {COMMITTED: 1, ON_DEMAND: 2}
    blend_problem, plan = _plan(_document(cap=3), current)
    # No demand: every node goes (3 changes, within the cap).
    assert plan.status is SolveStatus.OPTIMAL and _nodes(plan) == {}
    assert check.violations(blend_problem, plan) == []
    # The same plan against a cap it breaks going into the first hour.
    tighter = dataclasses.replace(blend_problem, max_node_changes_per_hour=2)
    assert check.violations(tighter, plan) == ["hour 0: 3 node changes above maxNodeChangesPerHour 2"]
    # Nothing known of what runs now: the first hour is free to change.
    assert check.violations(dataclasses.replace(tighter, current_nodes={}), plan) == []
