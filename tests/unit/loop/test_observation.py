"""Spot losses as the loop sees them: interruption signals, and spot nodes that vanish while wanted."""

from __future__ import annotations

from sunblend.api.spec import CapacityType
from sunblend.core import snapshot
from sunblend.loop import observation

SPOT = ("r1", "gpu", CapacityType.SPOT)


def _view(*names, tainted=()):
    return snapshot.Snapshot(
        nodes=tuple(snapshot.NodeView(n, *SPOT, True, interruption="itn" if n in tainted else None) for n in names)
    )


def test_a_tainted_spot_node_is_a_notice_and_is_not_remembered_to_vanish_later():
    view = _view("a", "b", tainted=("b",))
    assert [n.node for n in observation.notices(view, [])] == ["b"]
    assert observation.spot_nodes(view) == ["a@r1/gpu/spot"]


def test_a_vanished_spot_node_is_lost_only_while_the_engine_still_wanted_it():
    known = ["a@r1/gpu/spot", "b@r1/gpu/spot"]
    assert [n.node for n in observation.notices(_view("a"), known, {SPOT: 2})] == ["b"]
    assert observation.notices(_view("a"), known, {SPOT: 1}) == ()  # released on purpose: not lost
