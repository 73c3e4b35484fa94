"""Consolidation: which nodes to empty so the planned replicas sit on the fewest nodes, safely.

Given the engine's node targets and a ``Snapshot``, ``drains`` picks the nodes of an offer that
hold the pool's pods beyond what the offer should have, and returns Cordon and Drain commands:

- the most expensive capacity is emptied first (on-demand, then spot); committed capacity that
  is paid for anyway is never emptied;
- the emptiest nodes go first;
- a node is emptied only when the offer's other nodes have room for the slice's replicas (make
  before break), never when a pod on it may not be disrupted (``karpenter.sh/do-not-disrupt``,
  ``safe-to-evict: "false"``);
- the pool's disruption budget caps the nodes being drained at once and within an hour.

Nodes this pool is already draining are drained again (an eviction refused by a
PodDisruptionBudget is retried on the next pass). Pure: the time is passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from sunblend.core.problem import OfferKey

HOUR = dt.timedelta(hours=1)
EMPTIED_FIRST = (CapacityType.ON_DEMAND, CapacityType.SPOT)


@dataclass(frozen=True)
class Consolidation:
    """Cordon and drain commands, the nodes left alone and why."""

    commands: tuple[commands.Command, ...]
    draining: tuple[str, ...]  # nodes this pool is draining after these commands
    held: tuple[str, ...] = ()  # plain-words reasons a wanted drain did not start


def drains(
    pool: spec.InferencePoolSpec,
    view: snapshot.Snapshot,
    targets: Mapping[OfferKey, int],
    replicas_per_node: Mapping[OfferKey, int],
    draining: Sequence[str],
    recent: Sequence[dt.datetime],
    now: dt.datetime,
) -> Consolidation:
    """Nodes to cordon and drain now. ``draining``: nodes this pool is draining; ``recent``: when
    drains started within the last hour."""
    budget = pool.actuation.disruption
    by_name = {n.name: n for n in view.nodes}
    out: list[commands.Command] = []
    still = []
    for name in draining:  # continue what was started, while the pool's pods are still there
        node = by_name.get(name)
        left = tuple(p.name for p in view.pods_on(name) if not p.deleting)
        if node is not None and left:
            still.append(name)
            out.append(commands.Drain(name, node.offer, left, "continuing a drain a PodDisruptionBudget held back"))
    at_once = len(still)
    this_hour = sum(1 for at in recent if now - at < HOUR)
    held: list[str] = []
    for capacity_type in EMPTIED_FIRST:
        for key in sorted(k for k in {n.offer for n in view.nodes} if k[2] is capacity_type):
            nodes = [
                n for n in view.nodes if n.offer == key and not n.unschedulable and n.ready and n.interruption is None
            ]
            surplus = len(nodes) - targets.get(key, 0)
            if surplus <= 0:
                continue
            per_node = max(1, replicas_per_node.get(key, 1))
            wanted_replicas = targets.get(key, 0) * per_node
            loaded = sorted(
                (n for n in nodes if view.pods_on(n.name)), key=lambda n: (len(view.pods_on(n.name)), n.name)
            )
            remaining = len(nodes)
            surplus -= len(nodes) - len(loaded)  # empty nodes go first, and need no drain
            for node in loaded[: max(0, surplus)]:
                pods = view.pods_on(node.name)
                if any(p.do_not_disrupt for p in pods):
                    held.append(f"{node.name}: a pod on it may not be disrupted")
                    continue
                if (remaining - 1) * per_node < wanted_replicas:
                    held.append(f"{node.name}: the other {commands.offer_text(key)} nodes have no room yet")
                    continue
                if at_once >= budget.max_nodes_at_once or this_hour >= budget.max_nodes_per_hour:
                    held.append(f"{node.name}: the pool's disruption budget is spent")
                    continue
                reason = (
                    f"consolidating {commands.offer_text(key)} onto {targets.get(key, 0)} node(s); "
                    f"{len(pods)} pod(s) of the pool here"
                )
                out.append(commands.Cordon(node.name, key, reason))
                out.append(commands.Drain(node.name, key, tuple(p.name for p in pods), reason))
                still.append(node.name)
                remaining -= 1
                at_once += 1
                this_hour += 1
    return Consolidation(tuple(out), tuple(still), tuple(held))
