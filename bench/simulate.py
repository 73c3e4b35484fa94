"""Simulation benchmark: every policy replayed on the real traces; cost, service and run time.

Not a test: it writes JSON and prints a table. It converts the real public traces from
``--shared`` (../shared/data by default) with hack/traces/convert_shared.py unless ``--traces``
names a converted folder, replays bench/pools/real-three-regions.yaml under each policy (the
same engine, so every policy sees the same demand, spot and prices), computes the two hindsight
bounds on the same engine (``sim.hindsight``: rows of ``kind: bound`` after the policies, each
policy with its ``vsHindsightHourlyRatio``), and draws the runs with the hindsight-hourly GPUs.

    python bench/simulate.py --shared ../shared/data --out bench/results/simulate.json --png docs/simulation.png
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from sunblend.api import load
from sunblend.core import problem
from sunblend.present import chart, table
from sunblend.sim import engine, policies, traces
from sunblend.sim import run as sim_run

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT / "bench" / "pools" / "real-three-regions.yaml"
CONVERT = [
    "--regions",
    "us-east-1:America/New_York,eu-west-2:Europe/London,ap-south-1:Asia/Kolkata",
    "--gpu-class",
    "h100",
    "--instance-type",
    "p5.48xlarge",
    "--spot-zones",
    "us-east-1:us-east-1a+us-east-1c+us-east-1d+us-east-1f,eu-west-2:us-east-2a+us-east-2b,"
    "ap-south-1:us-west-2a+us-west-2b+us-west-2c",
    "--scale",
    "us-east-1:4,eu-west-2:2,ap-south-1:2",
    "--gpus-per-zone",
    "16",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the real data folder")
    parser.add_argument("--traces", help="an already converted trace folder (demand.csv, spot.csv, prices.csv)")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--out", default="bench/results/simulate.json")
    parser.add_argument("--png", help="draw every run")
    parser.add_argument("--policies", default=",".join(policies.POLICIES))
    parser.add_argument("--headroom", type=float, help="replace the pool's policy.headroom")
    parser.add_argument(
        "--service-target", help="replace the pool's policy.serviceTarget: a share such as 0.999, or 'none'"
    )
    args = parser.parse_args()
    folder = Path(args.traces) if args.traces else ROOT / "out" / "traces" / f"real-{args.days}d"
    if not args.traces:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "hack" / "traces" / "convert_shared.py"),
                "--shared",
                args.shared,
                "--out",
                str(folder),
                "--days",
                str(args.days),
                *CONVERT,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"converted the real traces in {time.perf_counter() - started:.1f} s into {folder}", file=sys.stderr)
    pool = load.load_text(POOL.read_text())
    changed = {}
    if args.headroom is not None:
        changed["headroom"] = args.headroom
    if args.service_target is not None:
        changed["service_target"] = None if args.service_target == "none" else float(args.service_target)
    if changed:
        pool = pool.model_copy(
            update={"spec": pool.spec.model_copy(update={"policy": pool.spec.policy.model_copy(update=changed)})}
        )
    replayed = traces.Traces(
        demand=traces.read_demand(folder / "demand.csv"),
        spot=traces.read_spot(folder / "spot.csv"),
        prices=traces.read_prices(folder / "prices.csv"),
    )
    blend_problem = problem.from_spec(pool.spec, replayed.start, priced_commitments=True)
    started = time.perf_counter()
    replay = engine.Engine(blend_problem, replayed)
    setup_seconds = time.perf_counter() - started
    results = sim_run.compare(pool.spec, blend_problem, replay, args.policies.split(","))
    started = time.perf_counter()
    hindsight = sim_run.bounds(replay)
    hindsight_seconds = time.perf_counter() - started
    documents = [doc for _, doc in results] + [doc for _, doc in hindsight]
    sim_run.against_hindsight(documents, [doc for _, doc in hindsight])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "simulate",
                "python": platform.python_version(),
                "pool": str(POOL.relative_to(ROOT)),
                "policyOverrides": {
                    k: v for k, v in vars(args).items() if k in ("headroom", "service_target") and v is not None
                },
                "days": args.days,
                "regions": list(blend_problem.regions),
                "steps": len(replay.times),
                "engineSetupSeconds": round(setup_seconds, 3),
                "hindsightSeconds": round(hindsight_seconds, 3),
                "runs": documents,
            },
            indent=2,
        )
    )
    table.render_simulation(documents, Console(width=200))
    if args.png:
        hourly = sim_run.hourly_bound(hindsight)
        chart.draw_simulation([r for r, d in results if "skipped" not in d], blend_problem, Path(args.png), hourly)
        print(f"wrote {args.png}")
    print(f"hindsight bounds computed in {hindsight_seconds:.1f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
