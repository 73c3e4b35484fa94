"""Re-checks commands against a fresh read of the cluster before anything is written (Karpenter's validation).

The executor (``actuate.execute``) reads a fresh ``Snapshot`` just before acting and passes the
engine's commands through ``validate``. A command whose premise no longer holds (the replicas or
nodes it was decided from have changed, an autoscaler now owns the workload, the node is gone) is
set aside as stale, with the reason in plain words, and the next reconcile decides again. Pure:
no cluster access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sunblend.actuate import manifests
from sunblend.core import commands as cmds
from sunblend.core import problem, snapshot


@dataclass(frozen=True)
class Validated:
    """The commands still safe to carry out, in their given order, and the stale ones with why."""

    valid: tuple[cmds.Command, ...] = ()
    stale: tuple[tuple[cmds.Command, str], ...] = ()


def _replicas_text(replicas: int | None) -> str:
    return "absent" if replicas is None else f"{replicas} replicas"


def _scaled(fresh: snapshot.Snapshot, kind: str, name: str, observed: int | None) -> str | None:
    """Why scaling ``kind``/``name`` decided at ``observed`` replicas is stale, or None."""
    workload = fresh.workload(kind, name)
    current = None if workload is None else workload.replicas
    if current != observed:
        return f"{kind} {name} is {_replicas_text(current)} now, not {_replicas_text(observed)} as decided"
    autoscaler = fresh.autoscaler_of(kind, name)
    if autoscaler is not None:
        return f"{autoscaler.kind} {autoscaler.name} now scales {kind} {name}; its replicas are not sunblend's"
    return None


def _node_changed(fresh: snapshot.Snapshot, name: str, offer: problem.OfferKey) -> str | None:
    """Why a command on node ``name`` of ``offer`` is stale (gone, or another offer now), or None."""
    node = next((n for n in fresh.nodes if n.name == name), None)
    if node is None:
        return f"node {name} is gone"
    if node.offer != offer:
        return f"node {name} is {cmds.offer_text(node.offer)} now, not {cmds.offer_text(offer)}"
    return None


def _nodes_of(fresh: snapshot.Snapshot, offer: problem.OfferKey) -> int:
    """Nodes of ``offer`` (ready or booting) with no interruption signal."""
    return sum(1 for n in fresh.nodes if n.offer == offer and n.interruption is None)


def _why_stale(command: cmds.Command, fresh: snapshot.Snapshot, pool_name: str, cordoned: set[str]) -> str | None:
    if isinstance(command, cmds.SetNodes):
        current = _nodes_of(fresh, command.offer)
        if current != command.observed:
            offer = cmds.offer_text(command.offer)
            return f"{offer} has {current} nodes now, not {command.observed} as decided"
        return None
    if isinstance(command, cmds.ScaleSlice):
        return _scaled(fresh, "Deployment", manifests.slice_name(pool_name, command.offer), command.observed)
    if isinstance(command, cmds.ScaleWorkload):
        return _scaled(fresh, command.workload_kind, command.name, command.observed)
    changed = _node_changed(fresh, command.node, command.offer)
    if changed is not None or isinstance(command, cmds.Cordon):
        return changed
    node = next(n for n in fresh.nodes if n.name == command.node)
    if not node.unschedulable and command.node not in cordoned:
        return f"node {command.node} is schedulable again; it is drained only after a cordon"
    return None


def validate(commands: Sequence[cmds.Command], fresh: snapshot.Snapshot, pool_name: str) -> Validated:
    """Split ``commands`` into those still valid against ``fresh`` and the stale ones, keeping the order.

    A Drain is allowed on a node that is still schedulable only when a valid Cordon of the same node
    comes before it in ``commands``. Nothing is valid when ``fresh`` could not be read.
    """
    if not fresh.readable:
        unread = f"the cluster could not be read: {fresh.reason}" if fresh.reason else "the cluster could not be read"
        return Validated(stale=tuple((c, unread) for c in commands))
    valid: list[cmds.Command] = []
    stale: list[tuple[cmds.Command, str]] = []
    cordoned: set[str] = set()
    for command in commands:
        reason = _why_stale(command, fresh, pool_name, cordoned)
        if reason is None:
            valid.append(command)
            if isinstance(command, cmds.Cordon):
                cordoned.add(command.node)
        else:
            stale.append((command, reason))
    return Validated(valid=tuple(valid), stale=tuple(stale))
