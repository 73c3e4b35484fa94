"""Runs policies over traces and summarises each run: the simulator's entry for the CLI and benchmarks.

``summary`` gives every figure of a run as a plain document; ``compare`` runs several policies
on the same engine, so they see the same demand, spot and prices.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core.problem import BlendProblem
from sunblend.sim import engine, policies


def summary(run: engine.Run, seconds: float | None = None) -> dict[str, Any]:
    """Every figure of a run, machine-readable."""
    return {
        "policy": run.policy,
        "start": run.times[0].isoformat() if run.times else None,
        "end": run.times[-1].isoformat() if run.times else None,
        "steps": len(run.times),
        "costDollars": round(run.total_dollars, 2),
        "committedDollars": round(run.dollars[CapacityType.COMMITTED], 2),
        "spotDollars": round(run.dollars[CapacityType.SPOT], 2),
        "onDemandDollars": round(run.dollars[CapacityType.ON_DEMAND], 2),
        "allOnDemandReferenceDollars": round(run.all_on_demand_dollars, 2),
        "savingsVsAllOnDemandRatio": round(run.savings_ratio, 4),
        "demandTokenSeconds": round(run.demand_token_seconds, 1),
        "servedTokenSeconds": round(run.served_token_seconds, 1),
        "unservedTokenSeconds": round(run.unserved_token_seconds, 1),
        "minutesBelowDemand": round(run.minutes_below_demand, 2),
        "servedRatio": round(run.served_ratio, 6),
        "gpuUtilizationRatio": round(run.utilization_ratio, 4),
        "nodeChanges": run.node_changes,
        "spotPreemptions": run.spot_preemptions,
        "spotLaunchFailures": run.spot_launch_failures,
        "simulationSeconds": None if seconds is None else round(seconds, 3),
    }


def compare(
    pool: spec.InferencePoolSpec, blend_problem: BlendProblem, replay: engine.Engine, names: Iterable[str]
) -> list[tuple[engine.Run, dict[str, Any]]]:
    """Run each named policy on the same engine; policies a pool cannot support are skipped with a note."""
    results = []
    for name in names:
        try:
            policy = policies.make(name, pool, blend_problem)
        except policies.PolicyError as error:
            results.append((engine.Run(name), {"policy": name, "skipped": str(error)}))
            continue
        started = time.perf_counter()
        run = replay.run(policy)
        results.append((run, summary(run, time.perf_counter() - started)))
    return results
