"""Runs policies over traces and summarises each run: the simulator's entry for the CLI and benchmarks.

``summary`` gives every figure of a run as a plain document; ``compare`` runs several policies
on the same engine, so they see the same demand, spot and prices. ``bounds`` computes the
hindsight bounds on the same engine (``sim.hindsight``) as documents of the same shape, marked
``kind: bound``, and ``against_hindsight`` gives every row its distance to ``hindsight-hourly``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core.problem import BlendProblem
from sunblend.sim import engine, hindsight, policies

POLICY = "policy"
BOUND = "bound"
DISTANCE = "vsHindsightHourlyRatio"  # cost / hindsight-hourly cost - 1

BOUNDS: dict[str, Callable[[engine.Engine], hindsight.Bound]] = {
    hindsight.HOURLY: hindsight.hourly,
    hindsight.STEP: hindsight.per_step,
}


def summary(run: engine.Run, seconds: float | None = None) -> dict[str, Any]:
    """Every figure of a run, machine-readable."""
    return {
        "policy": run.policy,
        "kind": POLICY,
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
            results.append((engine.Run(name), {"policy": name, "kind": POLICY, "skipped": str(error)}))
            continue
        started = time.perf_counter()
        run = replay.run(policy)
        results.append((run, summary(run, time.perf_counter() - started)))
    return results


def bound_summary(bound: hindsight.Bound, seconds: float | None = None) -> dict[str, Any]:
    """A hindsight bound as a document with a policy's keys: all demand served, no churn counted.

    Node changes, preemptions and launch failures do not apply to a plan made in hindsight: null.
    """
    times = bound.times
    return {
        "policy": bound.name,
        "kind": BOUND,
        "description": bound.description,
        "lpRelaxation": bound.lp_relaxation,
        "start": times[0].isoformat() if times else None,
        "end": times[-1].isoformat() if times else None,
        "steps": len(times),
        "costDollars": round(bound.total_dollars, 2),
        "committedDollars": round(bound.dollars[CapacityType.COMMITTED], 2),
        "spotDollars": round(bound.dollars[CapacityType.SPOT], 2),
        "onDemandDollars": round(bound.dollars[CapacityType.ON_DEMAND], 2),
        "allOnDemandReferenceDollars": round(bound.all_on_demand_dollars, 2),
        "savingsVsAllOnDemandRatio": round(bound.savings_ratio, 4),
        "demandTokenSeconds": round(bound.demand_token_seconds, 1),
        "servedTokenSeconds": round(bound.demand_token_seconds, 1),
        "unservedTokenSeconds": 0.0,
        "minutesBelowDemand": 0.0,
        "servedRatio": 1.0,
        "gpuUtilizationRatio": round(bound.utilization_ratio, 4),
        "nodeChanges": None,
        "spotPreemptions": None,
        "spotLaunchFailures": None,
        "solves": bound.solves,
        "plannerStatus": bound.status.value,
        "simulationSeconds": None if seconds is None else round(seconds, 3),
    }


def bounds(replay: engine.Engine) -> list[tuple[hindsight.Bound | None, dict[str, Any]]]:
    """Both hindsight bounds on ``replay``; one that no plan can meet is skipped with the reason."""
    results: list[tuple[hindsight.Bound | None, dict[str, Any]]] = []
    for name, compute in BOUNDS.items():
        started = time.perf_counter()
        try:
            bound = compute(replay)
        except hindsight.HindsightError as error:
            results.append((None, {"policy": name, "kind": BOUND, "skipped": str(error)}))
            continue
        results.append((bound, bound_summary(bound, time.perf_counter() - started)))
    return results


def hourly_bound(results: Iterable[tuple[hindsight.Bound | None, dict[str, Any]]]) -> hindsight.Bound | None:
    """The ``hindsight-hourly`` bound among ``bounds``' results; None if it was skipped."""
    return next((bound for bound, _ in results if bound is not None and bound.name == hindsight.HOURLY), None)


def against_hindsight(documents: Iterable[dict[str, Any]], bound_documents: Iterable[dict[str, Any]]) -> None:
    """Give every document that has a cost its distance to ``hindsight-hourly`` (None if that was skipped)."""
    hourly = next(
        (d for d in bound_documents if d["policy"] == hindsight.HOURLY and "skipped" not in d),
        None,
    )
    reference = None if hourly is None else float(hourly["costDollars"])
    for doc in documents:
        if "skipped" in doc:
            continue
        cost = float(doc["costDollars"])
        doc[DISTANCE] = None if reference is None or reference <= 0 else round(cost / reference - 1, 4)
