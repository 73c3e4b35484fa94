"""Cordons nodes and evicts a pool's pods from them through the Eviction API.

The executor (``actuate.execute``) calls it for Cordon and Drain commands, after
``actuate.validate``. Evictions go through ``pods/eviction`` (policy/v1), so the API server
enforces every PodDisruptionBudget: a 429 means a budget says wait, and the pod stays. This
module never deletes a pod, never forces, never touches finalizers, and never deletes a node;
pods marked ``karpenter.sh/do-not-disrupt`` or ``safe-to-evict: "false"`` are left alone.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import workloads
from sunblend.core import snapshot

logger = logging.getLogger(__name__)


# The label a cordon puts on a node, valued with the uid of the pool draining it: the drain is
# continued from it when the status write that records the drain was lost (a crash in between).
DRAINING_LABEL = "sunblend.dev/draining"


class DrainFailed(workloads.ActuationFailed):
    """A cordon or an eviction failed for a reason other than a budget or a vanished pod."""


class NodeGone(DrainFailed):
    """The node to cordon no longer exists."""


class EvictionResult(enum.Enum):
    """What one eviction request came to."""

    EVICTED = "Evicted"  # the API server accepted it; the pod is terminating
    BLOCKED = "Blocked"  # 429: a PodDisruptionBudget says wait
    GONE = "Gone"  # 404: the pod was already gone


@dataclass(frozen=True)
class DrainOutcome:
    """The pods of one drain pass, by what became of them (names)."""

    node: str
    evicted: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()  # a PDB said wait: try again on a later pass
    protected: tuple[str, ...] = ()  # do-not-disrupt: never evicted by sunblend
    gone: tuple[str, ...] = ()  # already deleted or terminating

    @property
    def complete(self) -> bool:
        """Whether none of the pool's pods is left on the node after this pass."""
        return not self.blocked and not self.protected


class Drainer:
    """Cordons nodes and evicts pods, always through the API server's safety checks."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self._core = core

    def cordon(self, node: str, pool_uid: str = "") -> None:
        """Mark ``node`` unschedulable (idempotent); with ``pool_uid``, label it as that pool's drain, in one write."""
        body: dict[str, Any] = {"spec": {"unschedulable": True}}
        if pool_uid:
            body["metadata"] = {"labels": {DRAINING_LABEL: pool_uid}}
        try:
            self._core.patch_node(node, body, _request_timeout=workloads.TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status == 404:
                raise NodeGone(f"cordoning node {node}: it no longer exists") from error
            raise DrainFailed(f"cordoning node {node}: {error.status} {error.reason}") from error
        except workloads.TRANSPORT_ERRORS as error:
            raise DrainFailed(f"cordoning node {node}: {type(error).__name__}: {error}") from error

    def evict(self, namespace: str, pod: str) -> EvictionResult:
        """Ask the API server to evict ``pod``; it refuses (BLOCKED) while a PDB allows no disruption."""
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=pod, namespace=namespace),
        )
        try:
            self._core.create_namespaced_pod_eviction(pod, namespace, body, _request_timeout=workloads.TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status == 429:
                return EvictionResult.BLOCKED
            if error.status == 404:
                return EvictionResult.GONE
            if error.status == 500 and "more than one" in str(error.body or ""):
                raise DrainFailed(
                    f"evicting pod {namespace}/{pod}: more than one PodDisruptionBudget selects it, and the "
                    "Eviction API refuses such pods; keep one budget per pod"
                ) from error
            raise DrainFailed(f"evicting pod {namespace}/{pod}: {error.status} {error.reason}") from error
        except workloads.TRANSPORT_ERRORS as error:
            raise DrainFailed(f"evicting pod {namespace}/{pod}: {type(error).__name__}: {error}") from error
        return EvictionResult.EVICTED

    def drain(self, namespace: str, node: str, pods: Sequence[snapshot.PodView]) -> DrainOutcome:
        """Evict those of ``pods`` bound to ``node`` that may be disrupted; report what became of each."""
        protected: list[str] = []
        results: dict[EvictionResult, list[str]] = {result: [] for result in EvictionResult}
        for pod in pods:
            if pod.node != node:
                continue
            if pod.do_not_disrupt:
                protected.append(pod.name)
                continue
            result = EvictionResult.GONE if pod.deleting else self.evict(namespace, pod.name)
            results[result].append(pod.name)
        outcome = DrainOutcome(
            node=node,
            evicted=tuple(results[EvictionResult.EVICTED]),
            blocked=tuple(results[EvictionResult.BLOCKED]),
            protected=tuple(protected),
            gone=tuple(results[EvictionResult.GONE]),
        )
        logger.info(
            "drain %s: %d evicted, %d blocked by a PDB, %d protected, %d gone",
            node,
            len(outcome.evicted),
            len(outcome.blocked),
            len(outcome.protected),
            len(outcome.gone),
        )
        return outcome
