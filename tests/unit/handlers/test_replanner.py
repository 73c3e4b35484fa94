"""The fast loop: which pools it steps, and what it writes, without a cluster."""

from __future__ import annotations

import datetime as dt

import kopf

from sunblend.handlers import pool
from sunblend.loop import reconcile
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


def _planned_body(at: dt.datetime, services: reconcile.Services) -> dict:
    body = pools.document()
    body["metadata"].update({"namespace": "default", "generation": 1, "uid": "u1"})
    body["status"] = reconcile.reconcile(body, at, services).status
    return body


def test_a_pool_the_change_handlers_have_not_seen_is_left_to_them():
    body = _planned_body(NOON, reconcile.Services())
    assert pool.handled(body)
    body["metadata"]["generation"] = 2
    assert not pool.handled(body)
    body.pop("status")
    assert not pool.handled(body)


def test_run_once_steps_every_pool_and_plans_at_the_new_hour():
    services = reconcile.Services()
    memo = {"pools": {("default", "t"): pool.essentials(_planned_body(NOON, services))}, "services": services}
    writer = RecordingWriter()
    replanner = pool.Replanner(memo, writer)  # type: ignore[arg-type]
    assert replanner.run_once(NOON + dt.timedelta(minutes=5)) == 0
    assert writer.patches == []  # nothing changed but the time: no write
    assert replanner.run_once(NOON + dt.timedelta(hours=1)) == 1
    [(namespace, name, status)] = writer.patches
    assert (namespace, name) == ("default", "t")
    assert status["plannedHour"] == "2026-11-23T13:00:00Z"
    # What was written is what the next pass continues from.
    assert '"hour":"2026-11-23T13:00:00Z"' in memo["pools"][("default", "t")]


def test_a_pool_a_handler_stepped_within_half_an_interval_waits_for_the_next_pass():
    services = reconcile.Services()
    body = _planned_body(NOON, services)  # a handler's step at NOON
    memo = {"pools": {("default", "t"): pool.essentials(body)}, "services": services}
    writer = RecordingWriter()
    replanner = pool.Replanner(memo, writer, interval=30.0)  # type: ignore[arg-type]
    # A handler stepped the pool 10 s before a pass that, at a new hour, would plan and write: it waits.
    new_hour = NOON.replace(minute=0) + dt.timedelta(hours=1, seconds=5)
    services.stepped["u1"] = new_hour - dt.timedelta(seconds=10)
    assert replanner.run_once(new_hour) == 0
    assert writer.patches == []
    # More than half an interval after that step, the next pass steps it and plans the new hour.
    later = new_hour + dt.timedelta(seconds=6)
    assert replanner.run_once(later) == 1
    assert writer.patches[0][2]["plannedHour"] == "2026-11-23T13:00:00Z"
    assert services.stepped["u1"] == later


def test_a_deleted_pool_is_forgotten_by_the_loop_and_the_services():
    services = reconcile.Services()
    body = _planned_body(NOON, services)
    memo = {"pools": {}, "services": services}
    kopf_body = kopf.Body(body)
    pool.remember_pool(event={"type": "ADDED", "object": body}, body=kopf_body, memo=memo)
    assert list(memo["pools"]) == [("default", "t")]
    assert "u1" in services.locks and "u1" in services.stepped
    pool.remember_pool(event={"type": "DELETED", "object": body}, body=kopf_body, memo=memo)
    assert memo["pools"] == {}
    assert "u1" not in services.locks and "u1" not in services.stepped
