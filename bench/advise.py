"""Commitment-advice benchmark: advise on week 1 of the real traces, replay week 2 holding the advice.

Not a test: it writes JSON and prints a table. It reads the converted real traces (``--traces``,
out/traces/real-14d by default: demand.csv, spot.csv, prices.csv, 14 days from 2024-05-12) and
the pool bench/pools/real-three-regions.yaml; advises commitments (``core.commitments``) on the
first ``--train-days`` of demand, for the pool's committed price and each ``--term``; then
replays the following days with ``sunblend simulate``'s engine under each policy: with the
pool's declared commitments, with none, and per term with the advised ones in their place (at
the term's committed prices, in the pool and in the price trace); and reports cost and served
demand side by side.

    python bench/advise.py --out bench/results/advise.json
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sunblend.api import load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import blend, commitments, problem
from sunblend.present import advice as advice_view
from sunblend.sim import engine, hindsight, history, traces
from sunblend.sim import run as sim_run

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT / "bench" / "pools" / "real-three-regions.yaml"
DECLARED = "declared"
NONE = "none"


def _window(series: traces.Series, start: dt.datetime, end: dt.datetime) -> traces.Series | None:
    """The part of ``series`` in force from ``start`` to before ``end``, its first value moved to ``start``."""
    first = max(bisect.bisect_right(series.times, start) - 1, 0)
    last = bisect.bisect_left(series.times, end)
    times = list(series.times[first:last])
    values = list(series.values[first:last])
    if not times:
        return None
    times[0] = max(times[0], start)
    return traces.Series(tuple(times), tuple(values))


def _windowed(replayed: traces.Traces, start: dt.datetime, end: dt.datetime) -> traces.Traces:
    def cut(items: dict[Any, traces.Series]) -> dict[Any, traces.Series]:
        return {k: s for k, s in ((k, _window(v, start, end)) for k, v in items.items()) if s is not None}

    return traces.Traces(
        demand=cut(dict(replayed.demand)), spot=cut(dict(replayed.spot)), prices=cut(dict(replayed.prices))
    )


def _holding(
    pool_spec: spec.InferencePoolSpec, advised: commitments.TermAdvice, term: commitments.Term
) -> spec.InferencePoolSpec:
    """The pool with the advised commitments in place of its declared ones, at the term's prices."""
    held = [spec.Commitment(gpu_class=c.gpu_class, region=c.region, gpus=c.gpus) for c in advised.commitments if c.gpus]
    classes = []
    for gpu_class in pool_spec.gpu_classes:
        overrides = []
        for region in pool_spec.regions:
            current = next((p for p in gpu_class.region_prices if p.region == region.name), None)
            base = current or spec.RegionPrices(region=region.name)
            price = term.prices.get((gpu_class.name, region.name))
            overrides.append(base.model_copy(update={"committed": price}) if price is not None else base)
        classes.append(gpu_class.model_copy(update={"region_prices": overrides}))
    return pool_spec.model_copy(update={"commitments": held, "gpu_classes": classes})


def _priced(week: traces.Traces, term: commitments.Term) -> traces.Traces:
    """The week with the committed price series replaced by the term's prices."""
    prices = {k: v for k, v in week.prices.items() if k[2] is not CapacityType.COMMITTED}
    for (gpu_class, region), price in term.prices.items():
        prices[(region, gpu_class, CapacityType.COMMITTED)] = traces.Series((week.start,), (price,))
    return traces.Traces(demand=week.demand, spot=week.spot, prices=prices)


def _replay(
    pool_spec: spec.InferencePoolSpec, week: traces.Traces, names: list[str]
) -> tuple[list[dict[str, Any]], float]:
    blend_problem = problem.from_spec(pool_spec, week.start, priced_commitments=True)
    started = time.perf_counter()
    replay = engine.Engine(blend_problem, week)
    runs = [doc for _, doc in sim_run.compare(pool_spec, blend_problem, replay, names)]
    seconds = time.perf_counter() - started
    bound = [doc for _, doc in sim_run.bounds(replay) if doc["policy"] == hindsight.HOURLY]
    sim_run.against_hindsight(runs, bound)
    return runs + bound, seconds


def _compare_planner(sizing: problem.BlendProblem, time_limit: float) -> list[dict[str, Any]]:
    """The same sizing (the pool's committed price) by ``blend.plan``: decomposed, and as one MILP."""
    limited = dataclasses.replace(
        sizing, solver=dataclasses.replace(sizing.solver, time_limit_seconds=min(time_limit, 300.0))
    )
    found = []
    for decompose in (True, False):
        started = time.perf_counter()
        plan = blend.plan(limited, decompose=decompose)
        seconds = time.perf_counter() - started
        found.append(
            {
                "method": "planner SizeCommitments" if decompose else "one MILP",
                "seconds": round(seconds, 1),
                "status": plan.status.value,
                "gapRatio": None if plan.mip_gap is None else round(plan.mip_gap, 4),
                "costDollars": round(plan.total_dollars, 2),
                "gpus": {f"{a.gpu_class}/{a.region}": a.recommended_gpus for a in plan.commitment_advice},
            }
        )
        print(
            f"{found[-1]['method']}: {seconds:.1f} s, {plan.status.value}, ${plan.total_dollars:,.0f}, "
            f"{found[-1]['gpus']}",
            file=sys.stderr,
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(ROOT / "out" / "traces" / "real-14d"), help="converted trace folder")
    parser.add_argument("--train-days", type=int, default=7)
    parser.add_argument("--test-days", type=int, default=7)
    parser.add_argument("--term", action="append", default=[], help="more terms, as `sunblend advise commitments`")
    parser.add_argument("--terms", action="append", default=[], help="a CSV of terms, as `sunblend advise commitments`")
    parser.add_argument("--policies", default="sunblend,on-demand,static-blend,reserved-peak,spot-fallback")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds the advice's search may take")
    parser.add_argument(
        "--compare-planner",
        action="store_true",
        help="also size the pool's term with the planner (SizeCommitments), decomposed and as one MILP",
    )
    parser.add_argument("--out", default="bench/results/advise.json")
    args = parser.parse_args()
    folder = Path(args.traces)
    pool = load.load_text(POOL.read_text())
    regions = [r.name for r in pool.spec.regions]
    replayed = traces.Traces(
        demand=traces.read_demand(folder / "demand.csv"),
        spot=traces.read_spot(folder / "spot.csv"),
        prices=traces.read_prices(folder / "prices.csv"),
    )
    start = replayed.start
    split = start + dt.timedelta(days=args.train_days)
    end = split + dt.timedelta(days=args.test_days)
    samples = history.read_demand_history(folder / "demand.csv", regions)
    training = {r: [(t, v) for t, v in points if t < split] for r, points in samples.items()}

    terms = [t for t in (commitments.pool_term(pool.spec),) if t is not None]
    for text in args.term:
        terms += history.parse_term(text, pool.spec)
    for path in args.terms:
        terms += history.read_terms(Path(path), pool.spec)
    started = time.perf_counter()
    peaks = commitments.hourly_peaks(training)
    sizing = commitments.sizing_problem(pool.spec, peaks)
    advice = commitments.advise(sizing, peaks, terms, time.perf_counter, args.time_limit)
    advise_seconds = time.perf_counter() - started
    print(
        f"advised on {peaks.hours} h x {len(regions)} regions ({peaks.hours * len(regions)} hour-region cells) "
        f"for {len(terms)} term(s) in {advise_seconds:.1f} s",
        file=sys.stderr,
    )

    compared = _compare_planner(sizing, args.time_limit) if args.compare_planner else None

    week = _windowed(replayed, split, end)
    names = args.policies.split(",")
    variants: dict[str, dict[str, Any]] = {}
    declared_runs, seconds = _replay(pool.spec, week, names)
    variants[DECLARED] = {
        "commitments": [c.model_dump(by_alias=True) for c in pool.spec.commitments],
        "replaySeconds": round(seconds, 1),
        "runs": declared_runs,
    }
    bare = pool.spec.model_copy(update={"commitments": []})
    runs, seconds = _replay(bare, week, names)
    variants[NONE] = {"commitments": [], "replaySeconds": round(seconds, 1), "runs": runs}
    for advised, term in zip(advice.terms, terms, strict=True):
        held = _holding(pool.spec, advised, term)
        runs, seconds = _replay(held, _priced(week, term), names)
        variants[f"advised-{term.name}"] = {
            "commitments": [c.model_dump(by_alias=True) for c in held.commitments],
            "replaySeconds": round(seconds, 1),
            "runs": runs,
        }

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "advise",
                "python": platform.python_version(),
                "pool": str(POOL.relative_to(ROOT)),
                "traces": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else folder.name,
                "train": {"start": start.isoformat(), "end": split.isoformat()},
                "test": {"start": split.isoformat(), "end": end.isoformat()},
                "adviseSeconds": round(advise_seconds, 2),
                "advice": advice_view.document(advice, "real-three-regions"),
                "plannerSizing": compared,
                "variants": variants,
            },
            indent=2,
        )
    )
    _print(variants, names)
    print(f"wrote {out}")
    return 0


def _print(variants: dict[str, dict[str, Any]], names: list[str]) -> None:
    result = Table(title="Week 2 replayed: declared commitments vs. advised on week 1")
    columns = ("policy", "commitments", "GPUs held", "cost $", "committed $", "vs declared", "vs hindsight", "served")
    for column in columns:
        result.add_column(column, justify="left" if column in ("policy", "commitments") else "right")
    declared = {d["policy"]: d for d in variants[DECLARED]["runs"]}
    for name in [*names, hindsight.HOURLY]:
        for variant, found in variants.items():
            run = next(d for d in found["runs"] if d["policy"] == name)
            gpus = sum(c["gpus"] for c in found["commitments"])
            if "skipped" in run:
                result.add_row(name, variant, str(gpus), "skipped", "", "", "", "")
                continue
            distance = run.get(sim_run.DISTANCE)
            base = declared[name].get("costDollars")
            change = "" if not base else f"{run['costDollars'] / base - 1:+.1%}"
            result.add_row(
                name,
                variant,
                str(gpus),
                f"{run['costDollars']:,.0f}",
                f"{run['committedDollars']:,.0f}",
                change,
                "" if distance is None else f"{distance:+.1%}",
                f"{run['servedRatio']:.4%}",
            )
    Console(width=160).print(result)


if __name__ == "__main__":
    sys.exit(main())
