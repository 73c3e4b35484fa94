"""Turns one cluster ``Snapshot`` and Prometheus's ``Measurements`` into the engine's ``Observation``.

Called by ``loop.reconcile`` once per step. Nodes are counted per offer: ready ones, and booting
ones (not ready yet). A spot node with an interruption signal, or a spot node seen last time
that has vanished, becomes a ``Notice``. Slices are matched to offers by their deterministic
names. Pure: no cluster access.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

from sunblend.actuate import manifests
from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, policy, snapshot
from sunblend.core.problem import BlendProblem, OfferKey
from sunblend.loop import measure


def spot_nodes(view: snapshot.Snapshot) -> list[str]:
    """``node@region/class/spot`` for each spot node with no interruption signal, remembered to notice
    one vanish without warning (a node under notice was already counted as lost)."""
    return sorted(
        f"{n.name}@{commands.offer_text(n.offer)}"
        for n in view.nodes
        if n.capacity_type is CapacityType.SPOT and n.interruption is None
    )


def notices(
    view: snapshot.Snapshot, known_spot: Sequence[str], wanted: Mapping[OfferKey, int] | None = None
) -> tuple[policy.Notice, ...]:
    """Spot nodes under an interruption signal, and spot nodes seen last time that are gone.

    A vanished node counts as lost only while its offer has fewer spot nodes than the engine
    wanted (``wanted``, its last targets): a node the provider or the cluster's autoscaler removed
    because the plan no longer wanted it was not lost.
    """
    found = [
        policy.Notice(n.name, n.offer) for n in view.nodes if n.interruption and n.capacity_type is CapacityType.SPOT
    ]
    if not view.readable:
        return tuple(found)
    present = {n.name for n in view.nodes}
    have: dict[OfferKey, int] = {}
    for node in view.nodes:
        if node.capacity_type is CapacityType.SPOT and node.interruption is None:
            have[node.offer] = have.get(node.offer, 0) + 1
    for entry in known_spot:
        name, _, offer_text = entry.partition("@")
        parts = offer_text.split("/")
        if name in present or len(parts) != 3:
            continue
        offer: OfferKey = (parts[0], parts[1], CapacityType.SPOT)
        deficit = (wanted or {}).get(offer, 0) - have.get(offer, 0) - sum(1 for n in found if n.offer == offer)
        if deficit > 0:
            found.append(policy.Notice(name, offer))
    return tuple(found)


def build(
    pool: spec.InferencePool,
    problem: BlendProblem,
    view: snapshot.Snapshot,
    measured: measure.Measurements | None,
    known_spot: Sequence[str],
    now: dt.datetime,
    wanted: Mapping[OfferKey, int] | None = None,
) -> policy.Observation:
    """The engine's observation at ``now``."""
    ready: Counter[tuple[str, str, CapacityType]] = Counter()
    booting: Counter[tuple[str, str, CapacityType]] = Counter()
    for node in view.nodes:
        if node.interruption is not None:
            continue
        (ready if node.ready else booting)[node.offer] += 1
    replicas, ready_replicas = {}, {}
    if pool.spec.model_server.template is not None:
        for offer in problem.offers:
            workload = view.workload("Deployment", manifests.slice_name(pool.metadata.name, offer.key))
            if workload is not None:
                replicas[offer.key] = workload.replicas
                ready_replicas[offer.key] = workload.ready_replicas
    available = None if measured is None else measured.available
    live = measured if measured is not None and measured.available else None
    return policy.Observation(
        now=now,
        ready=dict(ready),
        booting=dict(booting),
        replicas=replicas,
        ready_replicas=ready_replicas,
        demand=dict(live.demand) if live else {},
        metrics_available=available,
        utilisation=dict(live.utilisation) if live else {},
        kv_cache=dict(live.kv_cache) if live else {},
        waiting=dict(live.waiting) if live else {},
        history={r: tuple(v) for r, v in live.history.items()} if live else {},
        notices=notices(view, known_spot, wanted),
    )
