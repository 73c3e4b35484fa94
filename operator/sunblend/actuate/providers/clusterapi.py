"""The Cluster API node provider: one MachineDeployment per offer, scaled through ``/scale``.

``actuate.execute`` hands it a validated ``SetNodes`` command. sunblend does not create
MachineDeployments: it cannot know a cluster's infrastructure and bootstrap templates. The user
labels, for each offer, the one MachineDeployment sunblend may scale::

    app.kubernetes.io/managed-by: sunblend
    sunblend.dev/region: <region>              e.g. ap-south-1
    sunblend.dev/gpu-class: <GPU class name>   e.g. h100
    sunblend.dev/capacity-type: <type>         committed, spot or on-demand
    sunblend.dev/pool: <pool name>             only needed when pools share an offer

It is found by those labels in any namespace; none found, or several, is a ``ProviderFailed``
that names the labels to add.

**Replicas mode** (no cluster-autoscaler annotations). More nodes: ``spec.replicas`` is raised
through the scale subresource. Fewer: the Machines to remove are first annotated
``cluster.x-k8s.io/delete-machine: "yes"`` (every MachineSet deletion order removes those first),
then replicas are lowered by as many Machines as were annotated, never more. A Machine is chosen
only if its Node (``status.nodeRef.name``) runs none of the pool's pods in the fresh snapshot, so
never one with a do-not-disrupt pod; machines already annotated go first, then machines with no
Node yet, then cordoned, not-ready or interrupted nodes (the ones the drain step emptied), then
the rest by name. Machines whose nodes still run pool pods are held until ``actuate.drain`` has
emptied them, and the answer says so. Before replicas are lowered, the mark is taken off any other
Machine of the MachineDeployment (left by an earlier try, or by hand on a Machine that now runs
pool pods): a MachineSet deletes marked Machines first, so only the chosen ones may carry it.

**Autoscaler mode.** When the MachineDeployment carries the cluster-autoscaler's
``cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size`` and ``...-max-size`` annotations,
the autoscaler owns ``spec.replicas``, and sunblend never writes them. It sets min-size to the
target and raises max-size to the target only when max-size is lower; it never lowers max-size.
So the plan becomes the autoscaler's floor, and the autoscaler stays free to add nodes up to the
user's ceiling for load sunblend did not foresee. Pinning max-size to the target as well would
take that freedom away and fight the autoscaler. The autoscaler still chooses when to act and on
which machines: it adds nodes for the slices' pending pods (or at once with
``--enforce-node-group-min-size``), and with a lower min-size it removes nodes it finds unneeded,
marking its own victims. sunblend marks no Machines in this mode. Only one of the two annotations
is a ``ProviderFailed``: the autoscaler ignores such a node group, and sunblend does not guess.

Each write carries the resourceVersion it was decided from. A 409 is answered by reading again,
deciding again, and trying once more; a second 409 is a ``MachineDeploymentConflict``. Every API
error is raised as ``ProviderFailed`` with the object and the reason in words.

The API is ``cluster.x-k8s.io/v1beta2``, the storage version of Cluster API v1.14's CRDs
(``hack/capi.sh install`` puts them in a local control plane).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import workloads
from sunblend.actuate.providers import base
from sunblend.api import constants, spec
from sunblend.core import commands, snapshot
from sunblend.core.problem import OfferKey

logger = logging.getLogger(__name__)

GROUP = "cluster.x-k8s.io"
VERSION = "v1beta2"
MACHINE_DEPLOYMENTS = "machinedeployments"
MACHINES = "machines"

REGION_LABEL = "sunblend.dev/region"
DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
DELETE_MACHINE_ANNOTATION = "cluster.x-k8s.io/delete-machine"
DELETE_MACHINE_VALUE = "yes"
AUTOSCALER_MIN_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
AUTOSCALER_MAX_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"


class MachineDeploymentMissing(base.ProviderFailed):
    """No MachineDeployment (or more than one) carries the offer's sunblend labels."""


class MachineDeploymentConflict(base.ProviderFailed):
    """The MachineDeployment changed while being written, twice; the next reconcile decides again."""


class _Conflict(Exception):
    """A write was refused with 409: read again and decide again."""


# ---- pure helpers -------------------------------------------------------------------------------


def owner_labels(offer: OfferKey) -> dict[str, str]:
    """The labels that mark a MachineDeployment as sunblend's for ``offer``."""
    return {
        constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
        REGION_LABEL: offer[0],
        constants.GPU_CLASS_LABEL: offer[1],
        constants.CAPACITY_TYPE_LABEL: offer[2].value,
    }


def label_selector(labels: Mapping[str, str]) -> str:
    """``k=v,k=v`` in key order."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def missing_message(offer: OfferKey) -> str:
    """What to do when no MachineDeployment is labelled for ``offer``, in plain words."""
    labels = ", ".join(f"{key}={value}" for key, value in owner_labels(offer).items())
    return (
        f"no Cluster API MachineDeployment is labelled for offer {commands.offer_text(offer)}: "
        f"label the one sunblend may scale with {labels}"
    )


def _meta(document: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = document.get("metadata") or {}
    return meta


def where(document: Mapping[str, Any]) -> str:
    """``namespace/name`` of an object."""
    meta = _meta(document)
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def pick_deployment(found: Sequence[Mapping[str, Any]], offer: OfferKey, pool_name: str) -> Mapping[str, Any]:
    """The one MachineDeployment for the offer; several are told apart by the pool label, else refused."""
    if not found:
        raise MachineDeploymentMissing(missing_message(offer))
    if len(found) == 1:
        return found[0]
    mine = [d for d in found if (_meta(d).get("labels") or {}).get(constants.POOL_LABEL) == pool_name]
    if len(mine) == 1:
        return mine[0]
    names = ", ".join(sorted(where(d) for d in found))
    raise MachineDeploymentMissing(
        f"{len(found)} MachineDeployments are labelled for offer {commands.offer_text(offer)} ({names}): "
        f"keep the labels on one, or label the pool's one {constants.POOL_LABEL}={pool_name}"
    )


def replicas_of(deployment: Mapping[str, Any]) -> int:
    """``spec.replicas`` (absent reads as 0, as the scale subresource reports it)."""
    return int((deployment.get("spec") or {}).get("replicas") or 0)


def autoscaler_bounds(deployment: Mapping[str, Any]) -> tuple[int, int] | None:
    """(min, max) from the cluster-autoscaler annotations; None when neither is set."""
    annotations = _meta(deployment).get("annotations") or {}
    low, high = annotations.get(AUTOSCALER_MIN_ANNOTATION), annotations.get(AUTOSCALER_MAX_ANNOTATION)
    if low is None and high is None:
        return None
    if low is None or high is None:
        present = AUTOSCALER_MIN_ANNOTATION if high is None else AUTOSCALER_MAX_ANNOTATION
        absent = AUTOSCALER_MAX_ANNOTATION if high is None else AUTOSCALER_MIN_ANNOTATION
        raise base.ProviderFailed(
            f"MachineDeployment {where(deployment)} has {present} but not {absent}: the cluster-autoscaler "
            "needs both; add the other or remove it, sunblend will not guess who owns the replicas"
        )
    try:
        return int(low), int(high)
    except ValueError as error:
        raise base.ProviderFailed(
            f"MachineDeployment {where(deployment)} has autoscaler sizes {low!r} and {high!r}: not whole numbers"
        ) from error


def autoscaler_patch(deployment: Mapping[str, Any], target: int) -> dict[str, Any] | None:
    """A merge patch setting min-size to ``target`` and max-size to at least ``target``; None if already so.

    Only these two annotations, guarded by the resourceVersion read; never ``spec.replicas``.
    """
    bounds = autoscaler_bounds(deployment)
    if bounds is None:
        raise ValueError("not an autoscaled MachineDeployment")
    low, high = bounds
    annotations: dict[str, str] = {}
    if low != target:
        annotations[AUTOSCALER_MIN_ANNOTATION] = str(target)
    if high < target:
        annotations[AUTOSCALER_MAX_ANNOTATION] = str(target)
    if not annotations:
        return None
    return {"metadata": {"resourceVersion": _meta(deployment).get("resourceVersion"), "annotations": annotations}}


def scale_patch(replicas: int, resource_version: str | None) -> dict[str, Any]:
    """A merge patch of ``/scale``; with a resourceVersion the API server refuses it (409) if stale."""
    body: dict[str, Any] = {"spec": {"replicas": replicas}}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def mark_patch(marked: bool = True) -> dict[str, Any]:
    """A merge patch that puts the delete-machine annotation on a Machine (or, with False, takes it off)."""
    return {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: DELETE_MACHINE_VALUE if marked else None}}}


@dataclass(frozen=True)
class MachineView:
    """One Machine of the MachineDeployment, as victim choice needs it."""

    name: str
    node: str | None  # status.nodeRef.name; None before the Machine has a Node
    marked: bool = False  # already carries the delete-machine annotation
    deleting: bool = False  # has a deletionTimestamp


def machine_view(document: Mapping[str, Any]) -> MachineView:
    """A MachineView of a Machine object read from the API server."""
    meta = _meta(document)
    node_ref = (document.get("status") or {}).get("nodeRef") or {}
    return MachineView(
        name=str(meta.get("name", "")),
        node=node_ref.get("name") or None,
        marked=DELETE_MACHINE_ANNOTATION in (meta.get("annotations") or {}),
        deleting=meta.get("deletionTimestamp") is not None,
    )


@dataclass(frozen=True)
class Victims:
    """The Machines to remove, the marks to put on and take off, and why others were held."""

    chosen: tuple[str, ...]
    held: tuple[str, ...]  # "machine: why", for the Machines that could not be chosen
    mark: tuple[str, ...] = ()  # chosen Machines not marked yet
    unmark: tuple[str, ...] = ()  # marked Machines not chosen: the mark must go before replicas are lowered


def _hold_reason(machine: MachineView, fresh: snapshot.Snapshot) -> str | None:
    """Why ``machine`` may not be removed now; None when it may."""
    if machine.deleting:
        return "already being deleted"
    if machine.node is None:
        return None
    pods = fresh.pods_on(machine.node)
    if any(p.do_not_disrupt for p in pods):
        return f"node {machine.node} runs a do-not-disrupt pod"
    if pods:
        return f"node {machine.node} still runs {len(pods)} of the pool's pods (drain first)"
    return None


def choose_victims(machines: Sequence[MachineView], count: int, fresh: snapshot.Snapshot) -> Victims:
    """Up to ``count`` Machines whose nodes run none of the pool's pods, most releasable first.

    Order: already marked, then no Node yet, then nodes cordoned, not ready or interrupted, then
    the rest; ties by name. Machines with pool pods (do-not-disrupt ones included) are never chosen.
    """
    nodes = {n.name: n for n in fresh.nodes}

    def settled(machine: MachineView) -> bool:
        node = nodes.get(machine.node or "")
        return node is not None and node.ready and not node.unschedulable and node.interruption is None

    free: list[MachineView] = []
    held: list[str] = []
    for machine in machines:
        reason = _hold_reason(machine, fresh)
        if reason is None:
            free.append(machine)
        elif not machine.deleting:
            held.append(f"{machine.name}: {reason}")
    free.sort(key=lambda m: (not m.marked, m.node is not None, settled(m), m.name))
    chosen = free[: max(count, 0)]
    names = {m.name for m in chosen}
    return Victims(
        chosen=tuple(m.name for m in chosen),
        held=tuple(held),
        mark=tuple(m.name for m in chosen if not m.marked),
        unmark=tuple(sorted(m.name for m in machines if m.marked and not m.deleting and m.name not in names)),
    )


def _items(listed: object) -> list[Mapping[str, Any]]:
    """The ``items`` of a list answer (the client types it as ``object``; it is a dict)."""
    items = listed.get("items") if isinstance(listed, Mapping) else None
    return [item for item in items or [] if isinstance(item, Mapping)]


# ---- the provider -------------------------------------------------------------------------------


class ClusterApiProvider:
    """``clusterapi``: scales the MachineDeployment the user labelled for each offer."""

    name = spec.NodeProviderName.CLUSTER_API

    def __init__(self, api: client.ApiClient, objects: client.CustomObjectsApi | None = None) -> None:
        self._objects = objects if objects is not None else client.CustomObjectsApi(api)

    def set_nodes(
        self, pool: spec.InferencePool, uid: str, command: commands.SetNodes, fresh: snapshot.Snapshot
    ) -> str:
        """Bring the offer's MachineDeployment towards ``command.nodes``; say what was done."""
        try:
            return self._set_once(pool, command, fresh)
        except _Conflict:
            logger.info("MachineDeployment for %s changed while written; reading again", commands.target(command))
        try:
            return self._set_once(pool, command, fresh)
        except _Conflict as conflict:
            raise MachineDeploymentConflict(
                f"{commands.describe(command)}: the MachineDeployment changed while being written, twice"
            ) from conflict

    # -- one read, one decision, the writes ------------------------------------------------------

    def _set_once(self, pool: spec.InferencePool, command: commands.SetNodes, fresh: snapshot.Snapshot) -> str:
        deployment = pick_deployment(self._find(command.offer), command.offer, pool.metadata.name)
        said = commands.describe(command)
        if autoscaler_bounds(deployment) is not None:
            return f"{said} ({self._set_bounds(deployment, command.nodes)})"
        current, target = replicas_of(deployment), command.nodes
        md = f"MachineDeployment {where(deployment)}"
        if current == target:
            return f"{said} ({md} already has {target} replicas)"
        if target > current:
            self._scale(deployment, target)
            return f"{said} ({md} replicas {current} -> {target})"
        if not fresh.readable:
            raise base.ProviderFailed(
                f"{said}: not releasing Machines of {md}: the cluster read failed ({fresh.reason})"
            )
        victims = choose_victims(self._machines(deployment), current - target, fresh)
        held = f"; held {', '.join(victims.held)}" if victims.held else ""
        namespace = _meta(deployment)["namespace"]
        for machine in victims.unmark:
            self._mark(namespace, machine, marked=False)
        if not victims.chosen:
            return f"{said} ({md} kept at {current}: no Machine can be released yet{held})"
        for machine in victims.mark:
            self._mark(namespace, machine)
        lowered = current - len(victims.chosen)
        self._scale(deployment, lowered)
        return f"{said} ({md} replicas {current} -> {lowered}, releasing {', '.join(victims.chosen)}{held})"

    # -- API calls ---------------------------------------------------------------------------------

    def _find(self, offer: OfferKey) -> list[Mapping[str, Any]]:
        selector = label_selector(owner_labels(offer))
        try:
            listed = self._objects.list_cluster_custom_object(
                GROUP,
                VERSION,
                MACHINE_DEPLOYMENTS,
                label_selector=selector,
                _request_timeout=workloads.TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status == 404:
                raise base.ProviderFailed(
                    f"the API server serves no {MACHINE_DEPLOYMENTS}.{GROUP}/{VERSION}: "
                    "are Cluster API's CRDs (v1.9 or later) installed?"
                ) from error
            raise base.ProviderFailed(f"listing MachineDeployments {selector}: {workloads.explain(error)}") from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"listing MachineDeployments {selector}: {workloads.explain(error)}") from error
        return _items(listed)

    def _machines(self, deployment: Mapping[str, Any]) -> list[MachineView]:
        meta = _meta(deployment)
        selector = f"{DEPLOYMENT_NAME_LABEL}={meta['name']}"
        try:
            listed = self._objects.list_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                MACHINES,
                label_selector=selector,
                _request_timeout=workloads.TIMEOUT_SECONDS,
            )
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(
                f"listing Machines of MachineDeployment {where(deployment)}: {workloads.explain(error)}"
            ) from error
        return [machine_view(m) for m in _items(listed)]

    def _mark(self, namespace: str, machine: str, marked: bool = True) -> None:
        try:
            self._objects.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                MACHINES,
                machine,
                mark_patch(marked),
                field_manager=workloads.FIELD_MANAGER,
                _content_type=workloads.MERGE,
                _request_timeout=workloads.TIMEOUT_SECONDS,
            )
        except workloads.TRANSPORT_ERRORS as error:
            action = "marking" if marked else "unmarking"
            raise base.ProviderFailed(
                f"{action} Machine {namespace}/{machine} for deletion: {workloads.explain(error)}"
            ) from error

    def _scale(self, deployment: Mapping[str, Any], replicas: int) -> None:
        meta = _meta(deployment)
        try:
            self._objects.patch_namespaced_custom_object_scale(
                GROUP,
                VERSION,
                meta["namespace"],
                MACHINE_DEPLOYMENTS,
                meta["name"],
                scale_patch(replicas, meta.get("resourceVersion")),
                field_manager=workloads.FIELD_MANAGER,
                _content_type=workloads.MERGE,
                _request_timeout=workloads.TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status == 409:
                raise _Conflict() from error
            raise base.ProviderFailed(
                f"scaling MachineDeployment {where(deployment)} to {replicas}: {workloads.explain(error)}"
            ) from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(
                f"scaling MachineDeployment {where(deployment)} to {replicas}: {workloads.explain(error)}"
            ) from error

    def _set_bounds(self, deployment: Mapping[str, Any], target: int) -> str:
        md = f"MachineDeployment {where(deployment)}"
        low, high = autoscaler_bounds(deployment) or (0, 0)
        patch = autoscaler_patch(deployment, target)
        if patch is None:
            return f"{md} is autoscaled; its min-size is already {target} (max-size {high})"
        meta = _meta(deployment)
        try:
            self._objects.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                MACHINE_DEPLOYMENTS,
                meta["name"],
                patch,
                field_manager=workloads.FIELD_MANAGER,
                _content_type=workloads.MERGE,
                _request_timeout=workloads.TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status == 409:
                raise _Conflict() from error
            raise base.ProviderFailed(f"setting the autoscaler sizes of {md}: {workloads.explain(error)}") from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"setting the autoscaler sizes of {md}: {workloads.explain(error)}") from error
        new_high = max(high, target)
        return f"{md} is autoscaled; min-size {low} -> {target}, max-size {high} -> {new_high}, replicas left to it"
