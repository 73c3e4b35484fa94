"""Pure builders of the objects sunblend owns for a pool: one slice Deployment per offer, and its PDB.

A *slice* runs the pool's model server on one offer (region, GPU class, capacity type). The
executor (``actuate.execute``) hands these documents to ``actuate.workloads``; validation
(``actuate.validate``) and the cluster snapshot use ``slice_name`` to find a slice again. Nothing
here talks to the cluster, and no input is changed: templates are deep-copied before merging.

The node affinity of a slice mirrors ``core.nodes.capacity_type`` exactly: the rules are tried in
order and the first rule whose label has a recognised value decides, and a node no rule recognises
is on-demand. So each term for rule *i* also requires that no earlier rule recognises the node
(``NotIn`` matches a node without the label too).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sunblend.api import constants, spec
from sunblend.api.spec import CapacityType
from sunblend.core import nodes
from sunblend.core.problem import OfferKey

LABEL_MAX = 63
_HASH_CHARS = 8
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
GPU_TOLERATION: dict[str, str] = {"key": constants.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


class ManifestError(ValueError):
    """The pool cannot be turned into a slice (for example, it has no pod template)."""


def _hashed(cleaned: str, original: str) -> str:
    """The start of ``cleaned``, then a sha256 suffix of ``original`` (so distinct originals stay distinct)."""
    digest = hashlib.sha256(original.encode()).hexdigest()[:_HASH_CHARS]
    head = cleaned[: LABEL_MAX - _HASH_CHARS - 1].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


def slice_name(pool_name: str, offer: OfferKey) -> str:
    """``{pool}-{region}-{gpu_class}-{capacity_type}``, a DNS-1123 label; long or odd names get a hash suffix."""
    region, gpu_class, capacity_type = offer
    raw = f"{pool_name}-{region}-{gpu_class}-{capacity_type.value}".lower()
    if len(raw) <= LABEL_MAX and _DNS_LABEL.match(raw):
        return raw
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    return _hashed(cleaned, raw)


def label_value(text: str) -> str:
    """``text`` as a valid label value: unchanged when it is one, else shortened with a hash suffix."""
    if len(text) <= LABEL_MAX and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return _hashed(cleaned, text)


def selector(pool_name: str, offer: OfferKey) -> dict[str, str]:
    """The labels that pick out one slice's pods (the Deployment's and the PDB's selector)."""
    return {constants.POOL_LABEL: label_value(pool_name), constants.SLICE_LABEL: slice_name(pool_name, offer)}


def slice_labels(pool_name: str, offer: OfferKey) -> dict[str, str]:
    """Every label sunblend puts on a slice, its PDB and its pods."""
    region, gpu_class, capacity_type = offer
    return {
        **selector(pool_name, offer),
        constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
        constants.REGION_LABEL: region,
        constants.GPU_CLASS_LABEL: gpu_class,
        constants.CAPACITY_TYPE_LABEL: capacity_type.value,
    }


def owner_reference(pool: spec.InferencePool, uid: str) -> dict[str, Any]:
    """The controller reference to the pool, so deleting the pool deletes what it owns."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": pool.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: spec.InferencePool, uid: str, offer: OfferKey, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": slice_name(pool.metadata.name, offer),
        "namespace": pool.metadata.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(pool, uid)],
    }


def _requirement(key: str, operator: str, values: Sequence[str] = ()) -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return requirement


def _unrecognised_by(rules: Sequence[nodes.CapacityTypeRule]) -> list[dict[str, Any]]:
    """Requirements that none of ``rules`` recognises a node's label value."""
    return [_requirement(rule.label, "NotIn", sorted(rule.values)) for rule in rules if rule.values]


def capacity_terms(capacity_type: CapacityType, rules: Sequence[nodes.CapacityTypeRule]) -> list[list[dict[str, Any]]]:
    """Alternative requirement lists (ORed) that select nodes ``nodes.capacity_type`` calls ``capacity_type``."""
    terms = []
    for index, rule in enumerate(rules):
        values = sorted(value for value, kind in rule.values.items() if kind == capacity_type)
        if values:
            terms.append([*_unrecognised_by(rules[:index]), _requirement(rule.label, "In", values)])
    if capacity_type == CapacityType.ON_DEMAND:
        terms.append(_unrecognised_by(rules))
    return terms


def node_selector_terms(
    pool_spec: spec.InferencePoolSpec, offer: OfferKey, rules: Sequence[nodes.CapacityTypeRule]
) -> list[dict[str, Any]]:
    """Required node selector terms: the offer's region, its GPU class's labels, and its capacity type."""
    region, gpu_class, capacity_type = offer
    base = [_requirement(constants.REGION_LABEL, "In", [region])]
    base += [_requirement(k, "In", [v]) for k, v in sorted(pool_spec.gpu_class(gpu_class).node_selector.items())]
    alternatives = capacity_terms(capacity_type, rules)
    if not alternatives:
        raise ManifestError(f"no capacity type rule recognises {capacity_type.value} nodes, so no node could run it")
    return [{"matchExpressions": base + extra} for extra in alternatives]


def _merge_terms(user: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Both sets of terms must hold: each user term ANDed with each of ours."""
    if not user:
        return ours
    merged = []
    for theirs in user:
        for mine in ours:
            term = copy.deepcopy(theirs)
            term["matchExpressions"] = [*term.get("matchExpressions", []), *mine["matchExpressions"]]
            merged.append(term)
    return merged


def _affinity(user: Mapping[str, Any] | None, terms: list[dict[str, Any]]) -> dict[str, Any]:
    """The user's affinity (pod affinity, preferences) kept, with ``terms`` ANDed into its required node terms."""
    affinity = copy.deepcopy(dict(user or {}))
    node_affinity = affinity.get("nodeAffinity") or {}
    required = node_affinity.get(_REQUIRED) or {}
    required["nodeSelectorTerms"] = _merge_terms(required.get("nodeSelectorTerms") or [], terms)
    node_affinity[_REQUIRED] = required
    affinity["nodeAffinity"] = node_affinity
    return affinity


def tolerations(capacity_type: CapacityType) -> list[dict[str, str]]:
    """What every slice tolerates (the GPU taint), plus the spot taints on spot slices."""
    added = [dict(GPU_TOLERATION)]
    if capacity_type == CapacityType.SPOT:
        added += [
            {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
            for key, value in constants.SPOT_TAINTS
        ]
    return added


def _merge_tolerations(user: Sequence[Mapping[str, Any]], ours: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    merged = [dict(t) for t in user]
    merged += [dict(t) for t in ours if dict(t) not in merged]
    return merged


def pod_template(pool: spec.InferencePool, offer: OfferKey, rules: Sequence[nodes.CapacityTypeRule]) -> dict[str, Any]:
    """The user's pod template with the slice's labels, node affinity and tolerations merged in."""
    source = pool.spec.model_server.template
    if source is None:
        raise ManifestError(f"pool {pool.metadata.name!r} has no spec.modelServer.template to build a slice from")
    template = copy.deepcopy(source) if "spec" in source else {"metadata": {}, "spec": copy.deepcopy(source)}
    metadata = dict(template.get("metadata") or {})
    template["metadata"] = metadata
    metadata["labels"] = {**(metadata.get("labels") or {}), **slice_labels(pool.metadata.name, offer)}
    pod_spec = template["spec"]
    pod_spec["affinity"] = _affinity(pod_spec.get("affinity"), node_selector_terms(pool.spec, offer, rules))
    pod_spec["tolerations"] = _merge_tolerations(pod_spec.get("tolerations") or [], tolerations(offer[2]))
    return dict(template)


def _template_labels(pool: spec.InferencePool) -> dict[str, str]:
    template = pool.spec.model_server.template or {}
    metadata = template.get("metadata") if "spec" in template else None
    return dict((metadata or {}).get("labels") or {})


def slice_deployment(
    pool: spec.InferencePool, uid: str, offer: OfferKey, replicas: int, rules: Sequence[nodes.CapacityTypeRule]
) -> dict[str, Any]:
    """The apps/v1 Deployment that runs ``replicas`` of the pool's model server on ``offer``'s nodes."""
    labels = {**_template_labels(pool), **slice_labels(pool.metadata.name, offer)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool, uid, offer, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(pool.metadata.name, offer)},
            "template": pod_template(pool, offer, rules),
        },
    }


def slice_budget(pool: spec.InferencePool, uid: str, offer: OfferKey, max_unavailable: int) -> dict[str, Any]:
    """The policy/v1 PodDisruptionBudget of one slice: at most ``max_unavailable`` replicas evicted at once."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(pool, uid, offer, slice_labels(pool.metadata.name, offer)),
        "spec": {"selector": {"matchLabels": selector(pool.metadata.name, offer)}, "maxUnavailable": max_unavailable},
    }
