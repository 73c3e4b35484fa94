"""Says whether a node carries a spot interruption signal, through configurable taint rules.

Each provider announces "this node is about to go" with its own taint (AWS Node Termination
Handler, Karpenter, GKE's termination handler), so the taints that count are configuration
(``InterruptionRule`` values), with the well-known ones as the default, like the capacity-type
rules in ``core.nodes``. ``observe.snapshot`` calls ``signal`` on each node's taints to fill
``NodeView.interruption``; the chart's configuration is parsed with ``rules_from_config``.
Pure: the caller lists the nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

# The taint effects Kubernetes accepts.
EFFECTS: Final = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


class RuleError(ValueError):
    """An interruption rule in the configuration is malformed."""


@dataclass(frozen=True)
class InterruptionRule:
    """A node taint with ``taint_key`` (any value) is an interruption signal; ``effect`` None: any effect."""

    taint_key: str
    effect: str | None = None

    def matches(self, taint: Mapping[str, str]) -> bool:
        """Whether ``taint`` (with ``key`` and ``effect``) is this rule's signal."""
        return taint.get("key") == self.taint_key and (self.effect is None or taint.get("effect") == self.effect)


DEFAULT_RULES: tuple[InterruptionRule, ...] = (
    # AWS Node Termination Handler: the two-minute spot interruption notice (value: the event id).
    InterruptionRule("aws-node-termination-handler/spot-itn"),
    # Karpenter taints a node it is about to disrupt (a spot interruption among the reasons), then drains it.
    InterruptionRule("karpenter.sh/disrupted", "NoSchedule"),
    # GKE and the GCP node termination handler, on a preemption or a spot VM's reclaim.
    InterruptionRule("cloud.google.com/impending-node-termination"),
)

_FIELDS: Final = frozenset({"taintKey", "effect"})


def rules_from_config(entries: Iterable[object]) -> tuple[InterruptionRule, ...]:
    """Rules from configuration entries like ``{taintKey: ..., effect: NoSchedule}`` (effect optional)."""
    rules = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise RuleError(f"interruption rule {entry!r}: must be a mapping with taintKey and, optionally, effect")
        unknown = sorted(str(k) for k in entry if k not in _FIELDS)
        if unknown:
            raise RuleError(f"interruption rule {dict(entry)!r}: unknown fields {', '.join(unknown)}")
        key = entry.get("taintKey")
        if not isinstance(key, str) or not key:
            raise RuleError(f"interruption rule {dict(entry)!r}: taintKey must be a non-empty string")
        effect = entry.get("effect")
        if effect is not None and not (isinstance(effect, str) and effect in EFFECTS):
            raise RuleError(
                f"interruption rule {dict(entry)!r}: effect must be one of {', '.join(sorted(EFFECTS))}, or absent"
            )
        rules.append(InterruptionRule(key, effect if isinstance(effect, str) else None))
    return tuple(rules)


def signal(taints: Sequence[Mapping[str, str]], rules: Iterable[InterruptionRule]) -> str | None:
    """The key of the first rule's taint that ``taints`` carries (rules in order), None when none does."""
    for rule in rules:
        if any(rule.matches(taint) for taint in taints):
            return rule.taint_key
    return None
