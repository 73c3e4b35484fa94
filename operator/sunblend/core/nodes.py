"""Counts GPU nodes by region, GPU class and capacity type from node labels.

Which label says "spot" differs by provider (Karpenter, EKS, GKE, AKS), so the mapping from
labels to our three capacity types is configuration (``CapacityTypeRule`` values), with the
well-known providers as the default. Pure: the caller lists the nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sunblend.api import constants, spec
from sunblend.api.spec import CapacityType
from sunblend.core.problem import OfferKey


@dataclass(frozen=True)
class CapacityTypeRule:
    """If a node has ``label`` with one of ``values``' keys, its capacity type is that value."""

    label: str
    values: Mapping[str, CapacityType]


DEFAULT_RULES: tuple[CapacityTypeRule, ...] = (
    CapacityTypeRule(
        "karpenter.sh/capacity-type",
        {"spot": CapacityType.SPOT, "on-demand": CapacityType.ON_DEMAND, "reserved": CapacityType.COMMITTED},
    ),
    CapacityTypeRule(
        "eks.amazonaws.com/capacityType", {"SPOT": CapacityType.SPOT, "ON_DEMAND": CapacityType.ON_DEMAND}
    ),
    CapacityTypeRule("cloud.google.com/gke-spot", {"true": CapacityType.SPOT}),
    CapacityTypeRule("kubernetes.azure.com/scalesetpriority", {"spot": CapacityType.SPOT}),
)


def rules_from_config(config: Iterable[Mapping[str, object]]) -> tuple[CapacityTypeRule, ...]:
    """Rules from configuration entries like ``{label: ..., values: {spot: spot, ...}}``."""
    rules = []
    for entry in config:
        values = entry.get("values")
        if not isinstance(values, Mapping):
            raise ValueError(f"capacity type rule for {entry.get('label')!r}: values must be a mapping")
        rules.append(CapacityTypeRule(str(entry["label"]), {str(k): CapacityType(str(v)) for k, v in values.items()}))
    return tuple(rules)


def capacity_type(labels: Mapping[str, str], rules: Iterable[CapacityTypeRule]) -> CapacityType:
    """A node's capacity type; a node no rule recognises is counted as on-demand."""
    for rule in rules:
        value = labels.get(rule.label)
        if value is not None and value in rule.values:
            return rule.values[value]
    return CapacityType.ON_DEMAND


def selects(gpu_class: spec.GpuClass, labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` belongs to ``gpu_class`` (a class without a selector selects none)."""
    selector = gpu_class.node_selector
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def count(
    pool_spec: spec.InferencePoolSpec, node_labels: Iterable[Mapping[str, str]], rules: Iterable[CapacityTypeRule]
) -> dict[OfferKey, int]:
    """Nodes per (region, GPU class, capacity type) among the pool's declared regions and classes."""
    rules = tuple(rules)
    regions = {r.name for r in pool_spec.regions}
    counts: Counter[OfferKey] = Counter()
    for labels in node_labels:
        region = labels.get(constants.REGION_LABEL)
        if region not in regions:
            continue
        for gpu_class in pool_spec.gpu_classes:
            if selects(gpu_class, labels):
                counts[(region, gpu_class.name, capacity_type(labels, rules))] += 1
                break
    return dict(counts)
