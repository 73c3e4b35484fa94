"""One step of the operator's loop on pool bodies as the API server returns them, the cluster faked."""

from __future__ import annotations

import datetime as dt

from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from sunblend.loop import measure, merge, reconcile
from sunblend.observe import prometheus
from tests.unit import pools

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
OD = ("r1", "gpu", CapacityType.ON_DEMAND)


def _body(generation=1, status=None, **spec_fields):
    body = pools.document(**spec_fields)
    body["metadata"].update({"namespace": "default", "generation": generation, "uid": "u1"})
    if status is not None:
        body["status"] = status
    return body


def _again(body, outcome):
    return {**body, "status": merge.apply(body.get("status") or {}, outcome.status)}


class Cluster:
    """Stands in for observe.snapshot.SnapshotReader."""

    def __init__(self, view=None):
        self.view = view or snapshot.Snapshot(
            nodes=(snapshot.NodeView("n1", "r1", "gpu", CapacityType.ON_DEMAND, True),),
        )

    def read(self, pool):
        return self.view


class Actuator:
    """Stands in for actuate.execute.Actuator: records what it was asked to do."""

    def __init__(self):
        self.calls = []

    def settle(self, pool, view, now):
        return []

    def act(self, pool, uid, decided):
        from sunblend.actuate import execute

        self.calls.append(list(decided))
        return execute.Acted(done=tuple(commands.describe(c) for c in decided))


class Prometheus:
    """Stands in for observe.prometheus.PrometheusSource, answering or down."""

    def __init__(self, tokens_per_second=None):
        self.tokens_per_second = tokens_per_second

    def _check(self):
        if self.tokens_per_second is None:
            raise prometheus.MetricsUnavailable("GET /api/v1/query: connection refused")

    def utilisation(self, node_regions):
        self._check()
        return {"r1": prometheus.RegionUtilisation("r1", 0.75, 16, ("agent",))}

    def demand(self, node_regions):
        self._check()
        return {"r1": prometheus.RegionDemand("r1", self.tokens_per_second, 3.0, 0.5)}

    def demand_history(self, region, node_regions, start, end, step):
        self._check()
        return []


def _services(**fields):
    fields.setdefault("snapshots", Cluster())
    return reconcile.Services(**fields)


def _types(outcome):
    return {c["type"]: c for c in outcome.status["conditions"]}


def test_a_valid_pool_gets_a_full_status_a_plan_and_a_plan_changed_event():
    outcome = reconcile.reconcile(_body(), NOW, _services())
    status = outcome.status
    assert status["observedGeneration"] == 1
    assert set(_types(outcome)) == {
        "Ready",
        "Planned",
        "CapacityAvailable",
        "MetricsAvailable",
        "Acting",
        "DrainBlocked",
    }
    assert _types(outcome)["Ready"]["status"] == "True"
    assert "PlanChanged" in [e.reason for e in outcome.events]
    assert status["plannedHour"] == "2026-11-23T12:00:00Z"
    assert status["policyState"]["hour"] == "2026-11-23T12:00:00Z"


def test_a_second_step_in_the_hour_keeps_the_plan_and_posts_no_plan_event():
    services = _services()
    first = reconcile.reconcile(_body(), NOW, services)
    again = reconcile.reconcile(_again(_body(), first), NOW + dt.timedelta(minutes=1), services)
    assert again.plan is None
    assert "plannedHour" not in again.status  # a merge patch leaves the plan as it was
    assert [e.reason for e in again.events if e.reason == "PlanChanged"] == []
    assert _types(again)["Ready"] == _types(first)["Ready"]


def test_a_spec_change_plans_again_within_the_hour():
    services = _services()
    first = reconcile.reconcile(_body(), NOW, services)
    changed = reconcile.reconcile(_again(_body(generation=2), first), NOW + dt.timedelta(minutes=1), services)
    assert changed.plan is not None
    assert changed.status["observedGeneration"] == 2


def test_an_invalid_pool_is_not_ready_with_the_field_named_and_one_event():
    body = _body(commitments=[{"gpuClass": "gpu", "region": "mars-1", "gpus": 8}])
    outcome = reconcile.reconcile(body, NOW, _services())
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.commitments[0].region" in ready["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert outcome.status["current"] == [] and outcome.status["costDollarsPerHour"] is None  # cleared
    repeat = reconcile.reconcile(
        _body(status=outcome.status, commitments=body["spec"]["commitments"]), NOW, _services()
    )
    assert repeat.events == ()  # no event storm for the same generation


def test_an_infeasible_pool_explains_itself():
    outcome = reconcile.reconcile(_body(policy={"budgetDollarsPerHour": 1}), NOW, _services())
    ready = _types(outcome)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Infeasible")
    assert "budget 1 $/h is below the cheapest feasible plan" in ready["message"]
    assert "Infeasible" in [e.reason for e in outcome.events]


def test_advisory_mode_acts_on_nothing_and_lists_the_commands_it_would_run():
    actuator = Actuator()
    outcome = reconcile.reconcile(_body(), NOW, _services(snapshots=Cluster(snapshot.Snapshot()), actuator=actuator))
    assert actuator.calls == []
    acting = _types(outcome)["Acting"]
    assert (acting["status"], acting["reason"]) == ("False", "Advisory")
    listed = outcome.status["actuation"]["commands"]
    assert outcome.status["actuation"]["mode"] == "Advisory"
    assert {"kind": "SetNodes", "target": "r1/gpu/on-demand", "value": 1, "reason": "the plan for 12:00 UTC"} in listed


def test_enforce_mode_hands_the_commands_to_the_actuator():
    actuator = Actuator()
    body = _body(actuation={"mode": "Enforce"})
    outcome = reconcile.reconcile(body, NOW, _services(snapshots=Cluster(snapshot.Snapshot()), actuator=actuator))
    [asked] = actuator.calls
    assert [commands.key(c) for c in asked] == [commands.key(c) for c in outcome.commands]
    assert ("SetNodes", "r1/gpu/on-demand", "1") in [commands.key(c) for c in asked]
    assert _types(outcome)["Acting"]["reason"] == "Enforcing"


def test_an_hpa_on_the_workload_means_no_replica_write_and_a_recommendation():
    view = snapshot.Snapshot(
        nodes=(snapshot.NodeView("n1", "r1", "gpu", CapacityType.ON_DEMAND, True),),
        workloads=(snapshot.WorkloadView("Deployment", "server", 5, 5),),
        autoscalers=(snapshot.AutoscalerView("HorizontalPodAutoscaler", "server", "Deployment", "server"),),
    )
    actuator = Actuator()
    body = _body(
        actuation={"mode": "Enforce"},
        modelServer={"gpusPerReplica": 1, "tokensPerSecondPerReplica": 100, "workloadRef": {"name": "server"}},
    )
    outcome = reconcile.reconcile(body, NOW, _services(snapshots=Cluster(view), actuator=actuator))
    assert not [c for calls in actuator.calls for c in calls if isinstance(c, commands.ScaleWorkload)]
    acting = _types(outcome)["Acting"]
    assert (acting["status"], acting["reason"]) == ("False", "OwnedByAutoscaler")
    assert (
        "HorizontalPodAutoscaler/server scales Deployment/server; sunblend recommends 1 replicas" in acting["message"]
    )
    without = reconcile.reconcile(
        body, NOW, _services(snapshots=Cluster(snapshot.Snapshot(workloads=view.workloads)), actuator=Actuator())
    )
    assert ("ScaleWorkload", "Deployment/server", "1") in [commands.key(c) for c in without.commands]


def _measured(status=None):
    return _body(status=status)


def test_live_demand_reaches_the_status_and_demand_above_the_plan_gets_on_demand():
    quiet = reconcile.reconcile(_measured(), NOW, _services(metrics=measure.MetricsReader(Prometheus(100.0))))
    busy = reconcile.reconcile(_measured(), NOW, _services(metrics=measure.MetricsReader(Prometheus(900.0))))
    assert quiet.status["observed"] == [{"region": "r1", "utilizationRatio": 0.75, "demandTokensPerSecond": 100.0}]
    assert (_types(busy)["MetricsAvailable"]["status"]) == "True"
    nodes = {c.offer: c.nodes for c in busy.commands if isinstance(c, commands.SetNodes)}
    assert nodes[OD] == 9  # the declared 100 tokens/s plans one node; 900 measured now needs nine
    assert "above the plan" in next(c.reason for c in busy.commands if isinstance(c, commands.SetNodes))


def test_prometheus_down_keeps_the_last_measurements_and_removes_nothing():
    services = _services(metrics=measure.MetricsReader(Prometheus(900.0)))
    before = reconcile.reconcile(_measured(), NOW, services)
    view = snapshot.Snapshot(
        nodes=tuple(snapshot.NodeView(f"n{i}", "r1", "gpu", CapacityType.ON_DEMAND, True) for i in range(9))
    )
    down = reconcile.reconcile(
        _again(_measured(), before),
        NOW + dt.timedelta(minutes=1),
        _services(snapshots=Cluster(view), metrics=measure.MetricsReader(Prometheus(None))),
    )
    condition = _types(down)["MetricsAvailable"]
    assert (condition["status"], condition["reason"]) == ("False", "PrometheusUnavailable")
    assert "connection refused" in condition["message"]
    assert down.status["observed"] == before.status["observed"]  # kept, not zeroed
    assert not [c for c in down.commands if isinstance(c, commands.SetNodes) and c.nodes < c.observed]


def test_per_region_workload_refs_are_each_scaled_to_their_regions_replicas():
    view = snapshot.Snapshot(
        workloads=(
            snapshot.WorkloadView("Deployment", "server-r1", 1, 1),
            snapshot.WorkloadView("StatefulSet", "server-r2", 9, 9),
        ),
    )
    body = _body(
        regions=[pools.region("r1", base=300), pools.region("r2", base=500)],
        actuation={"mode": "Enforce"},
        modelServer={
            "gpusPerReplica": 1,
            "tokensPerSecondPerReplica": 100,
            "workloadRefs": [
                {"region": "r1", "name": "server-r1"},
                {"region": "r2", "kind": "StatefulSet", "name": "server-r2"},
            ],
        },
    )
    outcome = reconcile.reconcile(body, NOW, _services(snapshots=Cluster(view), actuator=Actuator()))
    scaled = {c.name: (c.workload_kind, c.replicas) for c in outcome.commands if isinstance(c, commands.ScaleWorkload)}
    assert scaled == {"server-r1": ("Deployment", 3), "server-r2": ("StatefulSet", 5)}
    assert [(w["region"], w["plannedReplicas"]) for w in outcome.status["workloads"]] == [("r1", 3), ("r2", 5)]


class Routes:
    """Stands in for actuate.routes.RoutePublisher."""

    def __init__(self):
        self.published = []

    def publish(self, pool, uid, weights):
        self.published.append(weights)
        return [f"HTTPRoute {user}" for user in weights]


def test_the_plans_routes_become_traffic_weights_and_in_enforce_mode_http_routes():
    import pathlib

    import yaml

    document = yaml.safe_load(
        (pathlib.Path(__file__).parents[3] / "examples" / "follow-the-sun-india-uk.yaml").read_text()
    )
    document["metadata"].update({"namespace": "default", "generation": 1, "uid": "u1"})
    document["spec"]["actuation"] = {"mode": "Enforce"}
    at = dt.datetime(2026, 11, 22, 17, tzinfo=dt.UTC)
    routes = Routes()
    outcome = reconcile.reconcile(
        document, at, _services(snapshots=Cluster(snapshot.Snapshot()), actuator=Actuator(), routes=routes)
    )
    weights = {
        w["userRegion"]: {b["region"]: b["weight"] for b in w["backends"]} for w in outcome.status["trafficWeights"]
    }
    assert weights["eu-west-2"] == {"eu-west-2": 100}
    assert sum(weights["ap-south-1"].values()) == 100 and weights["ap-south-1"]["eu-west-2"] > 0  # served from London
    [published] = routes.published
    assert {user: dict(shares) for user, shares in published.items()} == weights
    assert "RoutesPublished" in [e.reason for e in outcome.events]
