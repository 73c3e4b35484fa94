"""SpotHedge reproduction: our ``spothedge`` replayed on SkyPilot's spot-availability traces.

Not a test: it writes JSON and prints a table, and passes or fails on nothing. The setting is the
SkyServe paper's (Mao et al., EuroSys 2025): a service with a constant target of 3 replicas of one
GPU each; every zone of the trace (9 AWS zones, one V100 spot instance probed every 195 s from
2023-02-15) is a region that may serve every other; spot costs one third of on-demand. The paper's
headline is SpotHedge at about 0.57 x the cost of on-demand replicas, at high availability.

    python bench/spothedge.py --data ../shared/data --out bench/results/spothedge.json

``--data`` is the shared data folder (the traces are not in the repository). Each zone's spot
value in force at a minute's start holds for that minute (a 1 lets any number of instances run,
a 0 none; the trace says only whether one could be had). The demand, 300 tokens/s at 100 tokens/s
a replica, sits in the first zone; the others serve it over the (free) routes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from sunblend.api import load
from sunblend.core import problem
from sunblend.sim import engine, policies, spothedge, traces
from sunblend.sim import run as sim_run

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "spot_availability_aws_2023-02-15"
START = dt.datetime(2023, 2, 15, tzinfo=dt.UTC)
ON_DEMAND = 3.06  # p3.2xlarge on-demand, $/GPU-hour (us-east-1 list price)
TARGET = 3
TOKENS_PER_REPLICA = 100.0
UNLIMITED_GPUS = 64  # "spot can be had": more than any policy here asks for
PAPER_COST_RATIO = 0.57  # SkyServe, EuroSys 2025: SpotHedge vs on-demand replicas


def zone_traces(data: Path, days: float | None) -> tuple[list[str], dict[str, traces.Series], float]:
    """Each zone's availability as a step function of time, and the traces' length in days."""
    availability: dict[str, traces.Series] = {}
    length = 0.0
    for path in sorted((data / FOLDER).glob("*.json")):
        document = json.loads(path.read_text())
        gap = float(document["metadata"]["gap_seconds"])
        values = document["data"]
        if days is not None:
            values = values[: int(days * 86400 / gap)]
        length = max(length, len(values) * gap / 86400)
        zone = path.name.split("_")[0]
        availability[zone] = traces.Series(
            tuple(START + dt.timedelta(seconds=i * gap) for i in range(len(values))),
            tuple(float(v) * UNLIMITED_GPUS for v in values),
        )
    if not availability:
        raise SystemExit(f"no spot traces in {data / FOLDER}; pass --data")
    return sorted(availability), availability, length


def pool_document(zones: list[str]) -> dict[str, Any]:
    """The pool: every zone a region that may serve every other, demand in the first."""

    def region(name: str, demand: float) -> dict[str, Any]:
        level = {"baselineTokensPerSecond": demand, "peakTokensPerSecond": demand}
        return {"name": name, "timeZone": "UTC", "demand": level}

    latencies = [{"from": a, "to": b, "milliseconds": 1} for i, a in enumerate(zones) for b in zones[i + 1 :]]
    return {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "spothedge-reproduction"},
        "spec": {
            "modelServer": {"gpusPerReplica": 1, "tokensPerSecondPerReplica": TOKENS_PER_REPLICA},
            "regions": [region(z, TARGET * TOKENS_PER_REPLICA if i == 0 else 0.0) for i, z in enumerate(zones)],
            "gpuClasses": [
                {"name": "v100", "gpusPerNode": 1, "prices": {"onDemand": ON_DEMAND, "spot": round(ON_DEMAND / 3, 4)}}
            ],
            "policy": {
                "headroom": 0.0,
                "maxSpotFraction": 1.0,
                "spotLossServedFraction": 0.0,
                "minReplicasPerRegion": 0,
                "routing": {"maxLatencyMs": 10, "latencies": latencies},
            },
        },
    }


def trace_summary(zones: list[str], availability: dict[str, traces.Series], times: list[dt.datetime]) -> dict[str, Any]:
    """How often spot could be had: per zone, and how many zones at once."""
    counts = [sum(1 for z in zones if (availability[z].at(t) or 0) > 0) for t in times]
    steps = len(times)
    return {
        "zoneAvailableRatio": {
            z: round(sum(1 for t in times if (availability[z].at(t) or 0) > 0) / steps, 4) for z in zones
        },
        "noZoneRatio": round(sum(1 for c in counts if c == 0) / steps, 4),
        "fewerThanTargetZonesRatio": round(sum(1 for c in counts if c < TARGET) / steps, 4),
        "meanZonesAvailable": round(sum(counts) / steps, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--days", type=float, help="replay only the first DAYS (default: the whole trace)")
    parser.add_argument("--extra", default="0,1,2", help="N_extra values to replay (1 is the paper artifact's default)")
    parser.add_argument("--out", default="bench/results/spothedge.json")
    args = parser.parse_args()
    zones, availability, days = zone_traces(Path(args.data), args.days)
    pool = load.parse_pool(pool_document(zones)).spec
    end = START + dt.timedelta(days=days)
    flat = {z: traces.Series((START, end), (0.0, 0.0)) for z in zones}
    flat[zones[0]] = traces.Series((START, end), (TARGET * TOKENS_PER_REPLICA,) * 2)
    replayed = traces.Traces(demand=flat, spot={(z, "v100"): availability[z] for z in zones})
    blend_problem = problem.from_spec(pool, START)
    replay = engine.Engine(blend_problem, replayed)
    runs: list[dict[str, Any]] = []
    candidates: list[engine.Policy] = [policies.make("on-demand", pool, blend_problem)]
    for extra in (int(n) for n in args.extra.split(",") if n):
        hedge = spothedge.SpotHedge(pool, blend_problem, extra=extra)
        hedge.name = f"spothedge N_extra={extra}"
        candidates.append(hedge)
    for candidate in candidates:
        started = time.perf_counter()
        record = replay.run(candidate)
        document = sim_run.summary(record, time.perf_counter() - started)
        document["fullyServedMinutesRatio"] = round(1 - record.minutes_below_demand / len(record.times), 6)
        runs.append(document)
    reference = runs[0]["costDollars"]
    for document in runs:
        document["costVsOnDemandAutoscalerRatio"] = round(document["costDollars"] / reference, 4)
    summary = {
        "benchmark": "spothedge",
        "python": platform.python_version(),
        "traces": f"{FOLDER} ({len(zones)} zones, {days:.1f} days)",
        "target": TARGET,
        "onDemandDollarsPerGpuHour": ON_DEMAND,
        "spotDollarsPerGpuHour": round(ON_DEMAND / 3, 4),
        "paperCostVsOnDemandRatio": PAPER_COST_RATIO,
        "steps": len(replay.times),
        "spotAvailability": trace_summary(zones, availability, replay.times),
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['traces']}, target {TARGET}, spot at 1/3 of on-demand; paper: ~{PAPER_COST_RATIO} x on-demand")
    print("| policy | cost | vs on-demand autoscaler | spot | on-demand | demand served | minutes fully served |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for d in runs:
        print(
            f"| {d['policy']} | ${d['costDollars']:,.0f} | {d['costVsOnDemandAutoscalerRatio']:.3f} "
            f"| ${d['spotDollars']:,.0f} | ${d['onDemandDollars']:,.0f} | {d['servedRatio']:.4%} "
            f"| {d['fullyServedMinutesRatio']:.4%} |"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
