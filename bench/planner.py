"""Planner benchmark: build and solve time as pools grow (regions x GPU classes x hours).

Not a test: it writes JSON and prints a table, and passes or fails on nothing. Each case runs
``--repeats`` times; medians are reported. The baseline is the monolithic formulation (the
whole horizon as one MILP), measured on the same instances in the same run.

    python bench/planner.py --out bench/results/planner.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sunblend.api.spec import CapacityType
from sunblend.core import blend, problem

NOW = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
ZONES = [
    "Asia/Kolkata",
    "Europe/London",
    "America/New_York",
    "Asia/Tokyo",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Sydney",
    "America/Sao_Paulo",
]
# (name, GPUs per node, tokens/s per replica, on-demand $/GPU-h): realistic node sizes.
CLASSES = [
    ("h100", 8, 2400, 8.9),
    ("a100", 8, 1100, 3.4),
    ("l40s", 4, 700, 1.9),
    ("h200", 8, 3000, 10.6),
    ("a10g", 4, 300, 1.2),
    ("l4", 8, 250, 0.8),
]
CASES = [(1, 1, 24), (2, 2, 24), (4, 3, 24), (8, 6, 24), (2, 2, 168), (4, 3, 168), (8, 6, 72), (8, 6, 168)]


def instance(regions: int, classes: int, hours: int, noisy: bool, seed: int = 7) -> problem.BlendProblem:
    """A synthetic pool: diurnal demand in each region's time zone, AWS-like prices, 1 GPU/replica."""
    rng = random.Random(seed)
    starts = tuple(NOW + dt.timedelta(hours=h) for h in range(hours))
    names = [f"region-{i}" for i in range(regions)]
    demand = {}
    for i, name in enumerate(names):
        offset = [5.5, 0, -5, 9, 1, -8, 11, -3][i]
        base, peak = 8000 + 1000 * i, 40000 + 3000 * i
        series = []
        for h in range(hours):
            local = (h + offset) % 24
            level = peak if 9 <= local < 21 else base
            series.append(round(level * (rng.uniform(0.85, 1.15) if noisy else 1.0)))
        demand[name] = tuple(series)
    offers = []
    for r, name in enumerate(names):
        for c, (gpu, per_node, tps, on_demand) in enumerate(CLASSES[:classes]):
            regional = on_demand * (1 + 0.05 * r)
            prices = {CapacityType.ON_DEMAND: regional, CapacityType.SPOT: regional * 0.4}
            if c == 0:
                prices[CapacityType.COMMITTED] = regional * 0.6
            for capacity_type, price in prices.items():
                offers.append(
                    problem.Offer(
                        name,
                        gpu,
                        capacity_type,
                        per_node,
                        per_node,
                        price,
                        tps,
                        committed_nodes=4 if capacity_type is CapacityType.COMMITTED else 0,
                    )
                )
    routes = {(a, a) for a in names} | {
        (a, b) for a in names for b in names if abs(names.index(a) - names.index(b)) == 1
    }
    return problem.BlendProblem(
        hours=starts,
        time_zones=dict(zip(names, ZONES, strict=False)),
        demand=demand,
        offers=tuple(offers),
        routes=frozenset(routes),
        headroom=0.2,
        max_spot_fraction=0.6,
        spot_loss_served_fraction=0.5,
        min_replicas_per_region=2,
        solver=problem.SolverSettings(time_limit_seconds=30.0, relative_gap=0.01),
    )


def build_seconds(case: problem.BlendProblem, together: bool) -> float:
    started = time.perf_counter()
    for hours in blend.blocks(case, together):
        blend.build(case, hours)
    return time.perf_counter() - started


def measure(case: problem.BlendProblem, decompose: bool, repeats: int) -> dict[str, object]:
    totals, builds, statuses, costs = [], [], [], []
    for _ in range(repeats):
        builds.append(build_seconds(case, together=not decompose))
        started = time.perf_counter()
        result = blend.plan(case, decompose=decompose)
        totals.append(time.perf_counter() - started)
        statuses.append(result.status.value)
        costs.append(result.total_dollars)
    return {
        "median_seconds": statistics.median(totals),
        "median_build_seconds": statistics.median(builds),
        "runs_seconds": totals,
        "status": statuses[-1],
        "horizon_cost_dollars": round(costs[-1], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/planner.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the two target cases")
    args = parser.parse_args()
    cases = [(2, 2, 24), (8, 6, 168)] if args.quick else CASES
    rows = []
    for regions, classes, hours in cases:
        for noisy in (False, True):
            case = instance(regions, classes, hours, noisy)
            row = {
                "regions": regions,
                "gpu_classes": classes,
                "hours": hours,
                "demand": "noisy forecast" if noisy else "declared profile",
                "integer_variables": len(case.offers) * hours,
                "sunblend": measure(case, True, args.repeats),
                "monolithic": measure(case, False, args.baseline_repeats),
            }
            rows.append(row)
            print(
                f"{regions}x{classes}x{hours} {row['demand']}: {row['sunblend']['median_seconds']:.3f}s "
                f"vs monolithic {row['monolithic']['median_seconds']:.3f}s",
                file=sys.stderr,
            )
    result = {
        "benchmark": "planner",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "repeats": args.repeats,
        "cases": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = Table(title=f"Planner: median of {args.repeats} runs (monolithic: {args.baseline_repeats})")
    for column in (
        "regions x classes x hours",
        "demand",
        "int vars",
        "build s",
        "plan s",
        "status",
        "monolithic s",
        "mono status",
        "speed-up",
        "cost vs mono",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        ours, mono = row["sunblend"], row["monolithic"]
        table.add_row(
            f"{row['regions']} x {row['gpu_classes']} x {row['hours']}",
            row["demand"],
            str(row["integer_variables"]),
            f"{ours['median_build_seconds']:.3f}",
            f"{ours['median_seconds']:.3f}",
            ours["status"],
            f"{mono['median_seconds']:.3f}",
            mono["status"],
            f"{mono['median_seconds'] / ours['median_seconds']:.1f}x",
            f"{ours['horizon_cost_dollars'] / mono['horizon_cost_dollars']:.4f}"
            if mono["horizon_cost_dollars"]
            else "-",
        )
    Console().print(table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
