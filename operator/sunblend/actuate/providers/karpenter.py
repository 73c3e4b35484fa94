"""The karpenter node provider: one NodePool per offer, whose GPU limit is the plan.

sunblend owns one Karpenter ``NodePool`` (``karpenter.sh/v1``) per pool, GPU class, capacity
type and region, labelled as sunblend's (``app.kubernetes.io/managed-by: sunblend``) and
annotated with the pool it serves. Its requirements pin the region, ``karpenter.sh/capacity-type``
(``reserved`` for committed GPUs, ``spot``, ``on-demand``) and the GPU class's node labels; its
``limits`` on ``nvidia.com/gpu`` cap the offer at the planned nodes times the class's GPUs per
node; its ``weight`` makes Karpenter prefer reserved, then spot, then on-demand.

Pods drive provisioning: Karpenter launches nodes for the slices' pending pods, up to the limit.
Lowering a limit only blocks new launches; it removes nothing. Surplus nodes are emptied by
sunblend's consolidation step (cordon, then evict through the Eviction API, PDBs respected), and
each NodePool's ``consolidationPolicy: WhenEmpty`` lets Karpenter remove a node once it is empty,
within the NodePool's disruption budget (``disruption.maxNodesAtOnce`` of the pool). Karpenter
never consolidates a node that still runs pods, so it never undoes sunblend's placement.

This provider only creates and updates NodePools. It never deletes a NodePool (that would make
Karpenter terminate all of its nodes), never deletes NodeClaims or Nodes, never strips finalizers,
and never writes a NodePool that is not labelled as sunblend's or that serves another pool.
A NodePool is cluster-scoped, so it cannot have an ownerReference to a namespaced pool; the
labels and the ``sunblend.dev/pool-ref`` annotation say whose it is instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import manifests, workloads
from sunblend.actuate.providers import base
from sunblend.api import constants, spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from sunblend.core.problem import OfferKey

GROUP = "karpenter.sh"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NodePool"
PLURAL = "nodepools"
PROVIDER = "karpenter"

CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
POOL_REF_ANNOTATION = "sunblend.dev/pool-ref"
POOL_UID_ANNOTATION = "sunblend.dev/pool-uid"

# Karpenter's capacity types, and the NodePool weights that order them (higher is tried first).
CAPACITY_TYPES: Mapping[CapacityType, str] = {
    CapacityType.COMMITTED: "reserved",
    CapacityType.SPOT: "spot",
    CapacityType.ON_DEMAND: "on-demand",
}
WEIGHTS: Mapping[CapacityType, int] = {
    CapacityType.COMMITTED: 30,
    CapacityType.SPOT: 20,
    CapacityType.ON_DEMAND: 10,
}

# Labels Karpenter knows how to satisfy itself (sigs.k8s.io/karpenter pkg/apis/v1 WellKnownLabels);
# the GPU class's other labels also go on the nodes as template labels.
WELL_KNOWN_LABELS = frozenset(
    {
        constants.ZONE_LABEL,
        constants.REGION_LABEL,
        "node.kubernetes.io/instance-type",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "node.kubernetes.io/windows-build",
        CAPACITY_TYPE_LABEL,
    }
)
# Keys a NodePool may not set at all, and keys the offer itself decides.
RESTRICTED_LABELS = frozenset({"kubernetes.io/hostname", "karpenter.sh/nodepool"})
OFFER_LABELS = frozenset({constants.REGION_LABEL, CAPACITY_TYPE_LABEL})

CONSOLIDATE_AFTER = "5m"
NAME_MAX = 63  # the name is also the karpenter.sh/nodepool label value on every node
_HASH_CHARS = 8
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GPU_TAINT: dict[str, str] = {"key": constants.GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeClassRef:
    """The provider-specific NodeClass every sunblend NodePool points at (e.g. an EC2NodeClass)."""

    group: str = "karpenter.kwok.sh"
    kind: str = "KWOKNodeClass"
    name: str = "default"

    def document(self) -> dict[str, str]:
        """``spec.template.spec.nodeClassRef``."""
        return {"group": self.group, "kind": self.kind, "name": self.name}


def nodepool_name(pool_name: str, offer: OfferKey) -> str:
    """``sunblend-<pool>-<class>-<capacity type>-<region>``; long or odd names get a hash suffix."""
    region, gpu_class, capacity_type = offer
    raw = f"sunblend-{pool_name}-{gpu_class}-{capacity_type.value}-{region}".lower()
    if len(raw) <= NAME_MAX and _DNS_LABEL.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:_HASH_CHARS]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    return f"{cleaned[: NAME_MAX - _HASH_CHARS - 1].rstrip('-')}-{digest}"


def pool_ref(pool: spec.InferencePool) -> str:
    """``<namespace>/<name>``: the pool a NodePool serves."""
    return f"{pool.metadata.namespace}/{pool.metadata.name}"


def _requirement(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": [value]}


def _is_template_label(key: str) -> bool:
    """A GPU-class label Karpenter cannot derive from an instance type: it is set on the nodes directly."""
    domain = key.split("/", 1)[0] if "/" in key else ""
    return key not in WELL_KNOWN_LABELS and "karpenter" not in domain


def _gpu_class_labels(gpu_class: spec.GpuClass) -> dict[str, str]:
    labels = {k: v for k, v in gpu_class.node_selector.items() if k not in OFFER_LABELS}
    refused = sorted(k for k in labels if k in RESTRICTED_LABELS or k.split("/", 1)[0].endswith(GROUP))
    if refused:
        raise base.ProviderFailed(
            f"GPU class {gpu_class.name}: a Karpenter NodePool cannot require the labels {', '.join(refused)}"
        )
    return labels


def nodepool(
    pool: spec.InferencePool,
    uid: str,
    offer: OfferKey,
    nodes: int,
    node_class_ref: NodeClassRef | None = None,
) -> dict[str, Any]:
    """The NodePool for one offer, sized for ``nodes`` nodes (pure).

    Requirements: the capacity type, the region, and each of the GPU class's node labels. The
    class's labels that are not Karpenter's well-known ones are also template labels, so the
    nodes carry them. Nodes are tainted ``nvidia.com/gpu=present:NoSchedule`` (slices tolerate
    it) and labelled with the pool and GPU class. ``WhenEmpty`` consolidation: Karpenter removes a
    node only once it is empty; emptying it is sunblend's consolidation step.
    """
    region, class_name, capacity_type = offer
    if nodes < 0:
        raise base.ProviderFailed(f"{commands.offer_text(offer)}: cannot ask for {nodes} nodes")
    gpu_class = pool.spec.gpu_class(class_name)
    class_labels = _gpu_class_labels(gpu_class)
    requirements = [
        _requirement(CAPACITY_TYPE_LABEL, CAPACITY_TYPES[capacity_type]),
        _requirement(constants.REGION_LABEL, region),
        *(_requirement(k, v) for k, v in sorted(class_labels.items())),
    ]
    pool_label = manifests.label_value(pool.metadata.name)
    ownership = {
        constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
        constants.POOL_LABEL: pool_label,
        constants.POOL_NAMESPACE_LABEL: pool.metadata.namespace,
    }
    node_labels = {
        **{k: v for k, v in class_labels.items() if _is_template_label(k)},
        constants.PROVIDER_LABEL: PROVIDER,
        constants.POOL_LABEL: pool_label,
        constants.POOL_NAMESPACE_LABEL: pool.metadata.namespace,
        constants.GPU_CLASS_LABEL: manifests.label_value(class_name),
    }
    budget = pool.spec.actuation.disruption.max_nodes_at_once
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": nodepool_name(pool.metadata.name, offer),
            "labels": {
                **ownership,
                constants.GPU_CLASS_LABEL: manifests.label_value(class_name),
                constants.CAPACITY_TYPE_LABEL: capacity_type.value,
                constants.REGION_LABEL: manifests.label_value(region),
            },
            "annotations": {POOL_REF_ANNOTATION: pool_ref(pool), POOL_UID_ANNOTATION: uid},
        },
        "spec": {
            "weight": WEIGHTS[capacity_type],
            "limits": {constants.GPU_RESOURCE: str(nodes * gpu_class.gpus_per_node)},
            "disruption": {
                "consolidationPolicy": "WhenEmpty",
                "consolidateAfter": CONSOLIDATE_AFTER,
                "budgets": [{"nodes": str(budget)}],
            },
            "template": {
                "metadata": {"labels": node_labels},
                "spec": {
                    "nodeClassRef": (node_class_ref or NodeClassRef()).document(),
                    "requirements": requirements,
                    "taints": [dict(GPU_TAINT)],
                },
            },
        },
    }


def owned(document: Mapping[str, Any]) -> bool:
    """Whether a NodePool read from the cluster is labelled as sunblend's."""
    labels = (document.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(constants.MANAGED_BY_LABEL) == constants.MANAGED_BY)


class KarpenterProvider:
    """Writes one sunblend NodePool per offer; Karpenter launches the nodes for pending pods."""

    name = spec.NodeProviderName.KARPENTER

    def __init__(self, api_client: client.ApiClient, node_class_ref: NodeClassRef | None = None) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._node_class_ref = node_class_ref or NodeClassRef()

    def set_nodes(
        self, pool: spec.InferencePool, uid: str, command: commands.SetNodes, fresh: snapshot.Snapshot
    ) -> str:
        document = nodepool(pool, uid, command.offer, command.nodes, self._node_class_ref)
        name = document["metadata"]["name"]
        present = self._read(name)
        if present is None:
            # Not forced: should another NodePool of this name appear after the read, its fields
            # conflict with ours and the API server refuses the apply (409) instead of merging.
            self._apply(document, force=False)
            verb = "created"
        else:
            self._check_ours(present, pool)
            # The resourceVersion makes the apply a compare-and-swap: if the NodePool was replaced
            # since it was read (and may no longer be sunblend's), the API server refuses it (409).
            version = (present.get("metadata") or {}).get("resourceVersion")
            if version:
                document["metadata"]["resourceVersion"] = version
            self._apply(document, force=True)
            verb = "applied"
        gpus = document["spec"]["limits"][constants.GPU_RESOURCE]
        said = f"NodePool {name} {verb}: limit {constants.GPU_RESOURCE} {gpus} ({command.nodes} nodes)"
        if command.nodes < command.observed:
            said += (
                "; a lower limit only blocks new launches: surplus nodes are drained by the consolidation step"
                " and removed by Karpenter's WhenEmpty consolidation once empty"
            )
        return said

    def _check_ours(self, present: Mapping[str, Any], pool: spec.InferencePool) -> None:
        name = present["metadata"]["name"]
        if not owned(present):
            raise base.ProviderFailed(
                f"NodePool {name} exists and is not labelled "
                f"{constants.MANAGED_BY_LABEL}={constants.MANAGED_BY}: sunblend leaves it alone"
            )
        serves = (present["metadata"].get("annotations") or {}).get(POOL_REF_ANNOTATION)
        if serves != pool_ref(pool):
            raise base.ProviderFailed(
                f"NodePool {name} serves pool {serves or '(unnamed)'}, not {pool_ref(pool)}: left alone"
            )

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            found = self._custom.get_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, _request_timeout=workloads.TIMEOUT_SECONDS
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise base.ProviderFailed(f"reading NodePool {name}: {workloads.explain(error)}") from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"reading NodePool {name}: {workloads.explain(error)}") from error
        if not isinstance(found, dict):
            raise base.ProviderFailed(f"reading NodePool {name}: the API server sent {type(found).__name__}")
        return found

    def _apply(self, document: dict[str, Any], force: bool) -> None:
        name = document["metadata"]["name"]
        try:
            self._custom.patch_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                name,
                document,
                field_manager=workloads.FIELD_MANAGER,
                force=force,
                _content_type=workloads.APPLY,
                _request_timeout=workloads.TIMEOUT_SECONDS,
            )
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"applying NodePool {name}: {workloads.explain(error)}") from error
