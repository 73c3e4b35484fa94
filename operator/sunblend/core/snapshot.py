"""One read of the cluster, as plain values: the pool's nodes, pods, slices, PDBs and autoscalers.

``observe.snapshot`` fills it from the API server once per reconcile; the pure stages (the
decision engine, placement, validation) read only this. Nothing here talks to the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sunblend.api.spec import CapacityType
from sunblend.core.problem import OfferKey


@dataclass(frozen=True)
class NodeView:
    """One GPU node that a pool's GPU class selects."""

    name: str
    region: str
    gpu_class: str
    capacity_type: CapacityType
    ready: bool
    unschedulable: bool = False
    interruption: str | None = None  # the signal seen (e.g. a taint key), None when none
    gpus: int = 0  # allocatable nvidia.com/gpu
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def offer(self) -> OfferKey:
        """(region, gpu_class, capacity_type)."""
        return (self.region, self.gpu_class, self.capacity_type)


@dataclass(frozen=True)
class PodView:
    """One pod of a pool's model server."""

    name: str
    node: str | None  # None while pending
    slice_name: str | None  # the slice (Deployment) it belongs to, from its labels
    ready: bool
    gpus: int = 0
    do_not_disrupt: bool = False  # karpenter.sh/do-not-disrupt or safe-to-evict "false"
    deleting: bool = False


@dataclass(frozen=True)
class WorkloadView:
    """A Deployment (a slice sunblend owns, or a user's workloadRef)."""

    kind: str
    name: str
    replicas: int
    ready_replicas: int
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    owned_by_pool: bool = False  # has an ownerReference to the pool


@dataclass(frozen=True)
class AutoscalerView:
    """An HPA or a KEDA ScaledObject, and the workload it scales."""

    kind: str  # HorizontalPodAutoscaler or ScaledObject
    name: str
    target_kind: str
    target_name: str


@dataclass(frozen=True)
class BudgetView:
    """A PodDisruptionBudget in the pool's namespace."""

    name: str
    selector: Mapping[str, str]
    disruptions_allowed: int


@dataclass(frozen=True)
class Snapshot:
    """What one reconcile read of the cluster. ``readable`` False: the API server could not be read."""

    readable: bool = True
    reason: str = ""
    nodes: tuple[NodeView, ...] = ()
    pods: tuple[PodView, ...] = ()
    workloads: tuple[WorkloadView, ...] = ()
    autoscalers: tuple[AutoscalerView, ...] = ()
    budgets: tuple[BudgetView, ...] = ()

    def workload(self, kind: str, name: str) -> WorkloadView | None:
        """The workload called ``name`` of ``kind``, if it was read."""
        return next((w for w in self.workloads if w.kind == kind and w.name == name), None)

    def autoscaler_of(self, kind: str, name: str) -> AutoscalerView | None:
        """The HPA or ScaledObject that scales the workload ``kind``/``name``, if any."""
        return next((a for a in self.autoscalers if a.target_kind == kind and a.target_name == name), None)

    def pods_on(self, node: str) -> tuple[PodView, ...]:
        """The pool's pods bound to ``node``."""
        return tuple(p for p in self.pods if p.node == node)
