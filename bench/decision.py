"""Decision-step benchmark: one step of the engine between hourly plans, per pool, against a plan step.

Not a test: it writes JSON and prints a table. For each pool (the examples and the real-trace
bench pool), it runs the engine (``core.policy.decide``) the way the fast loop does: a first
step plans the hour, then one step every 30 s with live demand that moves around the plan, a
spot notice now and then (which makes the engine buy on-demand and remember the loss), and a
surge above the plan. It times the steps that make no plan (the fast loop's cost per pool) and,
as the baseline in the same run, the steps that plan (the MILP). Medians of ``--repeats`` runs.

    python bench/decision.py --out bench/results/decision.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sunblend.api import load
from sunblend.api.spec import CapacityType
from sunblend.core import commands, forecast, policy, problem

ROOT = Path(__file__).resolve().parents[1]
POOLS = [
    ROOT / "examples" / "follow-the-sun-india-uk.yaml",
    ROOT / "examples" / "three-regions-multi-gpu.yaml",
    ROOT / "bench" / "pools" / "real-three-regions.yaml",
]
START = dt.datetime(2026, 11, 23, 13, 0, tzinfo=dt.UTC)  # busy in Mumbai and London
STEP = dt.timedelta(seconds=30)


def run(path: Path, steps: int) -> dict[str, object]:
    """One run of ``steps`` fast-loop steps over a pool; times split by whether the step planned."""
    pool = load.load_text(path.read_text()).spec
    base = problem.from_spec(pool, START)
    state = policy.State()
    ready: dict[tuple[str, str, CapacityType], int] = {}
    replicas: dict[tuple[str, str, CapacityType], int] = {}
    fast: list[float] = []
    planning: list[float] = []
    decided = 0
    notices: tuple[policy.Notice, ...] = ()
    for i in range(steps):
        now = START + i * STEP
        demand = {
            r.name: forecast.declared_demand(r, now)
            * (1.0 + 0.15 * ((i % 11) - 5) / 5 + (0.6 if 40 <= i % 120 < 44 else 0))
            for r in pool.regions
        }
        spot = [k for k, n in ready.items() if k[2] is CapacityType.SPOT and n > 0]
        if i % 37 == 36 and spot:
            notices = (policy.Notice(f"spot-{i}", spot[0]),)
        seen = policy.Observation(
            now=now,
            ready=dict(ready),
            replicas=dict(replicas),
            ready_replicas=dict(replicas),
            demand=demand,
            metrics_available=True,
            notices=notices,
        )
        started = time.perf_counter()
        decision = policy.decide(pool, base, seen, state)
        elapsed = time.perf_counter() - started
        planned_ahead = state.next_plan is None and decision.state.next_plan is not None
        (planning if decision.plan is not None or planned_ahead else fast).append(elapsed)
        decided += len(decision.commands)
        state = decision.state
        for command in decision.commands:
            if isinstance(command, commands.SetNodes):
                ready[command.offer] = command.nodes
            elif isinstance(command, commands.ScaleSlice):
                replicas[command.offer] = command.replicas
    return {
        "fastSteps": len(fast),
        "planningSteps": len(planning),
        "fastMedianMs": statistics.median(fast) * 1e3,
        "fastP99Ms": sorted(fast)[int(0.99 * (len(fast) - 1))] * 1e3,
        "planningMedianMs": statistics.median(planning) * 1e3 if planning else None,
        "commands": decided,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/decision.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=480, help="fast-loop steps per run (480 = 4 hours at 30 s)")
    args = parser.parse_args()
    rows = []
    for path in POOLS:
        runs = [run(path, args.steps) for _ in range(args.repeats)]
        fast = statistics.median(float(r["fastMedianMs"]) for r in runs)  # type: ignore[arg-type]
        plans = [float(r["planningMedianMs"]) for r in runs if r["planningMedianMs"] is not None]  # type: ignore[arg-type]
        planning = statistics.median(plans) if plans else None
        rows.append(
            {
                "pool": str(path.relative_to(ROOT)),
                "repeats": args.repeats,
                "stepsPerRun": args.steps,
                "fastStepMedianMs": round(fast, 3),
                "fastStepP99MedianMs": round(statistics.median(float(r["fastP99Ms"]) for r in runs), 3),  # type: ignore[arg-type]
                "planningStepMedianMs": None if planning is None else round(planning, 2),
                "fastOverPlanningRatio": None if not planning else round(fast / planning, 4),
                "commandsPerRun": runs[0]["commands"],
                "planningStepsPerRun": runs[0]["planningSteps"],
            }
        )
    document = {
        "benchmark": "decision",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(document, indent=1) + "\n")
    table = Table(title="One decision step per pool (medians)")
    for column in ("pool", "fast step ms", "fast p99 ms", "planning step ms", "fast/planning", "commands/run"):
        table.add_column(column, justify="left" if column == "pool" else "right")
    for row in rows:
        table.add_row(
            row["pool"],
            f"{row['fastStepMedianMs']:.3f}",
            f"{row['fastStepP99MedianMs']:.3f}",
            "-" if row["planningStepMedianMs"] is None else f"{row['planningStepMedianMs']:.1f}",
            "-" if row["fastOverPlanningRatio"] is None else f"{row['fastOverPlanningRatio']:.4f}",
            str(row["commandsPerRun"]),
        )
    Console(width=140).print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
