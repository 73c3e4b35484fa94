"""Planner benchmark: sunblend's planner against the monolithic MILP, on pools that spend money.

Not a test: it writes JSON and prints a table, and passes or fails on nothing. Every instance
makes the planner decide (DESIGN.md, "Benchmarks must spend money"):
- follow-the-sun demand per region (a smooth diurnal curve in each region's time zone, with
  +/-15% noise per hour from a seeded RNG), so no two hours are alike;
- spot and on-demand in every region (spot at 30-50% of on-demand, at most 60% of a region's
  GPUs, and non-spot capacity must serve half the demand), both bought in every case;
- commitments either none, or held below the floor of demand (whole nodes of the two classes
  with a committed price, up to 70% of the region's trough with headroom, so spot and
  on-demand are bought on top every hour);
- four kinds: uncoupled; a node-change cap (2 per region up to 4 regions, 20 at 8) with the
  current nodes given; a change penalty ($10 a node); commitment sizing.

Each case runs ``--repeat`` times for sunblend (``blend.plan``) and for the monolithic MILP
(``blend.plan(problem, decompose=False)``) in the same run; medians are reported, with each
plan's status, MIP gap and horizon cost (the plan's cost plus the change penalty it incurs), and
the constraints it breaks by ``core.check`` (a plan that breaks any meets no target). The LP
relaxation of the monolithic model gives a lower bound on the horizon cost.

    python bench/planner.py --out bench/results/planner.json
    python bench/planner.py --quick          # small sizes, one run each: checks the script
                                             # (writes bench/results/planner-quick.json)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sunblend.api.spec import CapacityType
from sunblend.core import blend, check, problem
from sunblend.core.plan import Plan

NOW = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)  # a Monday, 00:00 UTC
# (IANA zone, UTC offset in hours at NOW): the local hour drives each region's demand curve.
ZONES = [
    ("Asia/Kolkata", 5.5),
    ("Europe/London", 0.0),
    ("America/New_York", -5.0),
    ("Asia/Tokyo", 9.0),
    ("Europe/Berlin", 1.0),
    ("America/Los_Angeles", -8.0),
    ("Australia/Sydney", 11.0),
    ("America/Sao_Paulo", -3.0),
]
# (name, GPUs per node, tokens/s per replica of 1 GPU, on-demand $/GPU-hour): realistic node sizes.
CLASSES = [
    ("h100", 8, 2400.0, 8.9),
    ("a100", 8, 1100.0, 3.4),
    ("l40s", 4, 700.0, 1.9),
    ("h200", 8, 3000.0, 10.6),
    ("a10g", 4, 300.0, 1.2),
    ("l4", 8, 250.0, 0.8),
]
COMMITTED_CLASSES = 2  # the first two classes have a committed price (60% of on-demand)
SIZES = [(2, 2, 24), (4, 3, 24), (8, 6, 168)]
QUICK_SIZES = [(2, 2, 24), (4, 3, 24)]
COMMITMENTS = ("none", "below-floor")
KINDS = ("uncoupled", "cap", "penalty", "sizing")
PENALTY_DOLLARS_PER_NODE = 10.0
HEADROOM = 0.2
LP_TIME_LIMIT_SECONDS = 120.0  # the LP bound is not timed against a target: let it finish


def _demand(rng: random.Random, region: int, hours: int) -> tuple[float, ...]:
    """Busy from 07:00 to 23:00 local, peaking mid-afternoon; +/-15% noise per hour."""
    offset = ZONES[region][1]
    base, peak = 30000.0 + 4000.0 * region, 150000.0 + 15000.0 * region
    series = []
    for h in range(hours):
        local = (h + offset) % 24
        shape = max(0.0, math.sin(math.pi * (local - 7) / 16))
        series.append(round((base + (peak - base) * shape) * rng.uniform(0.85, 1.15)))
    return tuple(series)


def _cap(regions: int) -> int:
    """Node changes allowed per hour: 2 per region on small pools (4 at 2 regions), 20 at 8 regions.

    The noise alone moves about one node per region per hour, so fewer than that per region
    forces costly standing capacity rather than testing the planner.
    """
    return 2 * regions if regions <= 4 else 20


def _offer(
    region: str, gpu_class: tuple[str, int, float, float], capacity_type: CapacityType, price: float, committed: int = 0
) -> problem.Offer:
    name, per_node, tps, _ = gpu_class
    return problem.Offer(
        region=region,
        gpu_class=name,
        capacity_type=capacity_type,
        gpus_per_node=per_node,
        replicas_per_node=per_node,  # one GPU per replica
        dollars_per_gpu_hour=price,
        tokens_per_second_per_replica=tps,
        committed_nodes=committed,
    )


def instance(
    regions: int, classes: int, hours: int, commitments: str, kind: str, seed: int = 7
) -> problem.BlendProblem:
    """One benchmark pool. The same (regions, classes, hours, seed) give the same demand and prices."""
    rng = random.Random(f"{seed}-{regions}-{classes}-{hours}")
    names = [f"region-{i}" for i in range(regions)]
    demand = {name: _demand(rng, i, hours) for i, name in enumerate(names)}
    sizing = kind == "sizing"
    offers = []
    held: dict[tuple[str, str], int] = {}
    for r, name in enumerate(names):
        # Below the floor: the committed classes, filled in order, hold at most 70% of the trough.
        uncommitted = 0.7 * (1 + HEADROOM) * min(demand[name]) if commitments == "below-floor" else 0.0
        for c, gpu_class in enumerate(CLASSES[:classes]):
            gpu, per_node, tps, on_demand = gpu_class
            od = on_demand * (1 + 0.05 * r) * rng.uniform(0.97, 1.03)
            spot = od * rng.uniform(0.3, 0.5)
            offers += [
                _offer(name, gpu_class, CapacityType.ON_DEMAND, od),
                _offer(name, gpu_class, CapacityType.SPOT, spot),
            ]
            if c < COMMITTED_CLASSES:
                nodes = math.floor(uncommitted / (per_node * tps))
                uncommitted -= nodes * per_node * tps
                held[(name, gpu)] = nodes
                if nodes or sizing:
                    offers.append(_offer(name, gpu_class, CapacityType.COMMITTED, 0.6 * od, nodes))
    current: dict[problem.OfferKey, int] = {}
    if kind == "cap":
        # What runs now: what is held, and on-demand of the first class for the hour before.
        gpu, per_node, tps, _ = CLASSES[0]
        for i, name in enumerate(names):
            before = _demand(random.Random(f"{seed}-before-{i}"), i, 24)[-1]
            current[(name, gpu, CapacityType.ON_DEMAND)] = math.ceil((1 + HEADROOM) * before / (per_node * tps))
            for (region, held_class), nodes in held.items():
                if region == name and nodes:
                    current[(region, held_class, CapacityType.COMMITTED)] = nodes
    # A ring: each region may serve its neighbours' users.
    ring = {(i, (i + 1) % regions) for i in range(regions)}
    routes = {(a, a) for a in names} | {(names[i], names[j]) for i, j in ring if i != j}
    routes |= {(b, a) for a, b in routes}
    return problem.BlendProblem(
        hours=tuple(NOW + dt.timedelta(hours=h) for h in range(hours)),
        time_zones={name: ZONES[i][0] for i, name in enumerate(names)},
        demand=demand,
        offers=tuple(offers),
        routes=frozenset(routes),
        headroom=HEADROOM,
        max_spot_fraction=0.6,
        spot_loss_served_fraction=0.5,
        min_replicas_per_region=2,
        max_node_changes_per_hour=_cap(regions) if kind == "cap" else None,
        change_penalty_dollars_per_node=PENALTY_DOLLARS_PER_NODE if kind == "penalty" else 0.0,
        current_nodes=current,
        size_commitments=sizing,
    )


def node_changes(case: problem.BlendProblem, plan: Plan) -> int:
    """Nodes added plus removed over the horizon, as the penalty counts them (hour 0 only against known nodes)."""
    nodes: dict[tuple[int, problem.OfferKey], int] = {}
    for a in plan.allocations:
        at = (a.hour, (a.region, a.gpu_class, a.capacity_type))
        nodes[at] = nodes.get(at, 0) + a.nodes
    total = 0
    for t in range(case.horizon):
        if t == 0 and not case.current_nodes:
            continue
        for key in {o.key for o in case.offers}:
            before = nodes.get((t - 1, key), 0) if t > 0 else case.current_nodes.get(key, 0)
            total += abs(nodes.get((t, key), 0) - before)
    return total


def horizon_cost(case: problem.BlendProblem, plan: Plan) -> float | None:
    """The plan's cost over the horizon plus the change penalty it incurs; None without a plan."""
    if not plan.has_solution:
        return None
    return plan.total_dollars + case.change_penalty_dollars_per_node * node_changes(case, plan)


def spend(plan: Plan) -> dict[str, float]:
    """What the plan buys over the horizon: GPU-hours and dollars of spot and on-demand."""
    gpu_hours = {m: 0 for m in CapacityType}
    for a in plan.allocations:
        gpu_hours[a.capacity_type] += a.gpus
    return {
        "spot_gpu_hours": gpu_hours[CapacityType.SPOT],
        "on_demand_gpu_hours": gpu_hours[CapacityType.ON_DEMAND],
        "committed_gpu_hours": gpu_hours[CapacityType.COMMITTED],
        "spot_dollars": round(sum(h.spot_dollars for h in plan.hour_costs), 2),
        "on_demand_dollars": round(sum(h.on_demand_dollars for h in plan.hour_costs), 2),
    }


def measure(case: problem.BlendProblem, decompose: bool, repeat: int) -> tuple[dict[str, Any], Plan]:
    """Plan ``repeat`` times; the median wall-clock seconds and the last run's figures."""
    seconds = []
    result: Plan | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = blend.plan(case, decompose=decompose)
        seconds.append(time.perf_counter() - started)
    assert result is not None
    cost = horizon_cost(case, result)
    broken = check.violations(case, result) if result.has_solution else []
    return (
        {
            "status": result.status.value,
            "violations": len(broken),  # constraints the plan breaks, by core.check (0 for a valid plan)
            "first_violations": broken[:3],
            "mip_gap": result.mip_gap,
            "horizon_cost_dollars": None if cost is None else round(cost, 2),
            "penalty_dollars": round(case.change_penalty_dollars_per_node * node_changes(case, result), 2)
            if result.has_solution
            else None,
            "lower_bound_dollars": getattr(result, "lower_bound_dollars", None),
            "median_seconds": statistics.median(seconds),
            "runs_seconds": seconds,
            "message": result.message,
        },
        result,
    )


def _model_module() -> Any:
    """The planner's module with ``build`` and ``solve`` (``core.model``; ``core.blend`` before it)."""
    for name in ("sunblend.core.model", "sunblend.core.blend"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "build") and hasattr(module, "solve"):
            return module
    return None


def lp_bound(case: problem.BlendProblem) -> tuple[float | None, float, str]:
    """Lower bound on the horizon cost: the LP relaxation of the monolithic model.

    Its objective less the planner's tie-break on its nodes, plus what the model leaves out as
    constant (the sunk commitments, when not sizing them). Returns (bound, seconds, note); the
    bound is None when the planner's API does not allow it.
    """
    started = time.perf_counter()
    milp = _model_module()
    if milp is None:
        return None, 0.0, "no LP bound: the planner has no build/solve functions"
    try:
        model = milp.build(case, tuple(range(case.horizon)), relax_integers=True)
        status = milp.solve(case, model, max(LP_TIME_LIMIT_SECONDS, case.solver.time_limit_seconds), relaxed=True)
        if status.value != "Optimal":
            return None, time.perf_counter() - started, f"LP relaxation {status.value}"
        objective = model.lp.objective
        value = float(objective.value() or 0.0)
        value -= float(getattr(milp, "NODE_EPSILON", 0.0)) * sum(float(v.varValue or 0.0) for v in model.nodes.values())
        if not objective.constant:
            constant = getattr(case, "constant_dollars_per_hour", None)
            if constant is None:  # before the planner said what its objective leaves out
                constant = 0.0 if case.size_commitments else case.committed_sunk_dollars_per_hour
            value += float(constant) * case.horizon
    except (AttributeError, TypeError, ValueError, RuntimeError, getattr(milp, "PlanningError", RuntimeError)) as error:
        return None, time.perf_counter() - started, f"no LP bound: {error}"
    return value, time.perf_counter() - started, ""


def target(regions: int, classes: int, hours: int, commitments: str, kind: str) -> str | None:
    """The target a case is held to, in words; None when it has none."""
    if kind == "uncoupled":
        if (regions, classes, hours) == (2, 2, 24):
            return "< 50 ms"
        if (regions, classes, hours) == (8, 6, 168) and commitments == "none":
            return "Optimal, < 2 s"
        return None
    if hours <= 24 and regions * classes <= 12:
        return "Optimal (1%), < 1 s"
    if (regions, classes, hours) == (8, 6, 168):
        return "within 2% of LP, < limit"
    return None


def met(row: dict[str, Any], time_limit: float) -> bool | None:
    """Whether sunblend's figures meet the row's target."""
    goal = row["target"]
    ours = row["sunblend"]
    seconds, status, gap = ours["median_seconds"], ours["status"], ours["mip_gap"]
    if goal is None:
        return None
    if ours["violations"]:
        return False  # a plan that breaks a constraint meets nothing
    if goal == "< 50 ms":
        return bool(status in ("Optimal", "Feasible") and seconds < 0.05)
    if goal == "Optimal, < 2 s":
        return bool(status == "Optimal" and seconds < 2.0)
    if goal == "Optimal (1%), < 1 s":
        return bool(status == "Optimal" and (gap is None or gap <= 0.01 + 1e-9) and seconds < 1.0)
    to_lp = row["gap_to_lp_bound"]
    return bool(status in ("Optimal", "Feasible") and to_lp is not None and to_lp <= 0.02 and seconds <= time_limit)


def _relative(cost: float | None, bound: float | None) -> float | None:
    if cost is None or bound is None or cost <= 0:
        return None
    return (cost - bound) / cost


def run_case(
    regions: int, classes: int, hours: int, commitments: str, kind: str, repeat: int, time_limit: float
) -> dict[str, Any]:
    """Measure one case: sunblend, the monolithic MILP and the LP bound, on the same instance."""
    case = instance(regions, classes, hours, commitments, kind)
    case = dataclasses.replace(case, solver=dataclasses.replace(case.solver, time_limit_seconds=time_limit))
    ours, plan = measure(case, True, repeat)
    mono, _ = measure(case, False, repeat)
    bound, lp_seconds, lp_note = lp_bound(case)
    row: dict[str, Any] = {
        "case": f"{regions}x{classes}x{hours} {commitments} {kind}",
        "regions": regions,
        "gpu_classes": classes,
        "hours": hours,
        "commitments": commitments,
        "kind": kind,
        "integer_variables": len(case.offers) * hours,
        "time_limit_seconds": time_limit,
        "relative_gap": case.solver.relative_gap,
        "spend": spend(plan) if plan.has_solution else None,
        "sunblend": ours,
        "monolithic": mono,
        "lp_bound_dollars": None if bound is None else round(bound, 2),
        "lp_seconds": lp_seconds,
        "lp_note": lp_note,
        "gap_to_lp_bound": _relative(ours["horizon_cost_dollars"], bound),
        "monolithic_gap_to_lp_bound": _relative(mono["horizon_cost_dollars"], bound),
        "target": target(regions, classes, hours, commitments, kind),
    }
    row["met"] = met(row, time_limit)
    return row


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _status(figures: Mapping[str, Any]) -> str:
    """The status, marked when the plan breaks constraints."""
    status = str(figures["status"])
    return f"{status} [red]({figures['violations']} broken)[/]" if figures["violations"] else status


def table(rows: Sequence[Mapping[str, Any]], repeat: int) -> Table:
    """The results as a rich table."""
    out = Table(title=f"Planner against the monolithic MILP (median of {repeat} run(s); gap: reported MIP gap)")
    for column in (
        "case",
        "spot / OD $",
        "status",
        "gap",
        "cost $",
        "time",
        "mono status",
        "mono gap",
        "mono cost $",
        "mono time",
        "speed-up",
        "vs LP bound",
        "target",
        "met",
    ):
        out.add_column(column, justify="left" if column in ("case", "target") else "right")
    for row in rows:
        ours, mono, bought = row["sunblend"], row["monolithic"], row["spend"]
        outcome = {True: "[green]met[/]", False: "[red]missed[/]", None: "-"}[row["met"]]
        out.add_row(
            row["case"],
            "-" if bought is None else f"{bought['spot_dollars']:,.0f} / {bought['on_demand_dollars']:,.0f}",
            _status(ours),
            _gap(ours["mip_gap"]),
            _money(ours["horizon_cost_dollars"]),
            _seconds(ours["median_seconds"]),
            _status(mono),
            _gap(mono["mip_gap"]),
            _money(mono["horizon_cost_dollars"]),
            _seconds(mono["median_seconds"]),
            f"{mono['median_seconds'] / ours['median_seconds']:.1f}x",
            _gap(row["gap_to_lp_bound"]),
            row["target"] or "-",
            outcome,
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="JSON results (default bench/results/planner.json; planner-quick.json with --quick)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case and planner; medians reported")
    parser.add_argument("--time-limit", type=float, default=10.0, help="solver time limit per plan, seconds")
    parser.add_argument("--quick", action="store_true", help="small sizes only, one run each")
    parser.add_argument("--only", default="", help="run only cases whose name contains this text")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    sizes = QUICK_SIZES if args.quick else SIZES
    rows: list[dict[str, Any]] = []
    for regions, classes, hours in sizes:
        for commitments in COMMITMENTS:
            for kind in KINDS:
                name = f"{regions}x{classes}x{hours} {commitments} {kind}"
                if args.only and args.only not in name:
                    continue
                row = run_case(regions, classes, hours, commitments, kind, repeat, args.time_limit)
                rows.append(row)
                bought = row["spend"] or {}
                if not (bought.get("spot_gpu_hours") and bought.get("on_demand_gpu_hours")):
                    print(f"warning: {name} does not buy both spot and on-demand: {bought}", file=sys.stderr)
                print(
                    f"{name}: {row['sunblend']['status']} {_seconds(row['sunblend']['median_seconds'])}"
                    f" vs monolithic {row['monolithic']['status']} {_seconds(row['monolithic']['median_seconds'])}",
                    file=sys.stderr,
                )
    result = {
        "benchmark": "planner",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": repeat,
        "quick": args.quick,
        "time_limit_seconds": args.time_limit,
        "cases": rows,
    }
    out = Path(args.out or ("bench/results/planner-quick.json" if args.quick else "bench/results/planner.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    Console(width=200).print(table(rows, repeat))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
