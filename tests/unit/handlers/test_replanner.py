"""The hourly re-plan loop: which pools it re-plans, and what it writes, without a cluster."""

from __future__ import annotations

import datetime as dt

from sunblend.handlers import pool, reconcile
from tests.unit import pools

NOON = dt.datetime(2026, 11, 23, 12, 10, tzinfo=dt.UTC)


class RecordingWriter:
    """Stands in for actuate.status.StatusWriter: records what would be written."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict]] = []
        self.events: list[str] = []

    def patch_status(self, namespace, name, status):
        self.patches.append((namespace, name, status))
        return True

    def post_event(self, body, event_type, reason, message, now):
        self.events.append(reason)


def _planned_body(at: dt.datetime) -> dict:
    body = pools.document()
    body["metadata"].update({"namespace": "default", "generation": 1, "uid": "u1"})
    body["status"] = reconcile.reconcile(body, at, reader=None).status
    return body


def test_a_pool_planned_this_hour_is_left_alone():
    assert not pool.stale(_planned_body(NOON), NOON + dt.timedelta(minutes=40), lambda body: False)


def test_a_new_hour_or_changed_nodes_make_a_pool_stale():
    body = _planned_body(NOON)
    assert pool.stale(body, NOON + dt.timedelta(hours=1), lambda body: False)
    assert pool.stale(body, NOON, lambda body: True)


def test_a_pool_whose_spec_changed_is_left_to_the_change_handlers():
    body = _planned_body(NOON)
    body["metadata"]["generation"] = 2
    assert not pool.stale(body, NOON + dt.timedelta(hours=1), lambda body: True)


def test_run_once_replans_stale_pools_and_writes_their_status():
    memo = {"pools": {("default", "t"): pool.essentials(_planned_body(NOON))}}
    writer = RecordingWriter()
    replanner = pool.Replanner(memo, writer)  # type: ignore[arg-type]
    assert replanner.run_once(NOON + dt.timedelta(minutes=5)) == 0
    assert replanner.run_once(NOON + dt.timedelta(hours=1)) == 1
    [(namespace, name, status)] = writer.patches
    assert (namespace, name) == ("default", "t")
    assert status["plannedHour"] == "2026-11-23T13:00:00Z"
