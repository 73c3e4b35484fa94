"""Command values: what the decision engine wants done to the cluster, each with its reason.

The engine (``core.policy``) and placement (``core.placement``) return these; ``actuate``
re-checks them against a fresh read (``actuate.validate``) and carries them out in a fixed order
(``actuate.execute``); the simulator applies the node commands with provisioning delays. Each
command records what it was decided from (``observed``), so a stale one can be recognised and
dropped instead of forced. Pure values: no cluster access.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sunblend.core.problem import OfferKey


class Kind(enum.StrEnum):
    """The kinds of command, in the order they are carried out (make before break)."""

    SET_NODES = "SetNodes"
    SCALE_SLICE = "ScaleSlice"
    SCALE_WORKLOAD = "ScaleWorkload"
    CORDON = "Cordon"
    DRAIN = "Drain"


ORDER = {kind: i for i, kind in enumerate(Kind)}


@dataclass(frozen=True)
class SetNodes:
    """Ask the node provider for ``nodes`` nodes of one offer (more: provision; fewer: release)."""

    offer: OfferKey
    nodes: int
    observed: int  # nodes (ready or booting) seen when this was decided
    reason: str
    kind: Kind = Kind.SET_NODES


@dataclass(frozen=True)
class ScaleSlice:
    """Set the replicas of the slice (the pool's Deployment) for one offer."""

    offer: OfferKey
    replicas: int
    observed: int | None  # replicas seen when this was decided; None: the slice does not exist yet
    reason: str
    kind: Kind = Kind.SCALE_SLICE


@dataclass(frozen=True)
class ScaleWorkload:
    """Set the replicas of a user's workload (``spec.modelServer.workloadRef``) through its scale subresource."""

    workload_kind: str
    name: str
    replicas: int
    observed: int | None
    reason: str
    kind: Kind = Kind.SCALE_WORKLOAD


@dataclass(frozen=True)
class Cordon:
    """Mark a node unschedulable, the first step of a drain."""

    node: str
    offer: OfferKey
    reason: str
    kind: Kind = Kind.CORDON


@dataclass(frozen=True)
class Drain:
    """Evict the pool's pods from a cordoned node through the Eviction API (PDBs respected)."""

    node: str
    offer: OfferKey
    pods: tuple[str, ...]  # the pool's pods on the node when this was decided
    reason: str
    kind: Kind = Kind.DRAIN


Command = SetNodes | ScaleSlice | ScaleWorkload | Cordon | Drain


def ordered(commands: list[Command]) -> list[Command]:
    """Commands in the order they must run: nodes, then scale, then cordon, then drain."""
    return sorted(commands, key=lambda c: ORDER[c.kind])


def offer_text(offer: OfferKey) -> str:
    """``ap-south-1/h100/spot``."""
    return f"{offer[0]}/{offer[1]}/{offer[2].value}"


def target(command: Command) -> str:
    """What a command acts on, in words."""
    if isinstance(command, SetNodes | ScaleSlice):
        return offer_text(command.offer)
    if isinstance(command, ScaleWorkload):
        return f"{command.workload_kind}/{command.name}"
    return f"node/{command.node}"


def amount(command: Command) -> int | None:
    """The number a command sets (nodes or replicas); None for cordon and drain."""
    if isinstance(command, SetNodes):
        return command.nodes
    if isinstance(command, ScaleSlice | ScaleWorkload):
        return command.replicas
    return None


def describe(command: Command) -> str:
    """One line: ``ScaleSlice ap-south-1/h100/spot 3 -> 5: <reason>``."""
    if isinstance(command, SetNodes):
        change = f" {command.observed} -> {command.nodes}"
    elif isinstance(command, ScaleSlice | ScaleWorkload):
        change = f" {'none' if command.observed is None else command.observed} -> {command.replicas}"
    else:
        change = ""
    return f"{command.kind.value} {target(command)}{change}: {command.reason}"


def to_document(command: Command) -> dict[str, Any]:
    """The command as it appears in the pool's status (``status.commands``)."""
    document: dict[str, Any] = {"kind": command.kind.value, "target": target(command), "reason": command.reason}
    value = amount(command)
    if value is not None:
        document["value"] = value
    return document


def key(command: Command) -> tuple[str, ...]:
    """A stable identity for comparing command lists (operator against simulator)."""
    value = amount(command)
    return (command.kind.value, target(command), "" if value is None else str(value))
