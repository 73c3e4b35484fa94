"""The simulator: no policy sees the future, preemption is handled, totals reconcile exactly."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from sunblend.api.spec import CapacityType
from sunblend.core import problem
from sunblend.sim import engine, policies, traces
from sunblend.sim import run as sim_run
from tests.unit import pools

START = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
DATA = Path(__file__).resolve().parents[2] / "data" / "sim"
MINUTE = dt.timedelta(minutes=1)


def _pool(**policy):
    return pools.pool_spec(
        regions=[pools.region("r1", base=300, peak=900, busy=(1, 2)), pools.region("r2", base=200)],
        gpuClasses=[pools.gpu_class("gpu", committed=1.0, spot=1.0, onDemand=3.0)],
        policy={
            "headroom": 0.2,
            "maxSpotFraction": 0.6,
            "spotLossServedFraction": 0.3,
            "minReplicasPerRegion": 1,
            "routing": {"maxLatencyMs": 100, "latencies": [{"from": "r1", "to": "r2", "milliseconds": 50}]},
            **policy,
        },
    )


def _series(values, step=MINUTE):
    return traces.Series(tuple(START + i * step for i in range(len(values))), tuple(float(v) for v in values))


def _traces(r1, r2, spot=None):
    return traces.Traces(
        demand={"r1": _series(r1), "r2": _series(r2)},
        spot={("r1", "gpu"): _series(spot)} if spot is not None else {},
    )


class Recording:
    """Wraps a policy and records its targets at every step."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.targets = []

    def commitments(self, blend_problem):
        return self.inner.commitments(blend_problem)

    def decide(self, observation):
        chosen = dict(self.inner.decide(observation))
        self.targets.append({k: v for k, v in chosen.items() if v})
        return chosen


@pytest.mark.parametrize("name", [n for n in policies.POLICIES if n != "reserved-peak"] + ["reserved-peak"])
def test_no_policy_sees_future_demand(name):
    # Two traces equal for the first 150 minutes, then very different: every decision up to
    # minute 150 must be the same, because a policy may only read demand from before now.
    steps, split = 240, 150
    base = [300 + 10 * (i % 7) for i in range(steps)]
    other = base[:split] + [5000] * (steps - split)
    pool = _pool()
    decisions = []
    for r1 in (base, other):
        blend_problem = problem.from_spec(pool, START, priced_commitments=True)
        recording = Recording(policies.make(name, pool, blend_problem))
        engine.Engine(blend_problem, _traces(r1, [200] * steps)).run(recording)
        decisions.append(recording.targets)
    assert decisions[0][: split + 1] == decisions[1][: split + 1]
    assert decisions[0] != decisions[1] or name == "reserved-peak"  # the test can tell a difference


def test_reading_demand_at_or_after_now_is_refused():
    history = engine.DemandHistory({"r1": [1.0, 2.0, 3.0]})
    history.now = 1
    assert history.at("r1", 0) == 1.0
    with pytest.raises(engine.FutureDemandError):
        history.at("r1", 1)
    assert history.recent("r1", 5) == [1.0]


class FixedSpot:
    """Holds a fixed number of spot nodes (and nothing else)."""

    name = "fixed-spot"

    def __init__(self, nodes):
        self.nodes = nodes
        self.lost = []

    def commitments(self, blend_problem):
        return {}

    def decide(self, observation):
        self.lost.append(dict(observation.lost_spot))
        return {("r1", "gpu", CapacityType.SPOT): self.nodes}


def test_preempted_spot_serves_through_its_notice_then_is_gone():
    # 4 spot nodes (1 GPU each, 100 tok/s) serve r1's 400 tok/s; at minute 10 only 1 spot GPU is left.
    pool = _pool()
    blend_problem = problem.from_spec(pool, START, priced_commitments=True)
    steps = 20
    spot = [4] * 10 + [1] * (steps - 10)
    policy = FixedSpot(4)
    settings = engine.Settings(preemption_notice=dt.timedelta(minutes=2))
    run = engine.Engine(blend_problem, _traces([400] * steps, [0] * steps, spot), settings).run(policy)
    assert run.spot_preemptions == 3
    assert policy.lost[10] == {("r1", "gpu", CapacityType.SPOT): 3}
    served = run.served["r1"]
    assert served[9] == served[10] == served[11] == 400  # the notice: still serving
    assert served[12] == 100  # then only the one node that was not preempted
    # Relaunching spot fails while spot stays scarce: counted, not hidden.
    assert run.spot_launch_failures > 0
    assert run.minutes_below_demand == steps - 12


def test_cost_and_served_demand_totals_reconcile_exactly():
    pool = _pool()
    blend_problem = problem.from_spec(pool, START, priced_commitments=True)
    steps = 180
    r1 = [300 + (500 if 60 <= i < 120 else 0) for i in range(steps)]
    spot = [8] * 90 + [0] * 30 + [8] * 60
    replay = engine.Engine(blend_problem, _traces(r1, [200] * steps, spot))
    for name in policies.POLICIES:
        run = replay.run(policies.make(name, pool, blend_problem))
        hours = 1 / 60
        assert run.demand_token_seconds == pytest.approx(sum(r1) * 60 + 200 * steps * 60)
        assert run.demand_token_seconds == pytest.approx(sum(itertools.chain.from_iterable(run.demand.values())) * 60)
        assert run.served_token_seconds == pytest.approx(sum(itertools.chain.from_iterable(run.served.values())) * 60)
        assert run.served_token_seconds + run.unserved_token_seconds == pytest.approx(run.demand_token_seconds)
        # Cost is the sum over steps of GPUs running or booting times the price: GPUs by type.
        billed_spot_gpu_hours = run.dollars[CapacityType.SPOT] / 1.0
        assert billed_spot_gpu_hours >= sum(sum(run.gpus[(r, CapacityType.SPOT)]) for r in ("r1", "r2")) * hours - 1e-9
        assert run.total_dollars == pytest.approx(sum(run.dollars.values()))
        doc = sim_run.summary(run)
        assert doc["costDollars"] == pytest.approx(
            doc["committedDollars"] + doc["spotDollars"] + doc["onDemandDollars"], abs=0.02
        )


def test_sunblend_serves_the_bundled_synthetic_traces_and_beats_all_on_demand():
    pool = pools.pool_spec(
        modelServer={"gpusPerReplica": 2, "tokensPerSecondPerReplica": 2400},
        regions=[
            pools.region("ap-south-1", tz="Asia/Kolkata", base=6000, peak=30000, busy=(9, 21)),
            pools.region("eu-west-2", tz="Europe/London", base=6000, peak=30000, busy=(9, 21)),
        ],
        gpuClasses=[pools.gpu_class("h100", gpus_per_node=8, committed=6.5, spot=3.0, onDemand=8.5)],
        commitments=[
            {"gpuClass": "h100", "region": "ap-south-1", "gpus": 8},
            {"gpuClass": "h100", "region": "eu-west-2", "gpus": 8},
        ],
        policy={
            "headroom": 0.2,
            "maxSpotFraction": 0.7,
            "spotLossServedFraction": 0.3,
            "minReplicasPerRegion": 1,
            "routing": {
                "maxLatencyMs": 150,
                "latencies": [{"from": "ap-south-1", "to": "eu-west-2", "milliseconds": 120}],
            },
        },
    )
    replayed = traces.Traces(
        demand=traces.read_demand(DATA / "demand.csv"),
        spot=traces.read_spot(DATA / "spot.csv"),
        prices=traces.read_prices(DATA / "prices.csv"),
    )
    blend_problem = problem.from_spec(pool, replayed.start, priced_commitments=True)
    replay = engine.Engine(blend_problem, replayed)
    results = {doc["policy"]: doc for _, doc in sim_run.compare(pool, blend_problem, replay, ["on-demand", "sunblend"])}
    assert results["sunblend"]["servedRatio"] >= 0.999
    assert results["sunblend"]["costDollars"] < results["on-demand"]["costDollars"]


def test_bad_trace_rows_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "demand.csv"
    path.write_text("timestamp,region,tokens_per_second\n2026-11-23T00:00:00Z,r1,12\n2026-11-23T00:01:00,r1,12\n")
    with pytest.raises(traces.TraceError, match=r"demand.csv:3 timestamp: .* has no time zone"):
        traces.read_demand(path)
    path.write_text("timestamp,region,tokens_per_second\n2026-11-23T00:00:00Z,r1,-5\n")
    with pytest.raises(traces.TraceError, match=r"demand.csv:2 tokens_per_second: '-5' must be a finite, non-negative"):
        traces.read_demand(path)


class LaunchOnce:
    """Asks for ``nodes`` spot nodes of r1 from step ``at`` on, and records what it observes."""

    name = "launch-once"

    def __init__(self, nodes, at):
        self.nodes = nodes
        self.at = at
        self.observations = []

    def commitments(self, blend_problem):
        return {}

    def decide(self, observation):
        self.observations.append(observation)
        wanted = self.nodes if observation.step == self.at else 0
        have = observation.running.get(KEY, 0) + observation.booting.get(KEY, 0)
        return {KEY: max(wanted, have)}


KEY = ("r1", "gpu", CapacityType.SPOT)


def test_a_spot_launch_the_trace_cannot_grant_costs_nothing_and_fails_within_the_api_delay():
    blend_problem = problem.from_spec(_pool(), START, priced_commitments=True)
    step = dt.timedelta(seconds=10)
    settings = engine.Settings(step=step, spot_api_delay=dt.timedelta(seconds=25))
    steps = 30
    replayed = traces.Traces(
        demand={"r1": _series([100] * steps, step), "r2": _series([0] * steps, step)},
        spot={("r1", "gpu"): _series([0] * steps, step)},
    )
    policy = LaunchOnce(3, at=5)
    run = engine.Engine(blend_problem, replayed, settings).run(policy)
    errors = [o.launch_errors.get(KEY, 0) for o in policy.observations]
    # Asked at step 5 (50 s); refused 25 s later, so known at the first step after: 80 s.
    assert errors[8] == 3 and sum(errors) == 3
    assert all(o.booting.get(KEY, 0) == 3 for o in policy.observations[6:8])  # awaiting the answer
    assert policy.observations[8].lost_spot == {KEY: 3}
    assert run.spot_launch_failures == 3
    assert run.dollars[CapacityType.SPOT] == 0
    assert run.spot_preemptions == 0 and run.node_changes == 0


def test_a_granted_spot_launch_is_billed_from_the_request_and_boots_for_the_spot_delay():
    blend_problem = problem.from_spec(_pool(), START, priced_commitments=True)
    steps = 30
    policy = LaunchOnce(2, at=10)
    settings = engine.Settings(spot_delay=dt.timedelta(minutes=5))
    run = engine.Engine(blend_problem, _traces([100] * steps, [0] * steps, [8] * steps), settings).run(policy)
    assert policy.observations[14].running.get(KEY, 0) == 0
    assert policy.observations[15].running.get(KEY, 0) == 2
    # 2 one-GPU nodes at $1/GPU-hour from minute 10 to the end of minute 29: 20 minutes.
    assert run.dollars[CapacityType.SPOT] == pytest.approx(2 * 1.0 * 20 / 60)
    assert sum(run.gpus[("r1", CapacityType.SPOT)]) == 2 * 15  # serving only once it runs
    assert run.spot_launch_failures == 0


def test_spot_taken_back_while_it_boots_stops_billing_at_once():
    blend_problem = problem.from_spec(_pool(), START, priced_commitments=True)
    steps = 20
    policy = LaunchOnce(2, at=5)
    spot = [8] * 7 + [0] * (steps - 7)
    run = engine.Engine(blend_problem, _traces([100] * steps, [0] * steps, spot)).run(policy)
    assert policy.observations[7].lost_spot == {KEY: 2}  # preempted before it ever ran
    assert run.spot_preemptions == 2
    assert run.dollars[CapacityType.SPOT] == pytest.approx(2 * 1.0 * 2 / 60)  # minutes 5 and 6
