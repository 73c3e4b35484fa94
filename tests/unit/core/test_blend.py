"""The planner on tiny pools whose optimum is known by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import pulp
import pytest

from sunblend.api.spec import CapacityType, SolverName
from sunblend.core import blend, check, greedy, highs, model
from sunblend.core.plan import SolveStatus
from tests.unit import pools

POLICY = {"headroom": 0, "maxSpotFraction": 1, "spotLossServedFraction": 0, "minReplicasPerRegion": 0}


def _gpus(plan, hour=0):
    return plan.gpus_by_capacity_type(hour)


def test_committed_capacity_is_used_before_anything_is_bought():
    # 250 tok/s at 100 per replica (1 GPU): 3 GPUs. 2 are committed; 1 more on spot (cheaper than on-demand).
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=250)],
        gpuClasses=[pools.gpu_class(committed=2.0, spot=1.0, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 2}],
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.OPTIMAL
    assert _gpus(plan) == {CapacityType.COMMITTED: 2, CapacityType.SPOT: 1, CapacityType.ON_DEMAND: 0}
    # Committed is sunk (2 x $2 amortised) and reported; the spot GPU is the only spend at the margin.
    assert plan.hour_costs[0].committed_dollars == pytest.approx(4.0)
    assert plan.cost_dollars_per_hour == pytest.approx(5.0)
    assert check.violations(problem, plan) == []


def test_spot_is_capped_by_policy():
    # 10 replicas needed; spot at most 30% of GPUs: 3 spot, 7 on-demand, although spot is 3x cheaper.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=1000)],
        gpuClasses=[pools.gpu_class(spot=1.0, onDemand=3.0)],
        policy={**POLICY, "maxSpotFraction": 0.3},
    )
    plan = blend.plan(problem)
    assert _gpus(plan) == {CapacityType.COMMITTED: 0, CapacityType.SPOT: 3, CapacityType.ON_DEMAND: 7}
    assert plan.cost_dollars_per_hour == pytest.approx(3 * 1.0 + 7 * 3.0)


def test_spot_loss_share_is_served_by_non_spot():
    # 1000 tok/s, 60% must survive losing all spot: at least 6 non-spot replicas.
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=1000)],
        gpuClasses=[pools.gpu_class(spot=1.0, onDemand=3.0)],
        policy={**POLICY, "spotLossServedFraction": 0.6},
    )
    plan = blend.plan(problem)
    assert _gpus(plan) == {CapacityType.COMMITTED: 0, CapacityType.SPOT: 4, CapacityType.ON_DEMAND: 6}


@pytest.mark.parametrize(("latency_ms", "served_in"), [(50, "cheap"), (200, "dear")])
def test_demand_is_routed_to_a_cheaper_region_within_the_latency_limit(latency_ms, served_in):
    problem = pools.blend_problem(
        regions=[pools.region("dear", base=300), pools.region("cheap", base=0)],
        gpuClasses=[
            {
                **pools.gpu_class(),
                "regionPrices": [{"region": "dear", "onDemand": 10.0}, {"region": "cheap", "onDemand": 2.0}],
            }
        ],
        policy={
            **POLICY,
            "routing": {
                "maxLatencyMs": 100,
                "latencies": [{"from": "dear", "to": "cheap", "milliseconds": latency_ms}],
            },
        },
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.OPTIMAL
    regions = {a.region for a in plan.allocations_at(0)}
    assert regions == {served_in}
    assert plan.cost_dollars_per_hour == pytest.approx(3 * (2.0 if served_in == "cheap" else 10.0))
    assert check.violations(problem, plan) == []


def test_an_infeasible_budget_is_explained_in_plain_words():
    problem = pools.blend_problem(
        now=dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.UTC),
        regions=[pools.region("ap-south-1", tz="Asia/Kolkata", base=100, peak=500, busy=(13, 15))],
        gpuClasses=[pools.gpu_class(onDemand=3.0)],
        policy={**POLICY, "budgetDollarsPerHour": 10},
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.INFEASIBLE
    # The busy hours start 13:00 IST = 07:30 UTC; the 08:00 UTC hour is 13:30 IST and needs 5 GPUs.
    assert plan.message == "budget 10 $/h is below the cheapest feasible plan, 15.00 $/h, at 13:30 Asia/Kolkata"


def test_nodes_are_whole_and_replicas_fill_them():
    # 2 GPUs per replica on 8-GPU nodes: 4 replicas per node. 5 replicas needed -> 2 nodes, 8 replicas.
    problem = pools.blend_problem(
        modelServer={"gpusPerReplica": 2, "tokensPerSecondPerReplica": 100},
        regions=[pools.region("r1", base=500)],
        gpuClasses=[pools.gpu_class(gpus_per_node=8, onDemand=1.0)],
    )
    plan = blend.plan(problem)
    [allocation] = plan.allocations_at(0)
    assert (allocation.nodes, allocation.gpus, allocation.replicas) == (2, 16, 8)
    assert plan.cost_dollars_per_hour == pytest.approx(16.0)


def test_a_daylight_saving_day_in_london_moves_the_peak_an_hour_earlier_in_utc():
    # Clocks go forward at 01:00 UTC on 2026-03-29: busy hours 09-17 local are 09-16 UTC the
    # day before and 08-15 UTC that day.
    def peak_hours(day):
        problem = pools.blend_problem(
            now=dt.datetime(2026, 3, day, 0, tzinfo=dt.UTC),
            regions=[pools.region("eu-west-2", tz="Europe/London", base=100, peak=800, busy=(9, 17))],
        )
        plan = blend.plan(problem)
        return [t for t in range(24) if _gpus(plan, t)[CapacityType.ON_DEMAND] == 8]

    assert peak_hours(28) == list(range(9, 17))
    assert peak_hours(29) == list(range(8, 16))


def test_commitment_sizing_recommends_the_steady_floor():
    # Demand: 3 GPUs all day, 5 during 8 busy hours. Committed at $1 vs on-demand $3: commit
    # GPUs used at least 1/3 of the time -> 5 (the 4th and 5th run 8 h of 24 = exactly 1/3; 3 is a tie-free floor).
    problem = pools.blend_problem(
        now=dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC),
        regions=[pools.region("r1", base=300, peak=500, busy=(9, 13))],
        gpuClasses=[pools.gpu_class(committed=1.0, onDemand=3.0)],
        planning={"mode": "SizeCommitments"},
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.OPTIMAL
    [advice] = plan.commitment_advice
    # 4 busy hours of 24: a 4th or 5th committed GPU costs $24/day and saves only 4 x $3: hold 3.
    assert (advice.held_gpus, advice.recommended_gpus) == (0, 3)
    # Held-only plan: all on-demand, 3x20 + 5x4 = 80 GPU-hours x $3 = $240. Sized: 3x24x$1 + 2x4x$3 = $96.
    assert plan.savings_from_sizing_dollars == pytest.approx(240 - 96)


def test_node_change_cap_limits_churn_between_hours():
    problem = pools.blend_problem(
        now=dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC),
        regions=[pools.region("r1", base=100, peak=900, busy=(9, 12))],
        policy={**POLICY, "maxNodeChangesPerHour": 3},
    )
    plan = blend.plan(problem)
    assert plan.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
    assert check.violations(problem, plan) == []
    gpus = [_gpus(plan, t)[CapacityType.ON_DEMAND] for t in range(24)]
    assert max(abs(a - b) for a, b in itertools.pairwise(gpus)) <= 3
    assert gpus[9] >= 9  # the peak itself is still served


def test_marginal_value_of_one_more_committed_gpu_is_the_price_it_replaces():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=500)],
        gpuClasses=[pools.gpu_class(committed=1.0, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 2}],
    )
    plan = blend.plan(problem)
    worth = {m.subject: m.dollars_per_hour for m in plan.marginals}
    assert worth["committed gpu in r1"] == pytest.approx(3.0, rel=1e-3)
    assert "every committed GPU of gpu in r1 is in use" in plan.binding


def test_unreachable_demand_is_explained_without_solving():
    problem = pools.blend_problem(
        regions=[pools.region("r1"), pools.region("r2")],
        gpuClasses=[{**pools.gpu_class(), "regions": ["r1"]}],
    )
    plan = blend.plan(problem)
    assert plan.status is SolveStatus.INFEASIBLE
    assert "demand in region r2" in plan.message


def test_greedy_fallback_returns_the_same_plan_type_and_keeps_the_policy():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=1000)],
        gpuClasses=[pools.gpu_class(spot=1.0, onDemand=3.0)],
        policy={**POLICY, "maxSpotFraction": 0.3, "spotLossServedFraction": 0.5, "minReplicasPerRegion": 2},
    )
    plan = greedy.plan(problem)
    assert plan.solver == "greedy" and plan.status is SolveStatus.FEASIBLE
    assert check.violations(problem, plan) == []
    assert plan.total_dollars >= blend.plan(problem).total_dollars


@pytest.mark.parametrize(
    ("status", "sol_status", "ours"),
    [
        (pulp.LpStatusOptimal, pulp.LpSolutionOptimal, SolveStatus.OPTIMAL),
        # What PuLP reports when HiGHS stops on its time limit with an incumbent.
        (pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible, SolveStatus.FEASIBLE),
        (pulp.LpStatusInfeasible, pulp.LpSolutionInfeasible, SolveStatus.INFEASIBLE),
        (pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound, SolveStatus.ERROR),
    ],
)
def test_solver_verdicts_map_to_our_status_by_solution_status(status, sol_status, ours):
    assert model.status_from(status, sol_status) is ours


def test_a_time_limit_hit_is_not_reported_as_optimal():
    # A 4-region, 6-class, 168-hour coupled pool with a 0.2 s limit cannot be proven optimal.
    problem = pools.blend_problem(
        regions=[pools.region(f"r{i}", base=1000 + 37 * i, peak=9000 + 101 * i) for i in range(4)],
        gpuClasses=[
            pools.gpu_class(f"g{k}", gpus_per_node=1 + k, spot=1.0 + 0.1 * k, onDemand=3.0 + 0.2 * k) for k in range(6)
        ],
        policy={**POLICY, "maxSpotFraction": 0.5, "changePenaltyDollarsPerNode": 0.5},
        planning={"horizonHours": 168, "timeLimitSeconds": 0.2, "relativeGap": 0},
    )
    plan = blend.plan(problem)
    assert plan.status is not SolveStatus.OPTIMAL


def test_cbc_gives_the_same_optimum_as_highs():
    problem = pools.blend_problem(
        regions=[pools.region("r1", base=1000)],
        gpuClasses=[pools.gpu_class(spot=1.0, onDemand=3.0)],
        policy={**POLICY, "maxSpotFraction": 0.3},
    )
    highs = blend.plan(problem)
    cbc = blend.plan(dataclasses.replace(problem, solver=dataclasses.replace(problem.solver, name=SolverName.CBC)))
    assert cbc.solver == "CBC"
    assert cbc.total_dollars == pytest.approx(highs.total_dollars)


def test_a_solver_failure_falls_back_to_the_greedy_plan(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("HiGHS crashed")

    monkeypatch.setattr(highs, "solve", broken)
    problem = pools.blend_problem(regions=[pools.region("r1", base=1000)], gpuClasses=[pools.gpu_class(spot=1.0)])
    plan = blend.plan(problem)
    assert (plan.status, plan.solver) == (SolveStatus.FEASIBLE, "greedy")
    assert plan.message.startswith("HiGHS failed: HiGHS crashed; greedy fallback plan")
    assert check.violations(problem, plan) == []
