"""The node-provider interface, and ``none``: nodes left to the cluster's own autoscaler.

``actuate.execute`` hands each validated ``SetNodes`` command to the provider the pool names
(``spec.actuation.nodeProvider``, or the operator's default). A provider brings the offer's
nodes towards the command's count in its own way: kwok creates and deletes fake nodes,
Karpenter gets NodePool limits, Cluster API gets MachineDeployment replicas. Providers never
delete a node that still runs the pool's pods: draining is ``actuate.drain``'s job.
"""

from __future__ import annotations

from typing import Protocol

from sunblend.actuate import workloads
from sunblend.api import spec
from sunblend.core import commands, snapshot


class ProviderFailed(workloads.ActuationFailed):
    """The node provider refused or failed a request."""


class NodeProvider(Protocol):
    """Asks for nodes of one offer (region, GPU class, capacity type)."""

    name: spec.NodeProviderName

    def set_nodes(
        self, pool: spec.InferencePool, uid: str, command: commands.SetNodes, fresh: snapshot.Snapshot
    ) -> str:
        """Move the offer's nodes towards ``command.nodes``; say what was done, in words."""
        ...


class NoProvider:
    """``none``: sunblend asks nobody; pending pods drive the cluster's own autoscaler."""

    name = spec.NodeProviderName.NONE

    def set_nodes(
        self, pool: spec.InferencePool, uid: str, command: commands.SetNodes, fresh: snapshot.Snapshot
    ) -> str:
        return f"{commands.describe(command)} (left to the cluster's autoscaler)"
