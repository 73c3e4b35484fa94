"""Consolidation: the emptiest, most expensive nodes are drained first, within the budget, safely."""

from __future__ import annotations

import datetime as dt

from sunblend.api.spec import CapacityType
from sunblend.core import commands, placement, snapshot
from tests.unit import pools

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
OD = ("r1", "gpu", CapacityType.ON_DEMAND)
SPOT = ("r1", "gpu", CapacityType.SPOT)
COMMITTED = ("r1", "gpu", CapacityType.COMMITTED)
PER_NODE = {OD: 4, SPOT: 4, COMMITTED: 4}


def _view(layout, **pod_flags):
    """layout: {node name: (offer, pods on it)}."""
    nodes = tuple(snapshot.NodeView(name, *offer, True) for name, (offer, _) in layout.items())
    pods = tuple(
        snapshot.PodView(f"{name}-p{i}", name, "slice", True, **pod_flags)
        for name, (_, count) in layout.items()
        for i in range(count)
    )
    return snapshot.Snapshot(nodes=nodes, pods=pods)


def _drains(view, targets, draining=(), recent=(), **disruption):
    pool_spec = pools.pool_spec(actuation={"disruption": {"maxNodesAtOnce": 2, **disruption}})
    return placement.drains(pool_spec, view, targets, PER_NODE, list(draining), list(recent), NOW)


def test_the_emptiest_on_demand_node_is_cordoned_and_drained():
    view = _view({"od-a": (OD, 3), "od-b": (OD, 1), "od-c": (OD, 0)})
    assert _drains(view, {OD: 2}).commands == ()  # the empty node goes first, with no drain
    result = _drains(view, {OD: 1})
    assert [(c.kind.value, c.node) for c in result.commands] == [("Cordon", "od-b"), ("Drain", "od-b")]
    drain = result.commands[1]
    assert isinstance(drain, commands.Drain) and drain.pods == ("od-b-p0",)
    assert result.draining == ("od-b",)


def test_on_demand_is_emptied_before_spot_and_committed_never():
    view = _view({"od": (OD, 1), "spot": (SPOT, 1), "c": (COMMITTED, 1)})
    result = _drains(view, {OD: 0, SPOT: 0, COMMITTED: 0}, maxNodesAtOnce=1)
    assert [c.node for c in result.commands if isinstance(c, commands.Cordon)] == ["od"]
    assert "disruption budget" in result.held[0]
    everything = _drains(view, {OD: 0, SPOT: 0, COMMITTED: 0})
    assert [c.node for c in everything.commands if isinstance(c, commands.Cordon)] == ["od", "spot"]


def test_a_node_is_not_drained_when_the_others_have_no_room_or_a_pod_may_not_be_disrupted():
    crowded = _view({"a": (OD, 4), "b": (OD, 4)})
    result = _drains(crowded, {OD: 2})
    assert result.commands == ()
    protected = _drains(_view({"a": (OD, 1), "b": (OD, 1)}, do_not_disrupt=True), {OD: 1})
    assert protected.commands == () and "may not be disrupted" in protected.held[0]


def test_a_drain_in_progress_is_continued_and_the_hourly_budget_counts_recent_drains():
    view = _view({"a": (OD, 2), "b": (OD, 1)})
    continued = _drains(view, {OD: 2}, draining=["a"])
    assert [(c.kind.value, c.node) for c in continued.commands] == [("Drain", "a")]
    spent = _drains(view, {OD: 1}, recent=[NOW - dt.timedelta(minutes=10)] * 10)
    assert spent.commands == () and "disruption budget" in spent.held[0]
