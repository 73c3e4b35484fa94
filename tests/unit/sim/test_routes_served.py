"""Serving along the planned routes: a plan that chains A → B → C is served in full, buying nothing extra.

GPUs are dearest in A, cheaper in B and cheapest in C. A's users may use B, B's may use C, but A's
may not use C, so the plan serves A's users in B and B's users in C and runs nothing in A. Serving
each region's own users first would fill B with B's users and leave A's unserved, and judging the
surge the same way would buy on-demand in A that the plan never needed.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sunblend.api import load
from sunblend.api.spec import CapacityType
from sunblend.core import problem
from sunblend.sim import engine, policies, traces

START = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
STEPS = 150  # two and a half hours of minutes: two hourly plans and a plan made ahead
DEMAND = {"a": 1000.0, "b": 1000.0, "c": 0.0}  # tokens/s, steady; one node serves 100

POOL = """
apiVersion: sunblend.dev/v1alpha1
kind: InferencePool
metadata: {name: chain}
spec:
  modelServer: {gpusPerReplica: 1, tokensPerSecondPerReplica: 100}
  regions:
    - {name: a, timeZone: UTC, demand: {baselineTokensPerSecond: 1000, peakTokensPerSecond: 1000}}
    - {name: b, timeZone: UTC, demand: {baselineTokensPerSecond: 1000, peakTokensPerSecond: 1000}}
    - {name: c, timeZone: UTC, demand: {baselineTokensPerSecond: 0, peakTokensPerSecond: 0}}
  gpuClasses:
    - name: gpu
      gpusPerNode: 1
      prices: {onDemand: 3.0}
      regionPrices:
        - {region: a, onDemand: 9.0}
        - {region: c, onDemand: 1.0}
  policy:
    headroom: 0.2
    maxSpotFraction: 0
    spotLossServedFraction: 0
    minReplicasPerRegion: 0
    routing:
      maxLatencyMs: 100
      latencies:
        - {from: a, to: b, milliseconds: 50}
        - {from: b, to: c, milliseconds: 50}
        - {from: a, to: c, milliseconds: 200}
"""


def _steady(tokens_per_second: float) -> traces.Series:
    return traces.Series(tuple(START + i * dt.timedelta(minutes=1) for i in range(STEPS)), (tokens_per_second,) * STEPS)


def _replay():
    pool = load.load_text(POOL)
    blend_problem = problem.from_spec(pool.spec, START)
    replay = engine.Engine(blend_problem, traces.Traces(demand={r: _steady(v) for r, v in DEMAND.items()}))
    return pool, blend_problem, replay


def test_the_plan_chains_a_to_b_to_c():
    _, blend_problem, _ = _replay()
    assert blend_problem.serving_regions("a") == ("a", "b")  # a may not use c
    assert blend_problem.serving_regions("c") == ("b", "c")


def test_the_engine_serves_everything_along_the_chain_and_the_policy_buys_nothing_extra():
    pool, blend_problem, replay = _replay()
    sunblend = policies.make("sunblend", pool.spec, blend_problem)
    assert isinstance(sunblend, policies.Sunblend)
    sunblend.record = True
    run = replay.run(sunblend)
    # The plan's nodes: 12 in b for a's 1,000 tokens/s, 12 in c for b's, none in a.
    first_plan = sunblend.decisions[0].plan
    assert first_plan is not None and first_plan.has_solution
    planned = {(a.region, a.capacity_type): a.nodes for a in first_plan.allocations_at(0) if a.nodes}
    assert planned == {("b", CapacityType.ON_DEMAND): 12, ("c", CapacityType.ON_DEMAND): 12}
    flows = {(f.from_region, f.to_region): f.tokens_per_second for f in first_plan.flows if f.hour == 0}
    assert flows == {("a", "b"): 1000.0, ("b", "c"): 1000.0}
    # Everything is served, every minute.
    assert run.minutes_below_demand == 0
    assert run.served["a"] == [1000.0] * STEPS
    assert run.served["b"] == [1000.0] * STEPS
    # No surge cover, no node in a, ever: the policy bought nothing the plan did not.
    assert all(decision.state.surge == {} for decision in sunblend.decisions)
    assert run.gpus[("a", CapacityType.ON_DEMAND)] == [0] * STEPS
    assert set(run.gpus[("b", CapacityType.ON_DEMAND)]) == {12}
    assert set(run.gpus[("c", CapacityType.ON_DEMAND)]) == {12}
    assert run.dollars[CapacityType.ON_DEMAND] == pytest.approx(STEPS / 60 * (12 * 3.0 + 12 * 1.0))
