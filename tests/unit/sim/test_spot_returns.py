"""Spot that comes back is used again: one refusal holds it back for a learned window, not for hours.

Spot cannot be had for the first 40 minutes, then it can. sunblend asks for spot at once, is
refused, stands in with on-demand, and counts on no spot for the first retry window (15 minutes).
The plan for the next hour, made 8 minutes ahead, tries spot again, and it runs from then on.
"""

from __future__ import annotations

import datetime as dt

from sunblend.api import load
from sunblend.api.spec import CapacityType
from sunblend.core import problem
from sunblend.sim import engine, policies, traces

START = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
STEPS = 130
BACK = 40  # minutes without spot

POOL = """
apiVersion: sunblend.dev/v1alpha1
kind: InferencePool
metadata: {name: spot-returns}
spec:
  modelServer: {gpusPerReplica: 1, tokensPerSecondPerReplica: 100}
  regions:
    - {name: r1, timeZone: UTC, demand: {baselineTokensPerSecond: 1000, peakTokensPerSecond: 1000}}
  gpuClasses:
    - {name: gpu, gpusPerNode: 1, prices: {onDemand: 3.0, spot: 1.0}}
  policy: {headroom: 0, maxSpotFraction: 0.5, spotLossServedFraction: 0, minReplicasPerRegion: 0}
"""


def _series(values: list[float]) -> traces.Series:
    return traces.Series(tuple(START + i * dt.timedelta(minutes=1) for i in range(len(values))), tuple(values))


def test_spot_refused_at_first_runs_again_from_the_next_plan_after_the_window():
    pool = load.load_text(POOL)
    blend_problem = problem.from_spec(pool.spec, START)
    spot = [0.0] * BACK + [100.0] * (STEPS - BACK)
    replay = engine.Engine(
        blend_problem,
        traces.Traces(demand={"r1": _series([1000.0] * STEPS)}, spot={("r1", "gpu"): _series(spot)}),
    )
    run = replay.run(policies.make("sunblend", pool.spec, blend_problem))
    spot_gpus = run.gpus[("r1", CapacityType.SPOT)]
    on_demand = run.gpus[("r1", CapacityType.ON_DEMAND)]
    assert run.spot_launch_failures >= 5  # the first ask was refused
    assert max(spot_gpus[:BACK]) == 0
    assert spot_gpus[60 + 5] == 5  # the plan for 01:00, made at 00:52, launched spot: it runs by 01:05
    assert on_demand[60 + 10] == 5  # and the on-demand that stood in is gone
    # Short only while the stand-in on-demand boots after the first refusal (answer 1 min, boot 3 min).
    short = [k for k, (d, s) in enumerate(zip(run.demand["r1"], run.served["r1"], strict=True)) if s < d - 1e-6]
    assert short and max(short) < 5
