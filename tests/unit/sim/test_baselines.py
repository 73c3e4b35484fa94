"""Each baseline does what its source documents, shown on a tiny trace (see each class's docstring)."""

from __future__ import annotations

import datetime as dt

from sunblend.api.spec import CapacityType
from sunblend.core import problem
from sunblend.sim import engine, policies, spothedge, traces
from tests.unit import pools

START = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
SPOT, OD = CapacityType.SPOT, CapacityType.ON_DEMAND
ZONES = ("z1", "z2", "z3")


def _series(values):
    return traces.Series(tuple(START + i * MINUTE for i in range(len(values))), tuple(float(v) for v in values))


def _zones_pool(headroom=0.0):
    """Three zones, each a region that may serve the others; demand only in z1; z3's spot dearer."""
    latencies = [{"from": a, "to": b, "milliseconds": 10} for i, a in enumerate(ZONES) for b in ZONES[i + 1 :]]
    return pools.pool_spec(
        regions=[pools.region("z1", base=200)] + [pools.region(z, base=0) for z in ZONES[1:]],
        gpuClasses=[
            {
                **pools.gpu_class("gpu", committed=1.5, spot=1.0, onDemand=3.0),
                "regionPrices": [{"region": "z3", "spot": 1.2, "onDemand": 3.0}],
            }
        ],
        policy={
            "headroom": headroom,
            "maxSpotFraction": 1,
            "spotLossServedFraction": 0,
            "minReplicasPerRegion": 0,
            "routing": {"maxLatencyMs": 50, "latencies": latencies},
        },
    )


def _replay(name, spot, steps, demand=None, pool=None):
    """Run policy ``name`` over ``steps`` minutes; return its per-step targets, observations and run."""
    pool = pool or _zones_pool()
    blend_problem = problem.from_spec(pool, START, priced_commitments=True)
    demand = demand or {"z1": [200] * steps}
    replayed = traces.Traces(
        demand={z: _series(demand.get(z, [0] * steps)) for z in ZONES},
        spot={(z, "gpu"): _series(values) for z, values in spot.items()},
    )
    recording = Recording(policies.make(name, pool, blend_problem))
    run = engine.Engine(blend_problem, replayed).run(recording)
    return recording, run


class Recording:
    """Wraps a policy and keeps each step's observation and targets."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.targets = []
        self.observations = []

    def commitments(self, blend_problem):
        return self.inner.commitments(blend_problem)

    def decide(self, observation):
        chosen = dict(self.inner.decide(observation))
        self.observations.append(observation)
        self.targets.append({k: v for k, v in chosen.items() if v})
        return chosen


def _spot(targets, zone):
    return targets.get((zone, "gpu", SPOT), 0)


def _on_demand(targets, zone="z1"):
    return targets.get((zone, "gpu", OD), 0)


# -- spothedge --------------------------------------------------------------------------------


def test_spothedge_keeps_target_plus_one_spot_one_per_zone_and_drops_on_demand_as_spot_gets_ready():
    # Demand needs 1 replica, then 2 from minute 10; spot can be had everywhere.
    demand = {"z1": [100] * 10 + [200] * 30}
    recording, run = _replay("spothedge", {z: [8] * 40 for z in ZONES}, 40, demand=demand)
    assert {z: _spot(recording.targets[5], z) for z in ZONES} == {"z1": 1, "z2": 1, "z3": 0}
    settled = recording.targets[-1]
    assert {z: _spot(settled, z) for z in ZONES} == {"z1": 1, "z2": 1, "z3": 1}  # target + N_extra, spread
    assert _on_demand(settled) == 0
    # On-demand is min(target, target + N_extra - ready spot): it stands in for the new replica
    # while it boots, and goes once the spot is ready (running), never for the extra one.
    targets = [sum(1 for z in ZONES if _spot(t, z)) - 1 for t in recording.targets]
    ready = [sum(n for k, n in o.running.items() if k[2] is SPOT) for o in recording.observations]
    expected = [min(t, max(0, t + 1 - r)) for t, r in zip(targets, ready, strict=True)]
    assert [_on_demand(t) for t in recording.targets] == expected
    assert max(expected[10:]) == 1 and expected[-1] == 0
    assert run.served_ratio == 1.0


def test_spothedge_runs_on_demand_for_its_target_while_no_spot_can_be_had():
    recording, run = _replay("spothedge", {z: [0] * 20 for z in ZONES}, 20)
    assert all(_on_demand(t) == 2 for t in recording.targets)  # min(2, 2 + 1 - 0)
    assert all(sum(_spot(t, z) for z in ZONES) == 3 for t in recording.targets)  # spot still asked for
    assert run.dollars[SPOT] == 0 and run.spot_launch_failures > 0


def test_spothedge_moves_a_preempted_zones_replicas_to_active_zones_and_covers_them_on_demand_meanwhile():
    spot = {"z1": [8] * 20 + [0] * 20, "z2": [8] * 40, "z3": [8] * 40}
    recording, run = _replay("spothedge", spot, 40)
    before, at_loss = recording.targets[19], recording.targets[20]
    assert {z: _spot(before, z) for z in ZONES} == {"z1": 1, "z2": 1, "z3": 1}
    # z1 is preempted: its replica is placed again in the cheapest active zone, none in z1, and
    # on-demand covers the spot that is not ready: min(2, 2 + 1 - 2) = 1.
    assert {z: _spot(at_loss, z) for z in ZONES} == {"z1": 0, "z2": 2, "z3": 1}
    assert _on_demand(at_loss) == 1
    assert _on_demand(recording.targets[-1]) == 0
    assert run.served_ratio == 1.0


def test_spothedge_reactivates_every_zone_when_fewer_than_two_are_active():
    zones = [("z1", "gpu", SPOT), ("z2", "gpu", SPOT), ("z3", "gpu", SPOT)]
    placer = spothedge.ZonePlacer(zones)
    placer.set_preempted(zones[0])
    assert placer.active() == zones[1:]
    placer.set_preempted(zones[1])  # one zone left active: all are active again
    assert placer.active() == zones
    placer.set_preempted(zones[2])
    placer.set_active(zones[2])  # a launch there succeeded
    assert placer.active() == zones


# -- spot-fallback (Karpenter) ------------------------------------------------------------------


def test_karpenter_falls_back_to_on_demand_within_one_step_of_an_insufficient_capacity_error():
    recording, run = _replay("spot-fallback", {"z1": [0] * 12}, 12)
    assert _spot(recording.targets[0], "z1") == 2 and _on_demand(recording.targets[0]) == 0
    errors = [o.launch_errors.get(("z1", "gpu", SPOT), 0) for o in recording.observations]
    assert errors[1] == 2  # the refused launch is known at the next step...
    assert _on_demand(recording.targets[1]) == 2  # ...and the fallback launches in that step
    # The offering stays unavailable for the cache's 3-minute TTL, then spot is tried again.
    assert [_spot(t, "z1") for t in recording.targets[1:6]] == [0, 0, 0, 2, 0]
    assert run.dollars[SPOT] == 0  # refused launches are never billed
    assert run.spot_launch_failures == sum(errors)


def test_karpenter_replaces_interrupted_spot_at_the_warning_and_keeps_on_demand_until_spot_runs():
    spot = {"z1": [8] * 10 + [0] * 10 + [8] * 20}
    recording, run = _replay("spot-fallback", spot, 40)
    assert _on_demand(recording.targets[9]) == 0
    assert _on_demand(recording.targets[10]) == 2  # at the interruption warning, not after the notice
    assert _spot(recording.targets[10], "z1") == 0  # the offering is cached unavailable
    # Spot is tried again each time the TTL runs out (minutes 13 and 17 are refused), and gets
    # through at minute 21.
    assert [i for i in range(10, 25) if _spot(recording.targets[i], "z1")] == [13, 17, 21, 22, 23, 24]
    assert _on_demand(recording.targets[21]) == 2
    # Consolidation removes on-demand only once the spot that replaces it is running.
    first_without = next(i for i in range(20, 40) if _on_demand(recording.targets[i]) == 0)
    assert recording.observations[first_without].running.get(("z1", "gpu", SPOT), 0) == 2
    assert run.spot_preemptions == 2


# -- the other baselines ------------------------------------------------------------------------


def test_on_demand_autoscaler_scales_down_only_after_the_hpa_stabilisation_window():
    demand = {"z1": [600] * 20 + [100] * 20}
    recording, _ = _replay("on-demand", {}, 40, demand=demand, pool=_zones_pool(headroom=0.2))
    sizes = [_on_demand(t) for t in recording.targets]
    assert sizes[19] == 8  # 600 tok/s x 1.2 at 100 tok/s a node
    # The last 5 minutes of demand are the signal, held for 5 more (the stabilisation window).
    assert sizes[20:29] == [8] * 9
    assert sizes[-1] == 2


def test_static_blend_keeps_its_on_demand_share_and_retries_spot_as_spot():
    recording, run = _replay("static-blend", {"z1": [0] * 20}, 20, demand={"z1": [1000] * 20})
    last = recording.targets[-1]
    # 10 nodes: a base of 1 on-demand, then 30% of the 9 above it (3), and 6 spot.
    assert _on_demand(last) == 4 and _spot(last, "z1") == 6
    assert all(_on_demand(t) == 4 for t in recording.targets[5:])  # missing spot is not replaced
    assert run.spot_launch_failures > 0 and run.dollars[SPOT] == 0


def test_reserved_peak_commits_the_declared_peak_and_runs_nothing_else():
    recording, run = _replay("reserved-peak", {}, 10)
    assert all(t == {("z1", "gpu", CapacityType.COMMITTED): 2} for t in recording.targets)
    assert run.dollars[SPOT] == run.dollars[OD] == 0
    assert run.dollars[CapacityType.COMMITTED] > 0
