"""The kwok node provider: fake GPU nodes per offer, for local use, demos and tests.

It plays the cloud. Asked for more nodes of an offer, it creates kwok Nodes that carry the
region label, the capacity-type label (through the capacity-type rules), the GPU class's
``nodeSelector`` labels and ``nvidia.com/gpu`` capacity. A new node is tainted
``sunblend.dev/provisioning`` until its provisioning delay has passed (``settle`` lifts the
taint), so it counts as booting and no pod lands on it early. Asked for fewer, it deletes
nodes it made for this pool that hold none of the pool's pods, emptiest first: emptying a
node is the consolidation step's job. It never touches a node it did not make.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import workloads
from sunblend.actuate.providers import base
from sunblend.api import constants, spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, nodes, snapshot
from sunblend.core.problem import OfferKey

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
PROVIDER = "kwok"


def _capacity_label(capacity_type: CapacityType, rules: Sequence[nodes.CapacityTypeRule]) -> tuple[str, str]:
    """The first rule's label and value that mean ``capacity_type``."""
    for rule in rules:
        for value, meaning in rule.values.items():
            if meaning is capacity_type:
                return rule.label, value
    raise base.ProviderFailed(f"no capacity-type rule names {capacity_type.value}: kwok cannot label the node")


def node_name(pool: spec.InferencePool, offer: OfferKey, index: int) -> str:
    """``kwok-<pool>-<region>-<class>-<capacity type>-<n>``, hashed when longer than 63 characters."""
    text = f"kwok-{pool.metadata.name}-{offer[0]}-{offer[1]}-{offer[2].value}-{index}".lower()
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[:52].rstrip('-.')}-{digest}"


def node_manifest(
    pool: spec.InferencePool,
    offer: OfferKey,
    name: str,
    ready_at: dt.datetime | None,
    rules: Sequence[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
) -> dict[str, Any]:
    """A kwok Node for one offer (pure)."""
    gpu_class = pool.spec.gpu_class(offer[1])
    label, value = _capacity_label(offer[2], rules)
    labels = {
        "kubernetes.io/hostname": name,
        "type": "kwok",
        constants.REGION_LABEL: offer[0],
        label: value,
        constants.PROVIDER_LABEL: PROVIDER,
        constants.POOL_LABEL: pool.metadata.name,
        constants.POOL_NAMESPACE_LABEL: pool.metadata.namespace,
        constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
        **gpu_class.node_selector,
    }
    gpus = str(gpu_class.gpus_per_node)
    taints: list[dict[str, str]] = [{"key": constants.GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]
    annotations = {KWOK_ANNOTATION: "fake"}
    if ready_at is not None:
        taints.append({"key": constants.PROVISIONING_TAINT, "value": "true", "effect": "NoSchedule"})
        annotations[constants.READY_AT_ANNOTATION] = ready_at.astimezone(dt.UTC).isoformat()
    resources = {"cpu": "192", "memory": "2Ti", "pods": "110", constants.GPU_RESOURCE: gpus}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints},
        "status": {"allocatable": resources, "capacity": resources},
    }


def removable(pool: spec.InferencePool, offer: OfferKey, fresh: snapshot.Snapshot, count: int) -> list[str]:
    """Up to ``count`` nodes this provider made for the pool's offer that hold none of its pods (pure)."""
    mine = [
        n
        for n in fresh.nodes
        if n.offer == offer
        and n.labels.get(constants.PROVIDER_LABEL) == PROVIDER
        and n.labels.get(constants.POOL_LABEL) == pool.metadata.name
        and n.labels.get(constants.POOL_NAMESPACE_LABEL) == pool.metadata.namespace
        and not fresh.pods_on(n.name)
    ]
    mine.sort(key=lambda n: n.name, reverse=True)  # the newest first...
    mine.sort(key=lambda n: n.ready)  # ...and booting ones before those that have booted
    return [n.name for n in mine[:count]]


class KwokProvider:
    """Creates and deletes kwok GPU nodes per offer, with a provisioning delay."""

    name = spec.NodeProviderName.KWOK

    def __init__(
        self,
        api_client: client.ApiClient,
        clock: Callable[[], dt.datetime],
        delay: Mapping[CapacityType, dt.timedelta] | None = None,
        rules: Sequence[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._clock = clock
        self._delay = dict(delay or {})
        self._rules = tuple(rules)

    def set_nodes(
        self, pool: spec.InferencePool, uid: str, command: commands.SetNodes, fresh: snapshot.Snapshot
    ) -> str:
        offer = command.offer
        present = sum(1 for n in fresh.nodes if n.offer == offer and n.interruption is None)
        if command.nodes > present:
            delay = self._delay.get(offer[2], dt.timedelta())
            ready_at = self._clock() + delay if delay > dt.timedelta() else None
            taken = {n.name for n in fresh.nodes}
            made: list[str] = []
            index = 0
            while len(made) < command.nodes - present:
                name = node_name(pool, offer, index)
                index += 1
                if name in taken:
                    continue
                self._create(node_manifest(pool, offer, name, ready_at, self._rules))
                made.append(name)
            return f"kwok: created {len(made)} {commands.offer_text(offer)} node(s): {', '.join(made)}"
        victims = removable(pool, offer, fresh, present - command.nodes)
        for name in victims:
            self._delete(name)
        kept = present - command.nodes - len(victims)
        tail = f"; {kept} still hold the pool's pods (drained first)" if kept > 0 else ""
        return f"kwok: deleted {len(victims)} {commands.offer_text(offer)} node(s){tail}"

    def settle(self, pool: spec.InferencePool, fresh: snapshot.Snapshot, now: dt.datetime) -> list[str]:
        """Nodes whose provisioning delay has passed lose the provisioning taint: they have booted."""
        booted = []
        for node in fresh.nodes:
            if node.labels.get(constants.PROVIDER_LABEL) != PROVIDER or node.ready:
                continue
            read = self._read(node.name)
            if read is None:
                continue
            annotations = (read.metadata.annotations if read.metadata else None) or {}
            due = annotations.get(constants.READY_AT_ANNOTATION)
            if due is None or dt.datetime.fromisoformat(due) > now:
                continue
            present = (read.spec.taints if read.spec else None) or []
            if not any(t.key == constants.PROVISIONING_TAINT for t in present):
                continue  # booted long ago, NotReady for another reason (its kubelet): not the provider's to lift
            taints = [t for t in present if t.key != constants.PROVISIONING_TAINT]
            body = {"spec": {"taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]}}
            try:
                self._core.patch_node(node.name, body, _request_timeout=workloads.TIMEOUT_SECONDS)
            except (ApiException, *workloads.TRANSPORT_ERRORS) as error:
                raise base.ProviderFailed(f"kwok: marking node {node.name} booted failed: {error}") from error
            booted.append(f"kwok: node {node.name} has booted")
        return booted

    def _read(self, name: str) -> client.V1Node | None:
        try:
            node: client.V1Node = self._core.read_node(name, _request_timeout=workloads.TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status == 404:
                return None
            raise base.ProviderFailed(f"kwok: reading node {name} failed: {error.status} {error.reason}") from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"kwok: reading node {name} failed: {error}") from error
        return node

    def _create(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        body: Any = manifest  # the client takes a plain mapping as well as a V1Node
        try:
            self._core.create_node(body, _request_timeout=workloads.TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status != 409:  # made already by an earlier step: nothing to do
                raise base.ProviderFailed(
                    f"kwok: creating node {name} failed: {error.status} {error.reason}"
                ) from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"kwok: creating node {name} failed: {error}") from error

    def _delete(self, name: str) -> None:
        try:
            self._core.delete_node(name, _request_timeout=workloads.TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status != 404:
                raise base.ProviderFailed(
                    f"kwok: deleting node {name} failed: {error.status} {error.reason}"
                ) from error
        except workloads.TRANSPORT_ERRORS as error:
            raise base.ProviderFailed(f"kwok: deleting node {name} failed: {error}") from error
