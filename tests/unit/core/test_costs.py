"""The planner's dollars on pools small enough to price by hand (issue: cost semantics)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from sunblend.api.spec import CapacityType
from sunblend.core import blend, greedy, report
from sunblend.core.plan import SolveStatus
from tests.unit import pools

POLICY = {"headroom": 0, "maxSpotFraction": 1, "spotLossServedFraction": 0, "minReplicasPerRegion": 0}
ONE_HOUR = {"horizonHours": 1}


def _eight_gpu_class(**prices: float) -> dict:
    return {**pools.gpu_class("h100", gpus_per_node=8, **prices), "tokensPerSecondPerReplica": 100}


def test_a_commitment_that_is_not_whole_nodes_is_charged_for_every_gpu():
    # 12 committed GPUs at $4.30 on 8-GPU nodes: $51.60/h, paid whatever runs. No demand at all.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=0)],
        gpuClasses=[_eight_gpu_class(committed=4.30, onDemand=10.0)],
        commitments=[{"gpuClass": "h100", "region": "r1", "gpus": 12}],
        policy=POLICY,
        planning=ONE_HOUR,
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.OPTIMAL
    assert plan.hour_costs[0].committed_dollars == pytest.approx(51.60)
    assert plan.cost_dollars_per_hour == pytest.approx(51.60)
    assert any("12 committed h100 GPUs in r1 fill 1 of 2" in note for note in plan.notes)


def test_four_committed_gpus_on_an_eight_gpu_node_cost_their_price_not_nothing():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=0)],
        gpuClasses=[_eight_gpu_class(committed=4.30, onDemand=10.0)],
        commitments=[{"gpuClass": "h100", "region": "r1", "gpus": 4}],
        policy=POLICY,
        planning=ONE_HOUR,
    )
    assert blend.plan(problem).cost_dollars_per_hour == pytest.approx(4 * 4.30)


def test_the_partial_node_runs_with_its_uncovered_gpus_billed_on_demand():
    # 1,500 tok/s needs 15 replicas: two 8-GPU nodes. 12 GPUs are committed ($4.30 each, sunk);
    # the second node's 4 uncovered GPUs cost 4 x $10 on-demand = $40, cheaper than a whole
    # on-demand node ($80). Total: 51.60 + 40 = $91.60.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=1500)],
        gpuClasses=[_eight_gpu_class(committed=4.30, onDemand=10.0)],
        commitments=[{"gpuClass": "h100", "region": "r1", "gpus": 12}],
        policy=POLICY,
        planning=ONE_HOUR,
    )
    plan = blend.plan(problem)
    assert plan.gpus_by_capacity_type(0) == {
        CapacityType.COMMITTED: 16,
        CapacityType.SPOT: 0,
        CapacityType.ON_DEMAND: 0,
    }
    assert plan.hour_costs[0].committed_dollars == pytest.approx(51.60)
    assert plan.hour_costs[0].on_demand_dollars == pytest.approx(40.0)
    assert plan.cost_dollars_per_hour == pytest.approx(91.60)
    assert plan.commitment_advice == ()


def test_a_commitment_where_the_class_is_not_offered_is_still_paid_and_noted():
    # The class runs only in r1; 8 GPUs committed in r2 at $2 cost $16/h and run nothing.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100), pools.region("r2", base=0)],
        gpuClasses=[{**pools.gpu_class(committed=2.0, onDemand=3.0), "regions": ["r1"]}],
        commitments=[{"gpuClass": "gpu", "region": "r2", "gpus": 8}],
        policy=POLICY,
        planning=ONE_HOUR,
    )
    plan = blend.plan(problem)
    assert plan.hour_costs[0].committed_dollars == pytest.approx(16.0)
    assert plan.cost_dollars_per_hour == pytest.approx(16.0 + 3.0)  # one on-demand GPU serves r1
    assert any("8 committed gpu GPUs in r2 are paid for" in note for note in plan.notes)


def test_a_region_price_entry_with_only_on_demand_keeps_the_class_spot_and_committed_prices():
    # The r1 entry overrides only onDemand; spot at $1 stays, so the plan buys spot.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100)],
        gpuClasses=[
            {
                **pools.gpu_class(committed=2.0, spot=1.0, onDemand=3.0),
                "regionPrices": [{"region": "r1", "onDemand": 5.0}],
            }
        ],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 1}],
        policy={**POLICY, "spotLossServedFraction": 0},
        planning=ONE_HOUR,
    )
    plan = blend.plan(problem)
    # 100 tok/s is one replica, served by the committed GPU ($2, sunk).
    assert plan.hour_costs[0].committed_dollars == pytest.approx(2.0)
    assert {o.capacity_type for o in problem.offers} == set(CapacityType)
    assert next(o for o in problem.offers if o.capacity_type is CapacityType.ON_DEMAND).dollars_per_gpu_hour == 5.0


def test_the_all_on_demand_baseline_serves_unserved_regions_demand_where_the_plan_routes_it():
    # r2 has users but no GPU class; it is served from r1. All on-demand, the plan IS the baseline.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100), pools.region("r2", base=300)],
        gpuClasses=[{**pools.gpu_class(onDemand=3.0), "regions": ["r1"]}],
        policy={
            **POLICY,
            "routing": {"maxLatencyMs": 100, "latencies": [{"from": "r1", "to": "r2", "milliseconds": 50}]},
        },
        planning=ONE_HOUR,
    )
    plan = blend.plan(problem)
    assert plan.cost_dollars_per_hour == pytest.approx(4 * 3.0)
    assert plan.all_on_demand_dollars_per_hour == pytest.approx(4 * 3.0)
    assert plan.savings_ratio == pytest.approx(0.0)
    assert plan.savings_ratio_this_hour == pytest.approx(0.0)


def test_the_status_labels_this_hours_figures_and_the_horizons():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100, peak=300, busy=(12, 13))],
        gpuClasses=[pools.gpu_class(spot=1.0, onDemand=3.0)],
        policy=POLICY,
        planning={"horizonHours": 2},
    )
    plan = blend.plan(problem)
    # Hour 0 (12:00, busy): 3 spot GPUs, $3 against $9 on-demand. Hour 1: 1 spot GPU, $1 against $3.
    assert plan.cost_dollars_per_hour == pytest.approx(3.0) and plan.all_on_demand_dollars_per_hour == 9.0
    status = report.planned_status(plan, 1, pools.MONDAY_NOON, [], None)
    assert status.cost_dollars_per_hour == 3.0 and status.on_demand_cost_dollars_per_hour == 9.0
    assert status.savings_percent == pytest.approx(66.7)
    assert status.horizon_cost_dollars == 4.0 and status.horizon_on_demand_cost_dollars == 12.0
    assert status.horizon_savings_percent == pytest.approx(66.7) and status.horizon_hours == 2
    assert status.gap_percent is not None and 0 <= status.gap_percent <= 1.0  # proven, as the status says
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert "this hour $3.00, 66.7% below all on-demand ($9.00)" in ready.message
    assert "over the 2 h horizon $4.00, 66.7% below all on-demand ($12.00)" in ready.message


def test_a_greedy_plan_over_budget_is_degraded_and_says_which_limit_it_breaks():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=500)],
        gpuClasses=[pools.gpu_class(onDemand=3.0)],
        policy={**POLICY, "budgetDollarsPerHour": 10},
        planning=ONE_HOUR,
    )
    plan = greedy.plan(problem)
    assert plan.status is SolveStatus.DEGRADED and plan.has_solution and not plan.keeps_every_constraint
    assert "policy.budgetDollarsPerHour ($10.00/h) in 1 of 1 hour(s), up to $15.00/h" in plan.message
    status = report.planned_status(plan, 1, pools.MONDAY_NOON, [], None)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == report.REASON_DEGRADED


def test_a_greedy_plan_within_every_limit_stays_feasible():
    problem = pools.blend_problem(regions=[pools.region("r1", base=500)], policy=POLICY, planning=ONE_HOUR)
    plan = greedy.plan(problem)
    assert plan.status is SolveStatus.FEASIBLE and "keeps every constraint" in plan.message


def test_max_latency_zero_means_local_only_even_over_a_zero_millisecond_entry():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100), pools.region("r2", base=100)],
        gpuClasses=[{**pools.gpu_class(onDemand=3.0), "regions": ["r1"]}],
        policy={**POLICY, "routing": {"maxLatencyMs": 0, "latencies": [{"from": "r1", "to": "r2", "milliseconds": 0}]}},
        planning=ONE_HOUR,
    )
    assert problem.routes == frozenset({("r1", "r1"), ("r2", "r2")})
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.INFEASIBLE and "region r2" in plan.message


def test_sizing_never_recommends_a_change_that_saves_nothing():
    # Committed at $2.90 against on-demand $3: holding more for a demand that runs 1 hour in 24 never pays.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100, peak=500, busy=(12, 13))],
        gpuClasses=[pools.gpu_class(committed=2.9, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 1}],
        policy=POLICY,
        planning={"horizonHours": 24, "mode": "SizeCommitments"},
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.OPTIMAL
    assert [(a.held_gpus, a.recommended_gpus) for a in plan.commitment_advice] == [(1, 1)]
    assert plan.savings_from_sizing_dollars == pytest.approx(0.0)


def test_sizing_recommends_commitments_that_pay_and_says_what_they_save():
    # 300 tok/s all day: 3 GPUs. Committed $1 against on-demand $3 saves $2 per GPU-hour: $144 a day.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=300)],
        gpuClasses=[pools.gpu_class(committed=1.0, onDemand=3.0)],
        policy=POLICY,
        planning={"horizonHours": 24, "mode": "SizeCommitments"},
    )
    plan = blend.plan(problem)
    assert [(a.held_gpus, a.recommended_gpus) for a in plan.commitment_advice] == [(0, 3)]
    assert plan.savings_from_sizing_dollars == pytest.approx(144.0)


def test_a_coupled_plan_is_never_worse_than_a_constant_plan_anyone_could_write():
    # Demand swings 100 <-> 900 tok/s every other hour; at most 2 node changes an hour. A constant
    # 9 on-demand GPUs costs 9 x $3 x 12 = $324 and keeps the cap; the planner must do no worse.
    demand = tuple(900.0 if t % 2 else 100.0 for t in range(12))
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100)],
        gpuClasses=[pools.gpu_class(onDemand=3.0)],
        policy={**POLICY, "maxNodeChangesPerHour": 2},
        planning={"horizonHours": 12},
    )
    problem = dataclasses.replace(problem, demand={"r1": demand})
    plan = blend.plan(problem)
    assert plan.keeps_every_constraint
    assert plan.total_dollars <= 324.0 + 1e-6
    assert plan.mip_gap is not None and plan.lower_bound_dollars is not None


def test_the_time_limit_bounds_the_whole_planning_time_on_a_week_of_a_large_coupled_pool():
    # 8 regions x 4 classes x 168 hours with a change penalty: far too big to solve in 2 s. The
    # planner must still return a plan that keeps every constraint, within 2 s of wall-clock time
    # (plus what Python needs to assemble it), and say how far from the bound it is.
    import time

    from sunblend.core import check

    regions = [
        pools.region(f"r{i}", tz=tz, base=20000 + 3000 * i, peak=90000 + 5000 * i) for i, tz in enumerate(ZONES8)
    ]
    classes = [
        {
            **pools.gpu_class(f"g{k}", gpus_per_node=n, spot=0.4 * price, onDemand=price),
            "tokensPerSecondPerReplica": tps,
        }
        for k, (n, price, tps) in enumerate([(8, 8.9, 2400), (8, 3.4, 1100), (4, 1.9, 700), (8, 0.8, 250)])
    ]
    latencies = [{"from": a["name"], "to": b["name"], "milliseconds": 40} for a, b in itertools.pairwise(regions)]
    problem = pools.blend_problem(
        regions=regions,
        gpuClasses=classes,
        policy={
            "headroom": 0.2,
            "maxSpotFraction": 0.6,
            "spotLossServedFraction": 0.5,
            "minReplicasPerRegion": 2,
            "changePenaltyDollarsPerNode": 10,
            "routing": {"maxLatencyMs": 50, "latencies": latencies},
        },
        planning={"horizonHours": 168, "timeLimitSeconds": 2},
    )
    started = time.perf_counter()
    plan = blend.plan(problem)
    elapsed = time.perf_counter() - started
    assert plan.has_solution and check.violations(problem, plan) == []
    assert elapsed < 2.0 * 1.2, f"planning took {elapsed:.2f} s against a 2 s limit"


ZONES8 = [
    "Asia/Kolkata",
    "Europe/London",
    "America/New_York",
    "Asia/Tokyo",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Sydney",
    "America/Sao_Paulo",
]


def test_a_rise_faster_than_the_cap_is_met_by_adding_nodes_early():
    # 1 node runs now; demand jumps to 9 nodes at hour 3, and at most 3 nodes may change an hour.
    # The hourly plans alone would jump 1 -> 9; the ramp adds 3 an hour from hour 1.
    import time

    from sunblend.core import check, coupled, hourly
    from sunblend.core.changes import node_changes
    from sunblend.core.deadline import Deadline
    from sunblend.core.model import CHANGES

    problem = pools.blend_problem(
        regions=[pools.region("r1", base=100)],
        gpuClasses=[pools.gpu_class(onDemand=3.0)],
        policy={**POLICY, "maxNodeChangesPerHour": 3},
        planning={"horizonHours": 4},
    )
    key = problem.offers[0].key
    problem = dataclasses.replace(problem, demand={"r1": (100.0, 100.0, 100.0, 900.0)}, current_nodes={key: 1})
    by_hour = hourly.solve_hours(problem, Deadline(time.perf_counter, 5.0), (CHANGES,))
    ramp = coupled.ramped(problem, by_hour)
    assert ramp is not None
    nodes, _ = ramp
    assert [nodes[(0, t)] for t in range(4)] == [1, 3, 6, 9]
    assert all(node_changes(problem, nodes, t) <= 3 for t in range(4))
    plan = blend.plan(problem)
    assert plan.keeps_every_constraint and check.violations(problem, plan) == []
    assert plan.total_dollars == pytest.approx(3.0 * (1 + 3 + 6 + 9))
