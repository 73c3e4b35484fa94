"""Carries out validated Commands, in order: nodes, then slices and workloads, then cordon, then drain.

Called by ``loop.reconcile`` in Enforce mode. Before anything is written the commands are
re-checked against a fresh read of the cluster (``actuate.validate``): a stale command is
dropped, never forced, and the next step decides again. Each write is idempotent (a slice is
applied with its full desired state), so repeating a step repeats no work. Node commands go
to the node provider; with ``none`` they are left to the cluster's own autoscaler (pending pods
drive it) and only reported.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sunblend.actuate import drain, manifests, validate, workloads
from sunblend.actuate.providers import base
from sunblend.api import spec
from sunblend.core import commands, nodes, snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acted:
    """What one step wrote, what it dropped as stale, and what waits."""

    done: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()  # drains a PodDisruptionBudget holds back
    failed: tuple[str, ...] = ()
    left_to_autoscaler: tuple[str, ...] = ()
    drained: tuple[str, ...] = field(default=())  # nodes with none of the pool's pods left


def _user_budget(pool: spec.InferencePool, fresh: snapshot.Snapshot, ours: dict[str, Any]) -> str | None:
    """A PodDisruptionBudget of the user's that already selects the slice's pods, if any.

    The Eviction API refuses (500) to evict a pod that two budgets select, so sunblend adds
    its own budget only where the user has none.
    """
    template = pool.spec.model_server.template or {}
    pod_labels: dict[str, str] = {
        **((template.get("metadata") or {}).get("labels") or {}),
        **ours["metadata"].get("labels", {}),
        **ours["spec"]["selector"]["matchLabels"],
    }
    for budget in fresh.budgets:
        if budget.name == ours["metadata"]["name"] or not budget.selector:
            continue
        if all(pod_labels.get(k) == v for k, v in budget.selector.items()):
            return budget.name
    return None


class Actuator:
    """Validates commands against a fresh snapshot, then writes them through the writers."""

    def __init__(
        self,
        read: Callable[[spec.InferencePool], snapshot.Snapshot],
        writer: workloads.WorkloadWriter,
        drainer: drain.Drainer,
        rules: Sequence[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
        providers: Sequence[base.NodeProvider] = (),
        default_provider: spec.NodeProviderName = spec.NodeProviderName.NONE,
    ) -> None:
        self._read = read
        self._writer = writer
        self._drainer = drainer
        self._rules = tuple(rules)
        self._providers: dict[spec.NodeProviderName, base.NodeProvider] = {p.name: p for p in providers}
        self._providers.setdefault(spec.NodeProviderName.NONE, base.NoProvider())
        self._default_provider = default_provider

    def provider(self, pool: spec.InferencePool) -> base.NodeProvider:
        """The provider the pool names, or the operator's default; unknown ones fail loudly."""
        name = pool.spec.actuation.node_provider or self._default_provider
        found = self._providers.get(name)
        if found is None:
            raise base.ProviderFailed(f"node provider {name.value!r} is not enabled in this operator")
        return found

    def settle(self, pool: spec.InferencePool, view: snapshot.Snapshot, now: dt.datetime) -> list[str]:
        """Let the pool's provider finish what is due (kwok: nodes whose boot delay has passed)."""
        settle: Callable[[spec.InferencePool, snapshot.Snapshot, dt.datetime], list[str]] | None = getattr(
            self.provider(pool), "settle", None
        )
        return [] if settle is None else settle(pool, view, now)

    def act(self, pool: spec.InferencePool, uid: str, decided: Sequence[commands.Command]) -> Acted:
        """Re-check ``decided`` against the cluster now, and carry out what is still valid."""
        if not decided:
            return Acted()
        fresh = self._read(pool)
        if not fresh.readable:
            return Acted(stale=tuple(f"{commands.describe(c)}: cluster unreadable ({fresh.reason})" for c in decided))
        checked = validate.validate(commands.ordered(list(decided)), fresh, pool.metadata.name)
        done: list[str] = []
        blocked: list[str] = []
        failed: list[str] = []
        left: list[str] = []
        drained: list[str] = []
        namespace = pool.metadata.namespace
        for command in checked.valid:
            try:
                if isinstance(command, commands.SetNodes):
                    provider = self.provider(pool)
                    said = provider.set_nodes(pool, uid, command, fresh)
                    (left if provider.name is spec.NodeProviderName.NONE else done).append(said)
                elif isinstance(command, commands.ScaleSlice):
                    self._writer.apply_slice(
                        namespace, manifests.slice_deployment(pool, uid, command.offer, command.replicas, self._rules)
                    )
                    budget = manifests.slice_budget(
                        pool, uid, command.offer, pool.spec.actuation.disruption.max_unavailable
                    )
                    if not _user_budget(pool, fresh, budget):
                        self._writer.apply_budget(namespace, budget)
                    done.append(commands.describe(command))
                elif isinstance(command, commands.ScaleWorkload):
                    self._writer.scale(namespace, command.workload_kind, command.name, command.replicas, None)
                    done.append(commands.describe(command))
                elif isinstance(command, commands.Cordon):
                    self._drainer.cordon(command.node, uid)
                    done.append(commands.describe(command))
                else:
                    pods = [p for p in fresh.pods_on(command.node) if p.name in command.pods]
                    outcome = self._drainer.drain(namespace, command.node, pods)
                    done.append(f"{commands.describe(command)} ({len(outcome.evicted)} evicted)")
                    if outcome.blocked:
                        blocked.append(
                            f"{command.node}: a PodDisruptionBudget holds back eviction of {', '.join(outcome.blocked)}"
                        )
                    if outcome.protected:
                        blocked.append(f"{command.node}: {', '.join(outcome.protected)} may not be disrupted")
                    if outcome.complete:
                        drained.append(command.node)
            except workloads.ActuationFailed as error:
                logger.warning("%s failed: %s", commands.describe(command), error)
                failed.append(f"{commands.describe(command)}: {error}")
        return Acted(
            done=tuple(done),
            stale=tuple(f"{commands.describe(c)}: {why}" for c, why in checked.stale),
            blocked=tuple(blocked),
            failed=tuple(failed),
            left_to_autoscaler=tuple(left),
            drained=tuple(drained),
        )
