"""One reconcile on pool bodies as the API server returns them, with no cluster to observe."""

from __future__ import annotations

import datetime as dt

from sunblend.handlers import measure, reconcile
from sunblend.observe import prometheus
from tests.unit import pools

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)


def _body(generation=1, status=None, **spec_fields):
    body = pools.document(**spec_fields)
    body["metadata"].update({"namespace": "default", "generation": generation, "uid": "u1"})
    if status is not None:
        body["status"] = status
    return body


def test_a_valid_pool_gets_a_full_status_and_a_plan_changed_event():
    outcome = reconcile.reconcile(_body(), NOW, reader=None)
    assert outcome.status["observedGeneration"] == 1
    assert [c["type"] for c in outcome.status["conditions"]] == [
        "Ready",
        "Planned",
        "CapacityAvailable",
        "MetricsAvailable",
    ]
    assert outcome.status["conditions"][0]["status"] == "True"
    assert [e.reason for e in outcome.events] == ["PlanChanged"]
    # Every status key is present, so a merge patch clears what no longer applies.
    assert set(reconcile.STATUS_KEYS) <= set(outcome.status)


def test_replanning_an_unchanged_pool_posts_no_event():
    first = reconcile.reconcile(_body(), NOW, reader=None)
    again = reconcile.reconcile(_body(status=first.status), NOW, reader=None)
    assert again.events == ()
    assert again.status["conditions"] == first.status["conditions"]


def test_an_invalid_pool_is_not_ready_with_the_field_named_and_one_event():
    body = _body(commitments=[{"gpuClass": "gpu", "region": "mars-1", "gpus": 8}])
    outcome = reconcile.reconcile(body, NOW, reader=None)
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.commitments[0].region" in ready["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert outcome.status["current"] == [] and outcome.status["costDollarsPerHour"] is None  # cleared
    repeat = reconcile.reconcile(_body(status=outcome.status, commitments=body["spec"]["commitments"]), NOW, None)
    assert repeat.events == ()  # no event storm for the same generation


def test_an_infeasible_pool_explains_itself():
    outcome = reconcile.reconcile(_body(policy={"budgetDollarsPerHour": 1}), NOW, reader=None)
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "Infeasible")
    assert "budget 1 $/h is below the cheapest feasible plan" in ready["message"]
    assert [e.reason for e in outcome.events] == ["Infeasible"]


class Nodes:
    """Stands in for observe.cluster.NodeReader: two GPU nodes in r1."""

    def nodes(self, selector):
        labels = {"topology.kubernetes.io/region": "r1", "gpu": "yes"}
        return [("n1", labels), ("n2", labels)]

    def labels(self, selector):
        return [labels for _, labels in self.nodes(selector)]


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


def _measured_body(status=None):
    return _body(
        status=status,
        gpuClasses=[{**pools.gpu_class(), "nodeSelector": {"gpu": "yes"}}],
    )


def test_live_demand_reaches_the_plan_and_the_status():
    quiet = reconcile.reconcile(_measured_body(), NOW, Nodes(), metrics=measure.MetricsReader(Prometheus(100.0)))
    busy = reconcile.reconcile(_measured_body(), NOW, Nodes(), metrics=measure.MetricsReader(Prometheus(900.0)))
    assert quiet.status["observed"] == [{"region": "r1", "utilizationRatio": 0.75, "demandTokensPerSecond": 100.0}]
    metrics_condition = busy.status["conditions"][3]
    assert (metrics_condition["type"], metrics_condition["status"]) == ("MetricsAvailable", "True")
    # The declared demand is 100 tok/s; 900 measured now corrects the first hours upwards.
    assert busy.plan.hour_costs[0].demand_tokens_per_second > quiet.plan.hour_costs[0].demand_tokens_per_second


def test_prometheus_down_keeps_the_last_measured_demand_as_a_floor():
    before = reconcile.reconcile(_measured_body(), NOW, Nodes(), metrics=measure.MetricsReader(Prometheus(900.0)))
    down = reconcile.reconcile(
        _measured_body(status=before.status), NOW, Nodes(), metrics=measure.MetricsReader(Prometheus(None))
    )
    condition = down.status["conditions"][3]
    assert (condition["status"], condition["reason"]) == ("False", "PrometheusUnavailable")
    assert "connection refused" in condition["message"]
    assert down.status["observed"] == before.status["observed"]  # kept, not zeroed
    assert down.plan.hour_costs[0].demand_tokens_per_second >= 900.0  # no scale-down on missing data
    assert down.status["conditions"][0]["status"] == "True"
