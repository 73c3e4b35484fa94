"""One reconcile on pool bodies as the API server returns them, with no cluster to observe."""

from __future__ import annotations

import datetime as dt

from sunblend.handlers import reconcile
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
    assert [c["type"] for c in outcome.status["conditions"]] == ["Ready", "Planned", "CapacityAvailable"]
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
