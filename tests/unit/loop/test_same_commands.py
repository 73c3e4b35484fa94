"""One engine: the operator's reconcile path and the simulator decide the same Commands.

A short simulation runs the simulator's ``sunblend`` policy and records, at every step, what it
observed and which Commands the engine returned. The same observations are then fed, step by
step, through the operator's path (``loop.reconcile``), with the cluster and Prometheus faked
at the boundary as a Snapshot and Measurements, and with the engine's state carried through the
pool's status as JSON. The Commands must be the same at every step.
"""

from __future__ import annotations

import datetime as dt
import json

from sunblend.actuate import manifests
from sunblend.api import load
from sunblend.api.spec import CapacityType
from sunblend.core import commands, problem, snapshot
from sunblend.loop import measure, merge, reconcile
from sunblend.sim import engine, policies, traces
from tests.unit import pools

START = dt.datetime(2026, 11, 23, 11, 40, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
STEPS = 40  # across 12:00, with the next hour planned 8 minutes early


def _document():
    document = pools.document(
        regions=[pools.region("r1", base=300, peak=900, busy=(12, 18)), pools.region("r2", base=200)],
        gpuClasses=[pools.gpu_class("gpu", spot=1.0, onDemand=3.0)],
        policy={
            "headroom": 0.2,
            "maxSpotFraction": 0.6,
            "spotLossServedFraction": 0.3,
            "minReplicasPerRegion": 1,
            "routing": {"maxLatencyMs": 100, "latencies": [{"from": "r1", "to": "r2", "milliseconds": 50}]},
        },
    )
    document["spec"]["modelServer"]["template"] = {"spec": {"containers": [{"name": "server", "image": "vllm"}]}}
    document["metadata"].update({"namespace": "default", "generation": 1, "uid": "u1", "name": "t"})
    return document


def _series(values):
    return traces.Series(tuple(START + i * MINUTE for i in range(len(values))), tuple(float(v) for v in values))


class Recording:
    """The simulator's sunblend policy, keeping each step's observation, slices and commands."""

    def __init__(self, inner: policies.Sunblend) -> None:
        self.inner = inner
        self.name = inner.name
        self.steps: list[tuple[engine.Observation, dict, tuple]] = []

    def commitments(self, blend_problem):
        return self.inner.commitments(blend_problem)

    def decide(self, observation):
        slices = dict(self.inner.slices)
        history = observation.history
        demand = {r: history.at(r, observation.step - 1) for r in ("r1", "r2")} if observation.step else {}
        chosen = self.inner.decide(observation)
        self.steps.append((observation, slices, demand, self.inner.decisions[-1].commands))
        return chosen


class Cluster:
    """Stands in for observe.snapshot.SnapshotReader: returns the snapshot set for this step."""

    view = snapshot.Snapshot()

    def read(self, pool):
        return self.view


class Prometheus:
    """Stands in for loop.measure.MetricsReader: the demand set for this step."""

    def __init__(self) -> None:
        self.demand: dict[str, float] = {}

    def measure(self, regions, node_regions, now):
        return measure.Measurements(available=True, demand=dict(self.demand))


def _snapshot(observation: engine.Observation, slices: dict, offers) -> snapshot.Snapshot:
    nodes = []
    for key, count in observation.running.items():
        nodes += [snapshot.NodeView(f"{key[0]}-{key[2].value}-{i}", key[0], key[1], key[2], True) for i in range(count)]
    for key, count in observation.booting.items():  # named as they will be once running
        first = observation.running.get(key, 0)
        nodes += [
            snapshot.NodeView(f"{key[0]}-{key[2].value}-{i}", key[0], key[1], key[2], False)
            for i in range(first, first + count)
        ]
    for key, lost in sorted(observation.lost_spot.items()):
        first = observation.running.get(key, 0)  # the lost nodes are the ones no longer counted running
        for i in range(first, first + lost):
            nodes.append(
                snapshot.NodeView(f"{key[0]}-{key[2].value}-{i}", key[0], key[1], key[2], True, interruption="itn")
            )
    workloads = tuple(
        snapshot.WorkloadView(
            "Deployment",
            manifests.slice_name("t", key),
            replicas,
            min(replicas, observation.running.get(key, 0) * offers[key].replicas_per_node),
        )
        for key, replicas in slices.items()
    )
    return snapshot.Snapshot(nodes=tuple(nodes), workloads=workloads)


def test_the_operator_path_and_the_simulator_decide_the_same_commands():
    document = _document()
    pool = load.parse_pool(document).spec
    blend_problem = problem.from_spec(pool, START)
    adapter = policies.Sunblend(pool, blend_problem)
    adapter.record = True
    recording = Recording(adapter)
    r1 = [300 + 40 * (i % 5) for i in range(STEPS)]
    r1[25:29] = [1400] * 4  # a surge above the plan
    spot = [8.0] * 15 + [2.0] * (STEPS - 15)  # spot taken away after 15 minutes
    run_traces = traces.Traces(
        demand={"r1": _series(r1), "r2": _series([200] * STEPS)}, spot={("r1", "gpu"): _series(spot)}
    )
    engine.Engine(blend_problem, run_traces).run(recording)

    cluster, prometheus = Cluster(), Prometheus()
    services = reconcile.Services(snapshots=cluster, metrics=prometheus)  # type: ignore[arg-type]
    offers = {o.key: o for o in blend_problem.offers}
    body = document
    kinds_seen = set()
    lost_seen = False
    for observation, slices, demand, sim_commands in recording.steps:
        cluster.view = _snapshot(observation, slices, offers)
        prometheus.demand = demand
        outcome = reconcile.reconcile(body, observation.now, services)
        # The status as the API server keeps it after the merge patch, through JSON.
        body = json.loads(json.dumps({**body, "status": merge.apply(body.get("status") or {}, outcome.status)}))
        assert [commands.key(c) for c in outcome.commands] == [
            commands.key(c) for c in commands.ordered(list(sim_commands))
        ], observation.now
        kinds_seen |= {c.kind for c in outcome.commands}
        lost_seen = lost_seen or any(e.reason == "SpotInterrupted" for e in outcome.events)
    # The sequence exercised what it is meant to: plans, slices and a spot loss.
    assert {commands.Kind.SET_NODES, commands.Kind.SCALE_SLICE} <= kinds_seen
    assert lost_seen
    assert any(
        c.offer[2] is CapacityType.ON_DEMAND for _, _, _, cs in recording.steps for c in cs if "lost spot" in c.reason
    )
