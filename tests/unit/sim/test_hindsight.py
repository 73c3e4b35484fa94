"""The hindsight bounds: costs known by hand on tiny traces, billed as the engine bills, and in the CLI.

Every pool here has one GPU per node, one replica per node and 100 tokens/s per replica, so a
node serves 100 tokens/s, and (unless a test says) no headroom, minimum or spot rule: the
expected dollars follow from the demand, the spot trace and the prices alone.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sunblend import cli
from sunblend.api.spec import CapacityType
from sunblend.core import problem
from sunblend.sim import engine, hindsight, traces
from sunblend.sim import run as sim_run
from tests.unit import pools

ROOT = Path(__file__).resolve().parents[3]
START = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def _series(values: list[float]) -> traces.Series:
    return traces.Series(tuple(START + i * MINUTE for i in range(len(values))), tuple(float(v) for v in values))


def _replay(pool, demand, spot=None, prices=None) -> engine.Engine:
    replayed = traces.Traces(
        demand={r: _series(v) for r, v in demand.items()},
        spot={(r, "gpu"): _series(v) for r, v in (spot or {}).items()},
        prices={key: _series(v) for key, v in (prices or {}).items()},
    )
    return engine.Engine(problem.from_spec(pool, replayed.start, priced_commitments=True), replayed)


def _spot_cap_pool():
    return pools.pool_spec(gpuClasses=[pools.gpu_class("gpu", spot=1.0, onDemand=3.0)])


def _spot_cap_traces():
    # Hour 0: 250 tokens/s, 450 at minute 20; hour 1: 300. Spot: 10 GPUs, but only 2 at minute 10.
    demand = [250.0] * 60 + [300.0] * 60
    demand[20] = 450.0
    spot = [10.0] * 120
    spot[10] = 2.0
    return {"r1": demand}, {"r1": spot}


def test_hourly_plans_the_peak_minute_with_spot_capped_at_the_hours_minimum():
    demand, spot = _spot_cap_traces()
    bound = hindsight.hourly(_replay(_spot_cap_pool(), demand, spot))
    # Hour 0: the 450 tokens/s peak needs 5 nodes; spot can be had only 2 at minute 10, so 2 spot
    # ($1/h each) and 3 on-demand ($3/h each): $11. Hour 1: 3 spot nodes: $3.
    assert bound.dollars[CapacityType.SPOT] == pytest.approx(2 * 1.0 + 3 * 1.0)
    assert bound.dollars[CapacityType.ON_DEMAND] == pytest.approx(3 * 3.0)
    assert bound.total_dollars == pytest.approx(14.0)
    assert bound.status.value == "Optimal" and bound.solves == 2
    assert bound.nodes[10] == {("r1", "gpu", CapacityType.SPOT): 2.0, ("r1", "gpu", CapacityType.ON_DEMAND): 3.0}
    assert bound.gpus("r1", {o.key: o for o in _replay(_spot_cap_pool(), demand, spot).problem.offers})[70] == 3.0


def test_per_step_relaxation_follows_each_minute():
    demand, spot = _spot_cap_traces()
    bound = hindsight.per_step(_replay(_spot_cap_pool(), demand, spot))
    # Fractional nodes each minute: 2.5 spot ($2.5/h) for 58 minutes of hour 0; at minute 10 only
    # 2 spot, so 2 spot + 0.5 on-demand ($3.5/h); at minute 20, 4.5 spot ($4.5/h); hour 1, 3 spot.
    spot_dollars = (58 * 2.5 + 2.0 + 4.5 + 60 * 3.0) / 60
    on_demand_dollars = 0.5 * 3.0 / 60
    assert bound.dollars[CapacityType.SPOT] == pytest.approx(spot_dollars)
    assert bound.dollars[CapacityType.ON_DEMAND] == pytest.approx(on_demand_dollars)
    assert bound.total_dollars == pytest.approx(333 / 60)
    assert bound.lp_relaxation and bound.solves == 4  # 250/10 GPUs, 250/2, 450/10, 300/10
    assert bound.total_dollars < hindsight.hourly(_replay(_spot_cap_pool(), demand, spot)).total_dollars


def _two_regions(max_latency_ms: int):
    return pools.pool_spec(
        regions=[pools.region("r1"), pools.region("r2")],
        gpuClasses=[{**pools.gpu_class("gpu", onDemand=3.0), "regionPrices": [{"region": "r2", "onDemand": 1.0}]}],
        policy={
            "headroom": 0,
            "maxSpotFraction": 1,
            "spotLossServedFraction": 0,
            "minReplicasPerRegion": 0,
            "routing": {"maxLatencyMs": max_latency_ms, "latencies": [{"from": "r1", "to": "r2", "milliseconds": 50}]},
        },
    )


def test_demand_is_routed_to_a_cheaper_region_within_the_latency_limit():
    demand = {"r1": [300.0] * 60, "r2": [100.0] * 60}
    routed = _replay(_two_regions(100), demand)
    # r1's 300 tokens/s are served in r2 with r2's own 100: 4 nodes at $1/h.
    for bound in (hindsight.hourly(routed), hindsight.per_step(routed)):
        assert bound.total_dollars == pytest.approx(4 * 1.0)
        assert bound.gpus("r2", routed.offers)[0] == pytest.approx(4.0) and bound.gpus("r1", routed.offers)[0] == 0
    # Without the route each region serves its own: 3 nodes at $3/h and 1 at $1/h.
    local = _replay(_two_regions(0), demand)
    assert hindsight.hourly(local).total_dollars == pytest.approx(3 * 3.0 + 1 * 1.0)


def _committed_pool(**policy):
    return pools.pool_spec(
        gpuClasses=[pools.gpu_class("gpu", committed=2.0, spot=1.0, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 2}],
        policy={"headroom": 0, "maxSpotFraction": 0, "spotLossServedFraction": 0, "minReplicasPerRegion": 0, **policy},
    )


def test_held_commitments_are_sunk_and_billed_every_hour():
    replay = _replay(_committed_pool(), {"r1": [500.0] * 60 + [100.0] * 60})
    # The 2 committed GPUs cost $2/h each for both hours, used or not: $8. Hour 0 needs 5 nodes:
    # the 2 committed ones (free at the margin) and 3 on-demand at $3/h: $9. Hour 1: 1 committed node.
    for bound in (hindsight.hourly(replay), hindsight.per_step(replay)):
        assert bound.dollars[CapacityType.COMMITTED] == pytest.approx(2 * 2.0 * 2)
        assert bound.dollars[CapacityType.ON_DEMAND] == pytest.approx(3 * 3.0)
        assert bound.dollars[CapacityType.SPOT] == 0
        assert bound.total_dollars == pytest.approx(17.0)


class Clairvoyant:
    """Runs the hindsight-hourly plan's nodes in the engine: it holds the pool's commitments."""

    name = "clairvoyant"

    def __init__(self, bound: hindsight.Bound) -> None:
        self.bound = bound

    def commitments(self, blend_problem):
        return {(o.region, o.gpu_class): o.committed_nodes for o in blend_problem.offers if o.committed_nodes}

    def decide(self, observation):
        return {key: round(n) for key, n in self.bound.nodes[observation.step].items()}


def test_the_hourly_bound_is_billed_exactly_as_the_engine_bills_its_plan():
    # Prices change inside hour 0 (on-demand at minute 30, spot at minute 45): the hour's plan is
    # priced at the hour's mean, which is what the engine bills for nodes held the whole hour.
    pool = pools.pool_spec(
        gpuClasses=[pools.gpu_class("gpu", committed=2.0, spot=1.0, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 1}],
    )
    demand, spot = _spot_cap_traces()
    on_demand = [3.0] * 30 + [4.0] * 90
    spot_price = [1.0] * 45 + [1.5] * 75
    replay = _replay(
        pool,
        demand,
        spot,
        {("r1", "gpu", CapacityType.ON_DEMAND): on_demand, ("r1", "gpu", CapacityType.SPOT): spot_price},
    )
    bound = hindsight.hourly(replay)
    run = replay.run(Clairvoyant(bound))
    assert run.spot_preemptions == 0 and run.spot_launch_failures == 0
    for capacity_type in CapacityType:
        assert bound.dollars[capacity_type] == pytest.approx(run.dollars[capacity_type])
    assert bound.all_on_demand_dollars == pytest.approx(run.all_on_demand_dollars)
    # By hand: 1 committed GPU at $2/h for 2 h. Hour 0 (peak 450): 1 committed, 2 spot (the minute-10
    # cap) and 2 on-demand. Hour 1 (300): 1 committed and 2 spot.
    spot_dollars = 2 * (45 * 1.0 + 15 * 1.5) / 60 + 2 * 1.5
    on_demand_dollars = 2 * (30 * 3.0 + 30 * 4.0) / 60
    assert bound.total_dollars == pytest.approx(2 * 2.0 + spot_dollars + on_demand_dollars)


def test_a_budget_no_plan_can_meet_skips_the_bounds_with_the_reason():
    replay = _replay(_committed_pool(budgetDollarsPerHour=5), {"r1": [500.0] * 60})
    results = sim_run.bounds(replay)
    hourly, step = (doc for _, doc in results)
    assert all(bound is None for bound, _ in results)
    assert hourly["skipped"].startswith(
        "hindsight-hourly: no plan keeps the pool's constraints in the hour from 2026-11-23 00:00 UTC: budget"
    )
    assert step["skipped"].startswith("hindsight-step: no plan keeps the pool's constraints at 2026-11-23 00:00 UTC")
    policy = {"policy": "on-demand", "kind": "policy", "costDollars": 10.0}
    sim_run.against_hindsight([policy], [hourly, step])
    assert policy["vsHindsightHourlyRatio"] is None


SIM = [
    "simulate",
    "examples/follow-the-sun-india-uk.yaml",
    "--demand",
    "tests/data/sim/demand.csv",
    "--spot",
    "tests/data/sim/spot.csv",
    "--prices",
    "tests/data/sim/prices.csv",
    "--policy",
    "on-demand",
]


def test_simulate_json_on_stdout_carries_the_bounds_and_each_rows_distance():
    run = subprocess.run(
        [sys.executable, "-m", "sunblend.cli", *SIM, "-o", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": ""},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["policy"] == "on-demand" and result["kind"] == "policy"
    hourly, step = result["bounds"]
    assert (hourly["policy"], step["policy"]) == ("hindsight-hourly", "hindsight-step")
    assert hourly["kind"] == step["kind"] == "bound" and step["lpRelaxation"] and not hourly["lpRelaxation"]
    assert hourly["servedRatio"] == step["servedRatio"] == 1.0 and hourly["plannerStatus"] == "Optimal"
    assert 0 < step["costDollars"] < hourly["costDollars"] < result["costDollars"]
    assert result["vsHindsightHourlyRatio"] == pytest.approx(
        result["costDollars"] / hourly["costDollars"] - 1, abs=1e-4
    )
    assert hourly["vsHindsightHourlyRatio"] == 0 and step["vsHindsightHourlyRatio"] < 0
    assert hourly["costDollars"] == pytest.approx(
        hourly["committedDollars"] + hourly["spotDollars"] + hourly["onDemandDollars"], abs=0.02
    )
    assert hourly["allOnDemandReferenceDollars"] == result["allOnDemandReferenceDollars"]


def test_simulate_table_yaml_and_chart_show_the_bounds(tmp_path, capsys):
    png = tmp_path / "simulation.png"
    assert cli.main([*SIM, "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "hindsight-hourly (bound)" in out and "hindsight-step (bound, LP relaxation)" in out
    assert "vs hindsight" in out and "cost / hindsight-hourly cost - 1" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main([*SIM, "-o", "yaml"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert [b["policy"] for b in document["bounds"]] == ["hindsight-hourly", "hindsight-step"]
    assert "vsHindsightHourlyRatio" in document
