"""Plans and simulated runs as PNGs: per region, stacked GPUs by capacity type over time, demand overlaid.

``draw`` draws a ``Plan`` (``sunblend plan --png``); ``draw_simulation`` draws simulated runs
(``sunblend simulate --png``, bench/simulate.py), with the hindsight-hourly plan's GPUs as a line
beside each run's capacity when it is given.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sunblend.api.spec import CapacityType
from sunblend.core.plan import Plan
from sunblend.core.problem import BlendProblem
from sunblend.sim.engine import Run
from sunblend.sim.hindsight import Bound

_COLOURS = {CapacityType.COMMITTED: "#4c72b0", CapacityType.SPOT: "#55a868", CapacityType.ON_DEMAND: "#c44e52"}


def draw(plan: Plan, problem: BlendProblem, path: Path, title: str) -> None:
    """Write the chart for ``plan`` to ``path``."""
    regions = problem.regions
    fig, axes = plt.subplots(len(regions), 1, figsize=(10, 3.2 * len(regions)), sharex=True, squeeze=False)
    hours = list(range(problem.horizon))
    edges = list(range(problem.horizon + 1))  # each hour drawn across its whole width
    labels = [f"{h:%H}" for h in problem.hours]
    for ax, region in zip(axes[:, 0], regions, strict=True):
        stacks = [
            _held(
                [
                    sum(
                        a.gpus
                        for a in plan.allocations_at(t)
                        if a.region == region and a.capacity_type is capacity_type
                    )
                    for t in hours
                ]
            )
            for capacity_type in CapacityType
        ]
        ax.stackplot(
            edges,
            *stacks,
            labels=[c.value for c in CapacityType],
            colors=[_COLOURS[c] for c in CapacityType],
            step="post",
            alpha=0.85,
        )
        gpus_per_token = _gpus_per_token(problem)
        served = [sum(f.tokens_per_second for f in plan.flows if f.hour == t and f.to_region == region) for t in hours]
        local = list(problem.demand[region])
        ax.step(
            edges,
            _held([d * gpus_per_token for d in local]),
            where="post",
            color="black",
            linewidth=1.5,
            label="own demand (GPU-equivalent)",
        )
        ax.step(
            edges,
            _held([d * gpus_per_token for d in served]),
            where="post",
            color="black",
            linestyle="--",
            linewidth=1,
            label="demand served here",
        )
        ax.set_title(f"{region} ({problem.time_zones[region]})")
        ax.set_ylabel("GPUs")
        ax.legend(loc="upper left", fontsize=7)
    step = max(1, math.ceil(len(hours) / 24))
    axes[-1, 0].set_xticks(hours[::step], labels[::step])
    axes[-1, 0].set_xlabel(f"hour (UTC), from {problem.hours[0]:%Y-%m-%d %H:%M}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _held(values: list[float] | list[int]) -> list[float]:
    """Values repeated once at the end, so a post-step plot covers the last hour too."""
    return [float(v) for v in values] + [float(values[-1])] if values else []


def _gpus_per_token(problem: BlendProblem) -> float:
    """GPUs one token/s needs on the most GPU-efficient class (headroom included), to draw demand."""
    per_token = min((o.gpus_per_node / o.tokens_per_second_per_node for o in problem.offers), default=0.0)
    return (1 + problem.headroom) * per_token


def draw_simulation(runs: list[Run], problem: BlendProblem, path: Path, hindsight: Bound | None = None) -> None:
    """Demand against capacity by capacity type over time: a row per policy, a column per region.

    ``hindsight`` (the hindsight-hourly bound) is drawn in every panel as a line of its GPUs.
    """
    regions = problem.regions
    offers = {o.key: o for o in problem.offers}
    hindsight_gpus = {r: hindsight.gpus(r, offers) for r in regions} if hindsight is not None else {}
    fig, axes = plt.subplots(
        len(runs), len(regions), figsize=(6 * len(regions), 2.6 * len(runs)), sharex=True, squeeze=False
    )
    for row, run in enumerate(runs):
        for col, region in enumerate(regions):
            ax = axes[row, col]
            per_token = _gpus_per_token(problem) / (1 + problem.headroom)
            ax.stackplot(
                run.times,
                *[run.gpus[(region, c)] for c in CapacityType],
                labels=[c.value for c in CapacityType],
                colors=[_COLOURS[c] for c in CapacityType],
                step="post",
                alpha=0.85,
            )
            ax.plot(
                run.times,
                [d * per_token for d in run.demand[region]],
                color="black",
                linewidth=0.6,
                label="own demand (GPU-equivalent)",
            )
            if hindsight is not None and len(hindsight.times) == len(run.times):
                ax.step(
                    run.times,
                    hindsight_gpus[region],
                    where="post",
                    color="#8172b2",
                    linestyle="--",
                    linewidth=0.8,
                    label=f"{hindsight.name} GPUs (bound)",
                )
            ax.set_title(f"{run.policy}: {region}", fontsize=9)
            ax.set_ylabel("GPUs")
            if row == 0 and col == 0:
                ax.legend(loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
