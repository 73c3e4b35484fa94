"""Consolidation advice across pools: which pools could share one pool, and what that would save.

Teams often run one pool per service where one shared pool would serve them all: each pool rounds
its nodes up on its own, and keeps its own headroom and minimum replicas. ``groups`` finds pools
that serve the same ``modelServer.model`` and whose regions overlap (directly, or through another
pool of the group). ``merge`` builds the pool they would share, or refuses with the reasons.
``advise_group`` plans the merged pool and every member over the same hours from the same start,
and reports the merged cost against the sum of the separate costs.

The merge rules (docs/consolidation.md repeats them for users):

- **Model server**: the members must agree on ``gpusPerReplica`` and ``tokensPerSecondPerReplica``
  (otherwise a replica of one is not a replica of the other: refused). The strictest
  ``targetLatencyMs`` (the lowest) is kept. Workload references are dropped: the merged pool is
  hypothetical.
- **Regions**: the union, in the order the pools (sorted by namespace/name) declare them. A region
  declared by two pools must have the same time zone (refused otherwise). Demand is the sum, per
  region and hour, of each member's declared forecast.
- **GPU classes**: the union, by name. A class declared by two pools must have the same
  ``gpusPerNode`` and the same throughput per replica (refused otherwise); the first pool's node
  selector is kept (a note says so when they differ). A class is offered in every region where
  any member offers it.
- **Prices**: as declared. Where two members give different prices for the same class, region
  and capacity type, the merge is refused: the comparison would depend on which price is taken.
  A price one member gives and another leaves out (spot or committed not declared) is taken, with
  a note.
- **Commitments**: summed per class and region.
- **Policy**: the strictest of each: the highest ``headroom``, ``spotLossServedFraction``,
  ``minReplicasPerRegion`` and ``changePenaltyDollarsPerNode``; the lowest ``maxSpotFraction``
  and ``routing.maxLatencyMs``; the union of latencies, the highest where two give the same pair.
  ``budgetDollarsPerHour`` and ``maxNodeChangesPerHour`` are summed when every member sets them,
  and absent otherwise (a member without a cap puts no cap on the whole).
- **Planning**: every plan (members and merged) covers the longest horizon of the group, in
  ``Operate`` mode (commitments as held), with the longest time limit and the smallest gap.

Pure: ``now`` is passed in. Callers: ``sunblend advise consolidation`` and the operator's
consolidation handler (``handlers.consolidation``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sunblend.api import load, spec
from sunblend.core import blend, forecast, problem

REASON_CONSOLIDATION_ADVISED = "ConsolidationAdvised"
"""Event reason the operator posts on each pool of a group whose merge would save money."""

CENT = 0.005  # savings below half a cent over the horizon are no savings


@dataclass(frozen=True)
class PoolEntry:
    """One pool as the advice sees it: its namespace, name and spec."""

    namespace: str
    name: str
    spec: spec.InferencePoolSpec

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def region_names(self) -> frozenset[str]:
        """The regions the pool declares."""
        return frozenset(r.name for r in self.spec.regions)


class GroupStatus(enum.StrEnum):
    """What came of one group of pools."""

    ADVISED = "Advised"  # planned as one pool, they cost less
    NO_SAVING = "NoSaving"  # planned as one pool, they cost as much or more
    REFUSED = "Refused"  # they cannot be merged; the reasons say why
    UNPLANNED = "Unplanned"  # a member or the merged pool could not be planned; the reasons say why


class MergeRefused(Exception):
    """The pools cannot be merged; ``reasons`` says why, one reason each."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


@dataclass(frozen=True)
class Merged:
    """The pool a group would share, and what the merge had to choose."""

    spec: spec.InferencePoolSpec
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupAdvice:
    """The advice for one group: its pools, what they cost apart and merged, or why not compared."""

    model: str
    pools: tuple[str, ...]  # namespace/name, sorted
    shared_regions: tuple[str, ...]  # regions declared by at least two members
    status: GroupStatus
    start: dt.datetime
    horizon_hours: int
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    separate_dollars: Mapping[str, float] = field(default_factory=dict)  # pool -> cost over the horizon
    merged_dollars: float | None = None  # the merged pool's cost over the horizon

    @property
    def separate_total_dollars(self) -> float:
        """The sum of the members' costs over the horizon."""
        return sum(self.separate_dollars.values())

    @property
    def saving_dollars(self) -> float | None:
        """What merging saves over the horizon (negative: it costs more); None when not compared."""
        if self.merged_dollars is None:
            return None
        return self.separate_total_dollars - self.merged_dollars

    @property
    def saving_dollars_per_hour(self) -> float | None:
        """The saving per hour, averaged over the horizon."""
        saving = self.saving_dollars
        return None if saving is None else saving / self.horizon_hours

    @property
    def saving_ratio(self) -> float | None:
        """The saving as a share of the separate costs."""
        saving = self.saving_dollars
        total = self.separate_total_dollars
        return None if saving is None or total <= 0 else saving / total

    def message_for(self, pool: str) -> str:
        """One line for an event on ``pool``: the other pools, and the saving per hour."""
        others = [p for p in self.pools if p != pool]
        subject = f"pool {others[0]} also serves" if len(others) == 1 else f"pools {', '.join(others)} also serve"
        head = f"{subject} {self.model} in {', '.join(self.shared_regions)}"
        if self.status is GroupStatus.ADVISED and self.saving_dollars_per_hour is not None:
            merged = (self.merged_dollars or 0.0) / self.horizon_hours
            apart = self.separate_total_dollars / self.horizon_hours
            return (
                f"{head}: planned as one pool they would cost ${merged:,.2f}/h instead of ${apart:,.2f}/h, "
                f"saving ${self.saving_dollars_per_hour:,.2f}/h (${self.saving_dollars or 0.0:,.2f} over "
                f"{self.horizon_hours} h)"
            )
        return f"{head}: {self.status.value}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def groups(pools: Iterable[PoolEntry]) -> list[tuple[str, tuple[PoolEntry, ...]]]:
    """Pools of the same model whose regions overlap, directly or through another member.

    Each group has two or more pools, sorted by namespace/name; groups come by model, then by
    their first pool. Pools that name no model are never grouped.
    """
    by_model: dict[str, list[PoolEntry]] = {}
    for pool in sorted(pools, key=lambda p: p.key):
        if pool.spec.model_server.model is not None:
            by_model.setdefault(pool.spec.model_server.model, []).append(pool)
    found = []
    for model in sorted(by_model):
        found += [(model, c) for c in _overlapping(by_model[model]) if len(c) > 1]
    return found


def _overlapping(members: Sequence[PoolEntry]) -> list[tuple[PoolEntry, ...]]:
    """``members`` split into sets linked by shared regions, each in the given order."""
    unseen = list(members)
    components = []
    while unseen:
        component = [unseen.pop(0)]
        regions = set(component[0].region_names)
        grown = True
        while grown:
            linked = [p for p in unseen if p.region_names & regions]
            grown = bool(linked)
            for pool in linked:
                unseen.remove(pool)
                component.append(pool)
                regions |= pool.region_names
        components.append(tuple(sorted(component, key=lambda p: p.key)))
    return components


def shared_regions(members: Sequence[PoolEntry]) -> tuple[str, ...]:
    """Regions declared by at least two of ``members``, in declared order."""
    counts: dict[str, int] = {}
    for pool in members:
        for region in pool.spec.regions:
            counts[region.name] = counts.get(region.name, 0) + 1
    return tuple(name for name, count in counts.items() if count > 1)


def _model_server(members: Sequence[PoolEntry], reasons: list[str], notes: list[str]) -> dict[str, Any]:
    first = members[0]
    server = first.spec.model_server
    for pool in members[1:]:
        other = pool.spec.model_server
        if other.gpus_per_replica != server.gpus_per_replica:
            reasons.append(
                f"{first.key} runs {server.gpus_per_replica} GPU(s) per replica and {pool.key} "
                f"{other.gpus_per_replica}: spec.modelServer.gpusPerReplica must agree"
            )
        if other.tokens_per_second_per_replica != server.tokens_per_second_per_replica:
            reasons.append(
                f"{first.key} serves {server.tokens_per_second_per_replica:g} tokens/s per replica and {pool.key} "
                f"{other.tokens_per_second_per_replica:g}: spec.modelServer.tokensPerSecondPerReplica must agree"
            )
    latencies = [p.spec.model_server.target_latency_ms for p in members]
    targets = sorted({t for t in latencies if t is not None})
    if len(targets) > 1:
        notes.append(f"the members' latency targets differ; the merged pool keeps the strictest, {targets[0]} ms")
    return {
        "model": server.model,
        "gpusPerReplica": server.gpus_per_replica,
        "tokensPerSecondPerReplica": server.tokens_per_second_per_replica,
        "targetLatencyMs": targets[0] if targets else None,
    }


def _regions(members: Sequence[PoolEntry], reasons: list[str]) -> list[dict[str, Any]]:
    declared: dict[str, tuple[PoolEntry, spec.Region]] = {}
    baseline: dict[str, float] = {}
    peak: dict[str, float] = {}
    for pool in members:
        for region in pool.spec.regions:
            if region.name in declared:
                first, seen = declared[region.name]
                if seen.time_zone != region.time_zone:
                    reasons.append(
                        f"region {region.name} is in {seen.time_zone} for {first.key} and in "
                        f"{region.time_zone} for {pool.key}: spec.regions[].timeZone must agree"
                    )
            else:
                declared[region.name] = (pool, region)
            baseline[region.name] = baseline.get(region.name, 0.0) + region.demand.baseline_tokens_per_second
            peak[region.name] = peak.get(region.name, 0.0) + region.demand.peak_tokens_per_second
    return [
        {
            "name": name,
            "timeZone": region.time_zone,
            "demand": {  # documentation only: the merged plan is given the summed forecasts
                "baselineTokensPerSecond": min(baseline[name], spec.MAX_TOKENS_PER_SECOND),
                "peakTokensPerSecond": min(peak[name], spec.MAX_TOKENS_PER_SECOND),
                "busyHours": region.demand.busy_hours.model_dump(by_alias=True),
            },
        }
        for name, (_, region) in declared.items()
    ]


_PRICE_FIELDS = (("committed", "committed"), ("spot", "spot"), ("on_demand", "onDemand"))


def _class_prices(
    name: str, offered: Mapping[str, list[tuple[PoolEntry, spec.Prices]]], reasons: list[str], notes: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The merged class's prices and per-region prices, from each member's prices per region."""
    merged: dict[str, dict[str, float | None]] = {}
    for region, declared in offered.items():
        merged[region] = {}
        for attribute, wire in _PRICE_FIELDS:
            given = [(pool, getattr(prices, attribute)) for pool, prices in declared]
            values = {value for _, value in given if value is not None}
            if len(values) > 1:
                quoted = ", ".join(f"{pool.key} ${value:g}" for pool, value in given if value is not None)
                reasons.append(
                    f"the {wire} price of {name} in {region} differs ({quoted}): prices must agree to be compared"
                )
            elif values and any(value is None for _, value in given):
                missing = ", ".join(pool.key for pool, value in given if value is None)
                notes.append(
                    f"{missing} declares no {wire} price for {name} in {region}; the merged pool takes ${min(values):g}"
                )
            merged[region][wire] = min(values) if values else None
    regions = list(merged)
    if not regions:
        return {"onDemand": 0.0}, []
    base: dict[str, Any] = {}
    for _, wire in _PRICE_FIELDS:
        everywhere = all(merged[r][wire] is not None for r in regions)
        base[wire] = merged[regions[0]][wire] if everywhere or wire == "onDemand" else None
    overrides = [{"region": r, **{k: v for k, v in merged[r].items() if v is not None}} for r in regions[1:]]
    return base, overrides


def _gpu_classes(
    members: Sequence[PoolEntry], region_order: Sequence[str], reasons: list[str], notes: list[str]
) -> list[dict[str, Any]]:
    first_seen: dict[str, tuple[PoolEntry, spec.GpuClass]] = {}
    offered: dict[str, dict[str, list[tuple[PoolEntry, spec.Prices]]]] = {}
    for pool in members:
        server = pool.spec.model_server
        for gpu_class in pool.spec.gpu_classes:
            if gpu_class.name in first_seen:
                owner, seen = first_seen[gpu_class.name]
                throughput = gpu_class.tokens_per_second_per_replica or server.tokens_per_second_per_replica
                seen_throughput = (
                    seen.tokens_per_second_per_replica or owner.spec.model_server.tokens_per_second_per_replica
                )
                if seen.gpus_per_node != gpu_class.gpus_per_node:
                    reasons.append(
                        f"GPU class {gpu_class.name} has {seen.gpus_per_node} GPUs per node in {owner.key} and "
                        f"{gpu_class.gpus_per_node} in {pool.key}: spec.gpuClasses[].gpusPerNode must agree"
                    )
                overridden = gpu_class.tokens_per_second_per_replica is not None or seen.tokens_per_second_per_replica
                if overridden and seen_throughput != throughput:  # else the model servers' reason says it
                    reasons.append(
                        f"a replica on {gpu_class.name} serves {seen_throughput:g} tokens/s in {owner.key} and "
                        f"{throughput:g} in {pool.key}: spec.gpuClasses[].tokensPerSecondPerReplica must agree"
                    )
                if seen.node_selector != gpu_class.node_selector:
                    notes.append(
                        f"GPU class {gpu_class.name}'s node selectors differ; the merged pool keeps {owner.key}'s"
                    )
            else:
                first_seen[gpu_class.name] = (pool, gpu_class)
            per_region = offered.setdefault(gpu_class.name, {})
            for region in pool.spec.regions:
                if pool.spec.offers(gpu_class, region.name):
                    per_region.setdefault(region.name, []).append((pool, pool.spec.prices(gpu_class, region.name)))
    classes = []
    for name, (_, gpu_class) in first_seen.items():
        by_region = offered[name]
        ordered = {r: by_region[r] for r in region_order if r in by_region}
        base, overrides = _class_prices(name, ordered, reasons, notes)
        classes.append(
            {
                "name": name,
                "nodeSelector": dict(gpu_class.node_selector),
                "gpusPerNode": gpu_class.gpus_per_node,
                "tokensPerSecondPerReplica": gpu_class.tokens_per_second_per_replica,
                "prices": base,
                "regionPrices": overrides,
                "regions": [] if len(ordered) == len(region_order) else list(ordered),
            }
        )
    return classes


def _commitments(members: Sequence[PoolEntry]) -> list[dict[str, Any]]:
    held: dict[tuple[str, str], int] = {}
    for pool in members:
        for commitment in pool.spec.commitments:
            key = (commitment.gpu_class, commitment.region)
            held[key] = held.get(key, 0) + commitment.gpus
    return [{"gpuClass": g, "region": r, "gpus": gpus} for (g, r), gpus in held.items()]


def _sum_if_all(values: Sequence[float | int | None]) -> float | int | None:
    present = [v for v in values if v is not None]
    return sum(present) if len(present) == len(values) else None


def _policy(members: Sequence[PoolEntry]) -> dict[str, Any]:
    policies = [p.spec.policy for p in members]
    latencies: dict[tuple[str, str], int] = {}
    for policy in policies:
        for latency in policy.routing.latencies:
            key = (latency.from_region, latency.to_region)
            latencies[key] = max(latencies.get(key, 0), latency.milliseconds)
    return {
        "headroom": max(p.headroom for p in policies),
        "maxSpotFraction": min(p.max_spot_fraction for p in policies),
        "spotLossServedFraction": max(p.spot_loss_served_fraction for p in policies),
        "minReplicasPerRegion": max(p.min_replicas_per_region for p in policies),
        "routing": {
            "maxLatencyMs": min(p.routing.max_latency_ms for p in policies),
            "latencies": [{"from": f, "to": t, "milliseconds": ms} for (f, t), ms in latencies.items()],
        },
        "budgetDollarsPerHour": _sum_if_all([p.budget_dollars_per_hour for p in policies]),
        "maxNodeChangesPerHour": _sum_if_all([p.max_node_changes_per_hour for p in policies]),
        "changePenaltyDollarsPerNode": max(p.change_penalty_dollars_per_node for p in policies),
    }


def horizon_hours(members: Sequence[PoolEntry]) -> int:
    """The hours every plan of the group covers: the longest horizon a member declares."""
    return max(p.spec.planning.horizon_hours for p in members)


def _planning(members: Sequence[PoolEntry]) -> dict[str, Any]:
    plannings = [p.spec.planning for p in members]
    return {
        "horizonHours": horizon_hours(members),
        "mode": spec.PlanningMode.OPERATE.value,
        "solver": plannings[0].solver.value,
        "timeLimitSeconds": max(p.time_limit_seconds for p in plannings),
        "relativeGap": min(p.relative_gap for p in plannings),
    }


def merge(members: Sequence[PoolEntry]) -> Merged:
    """The one pool ``members`` would share; raises ``MergeRefused`` naming every reason it cannot be built."""
    if len(members) < 2:
        raise MergeRefused(["a merge needs two pools or more"])
    members = sorted(members, key=lambda p: p.key)
    models = {p.spec.model_server.model for p in members}
    reasons: list[str] = []
    notes: list[str] = []
    if len(models) > 1:
        reasons.append(f"the pools serve different models ({', '.join(sorted(str(m) for m in models))})")
    server = _model_server(members, reasons, notes)
    regions = _regions(members, reasons)
    classes = _gpu_classes(members, [r["name"] for r in regions], reasons, notes)
    if reasons:
        raise MergeRefused(reasons)
    document = {
        "modelServer": server,
        "regions": regions,
        "gpuClasses": classes,
        "commitments": _commitments(members),
        "policy": _policy(members),
        "planning": _planning(members),
    }
    try:
        merged = load.parse_spec(document)
    except load.InvalidPool as error:  # e.g. more regions than one pool may declare
        raise MergeRefused([f"the merged pool would be invalid: {e}" for e in error.errors]) from None
    return Merged(merged, tuple(dict.fromkeys(notes)))


def over_horizon(pool_spec: spec.InferencePoolSpec, hours: int) -> spec.InferencePoolSpec:
    """``pool_spec`` planned over ``hours`` hours in ``Operate`` mode, as every plan of a group is."""
    planning = pool_spec.planning.model_copy(update={"horizon_hours": hours, "mode": spec.PlanningMode.OPERATE})
    return pool_spec.model_copy(update={"planning": planning})


def summed_forecast(members: Sequence[PoolEntry], hours: tuple[dt.datetime, ...]) -> dict[str, tuple[float, ...]]:
    """Each member's declared forecast, summed per region and hour."""
    total: dict[str, list[float]] = {}
    for pool in members:
        for region, demand in forecast.declared_forecast(pool.spec, hours).items():
            sums = total.setdefault(region, [0.0] * len(hours))
            for i, tokens_per_second in enumerate(demand):
                sums[i] += tokens_per_second
    return {region: tuple(sums) for region, sums in total.items()}


def advise_group(model: str, members: Sequence[PoolEntry], now: dt.datetime) -> GroupAdvice:
    """Plan ``members`` apart and merged, over the same hours from ``now``, and compare the costs."""
    members = sorted(members, key=lambda p: p.key)
    hours = horizon_hours(members)
    start = forecast.hour_starts(now, 1)[0]
    advice = GroupAdvice(
        model=model,
        pools=tuple(p.key for p in members),
        shared_regions=shared_regions(members),
        status=GroupStatus.REFUSED,
        start=start,
        horizon_hours=hours,
    )
    try:
        merged = merge(members)
    except MergeRefused as refusal:
        return _with(advice, reasons=refusal.reasons)
    separate: dict[str, float] = {}
    failures = []
    for pool in members:
        result = blend.plan(problem.from_spec(over_horizon(pool.spec, hours), now))
        if not result.keeps_every_constraint:
            failures.append(f"{pool.key} alone: {result.status.value}: {result.message}")
        separate[pool.key] = result.total_dollars
    demand = summed_forecast(members, forecast.hour_starts(now, hours))
    merged_plan = blend.plan(problem.from_spec(merged.spec, now, demand=demand))
    if not merged_plan.keeps_every_constraint:
        failures.append(f"merged: {merged_plan.status.value}: {merged_plan.message}")
    notes = list(merged.notes)
    if failures:
        return _with(advice, status=GroupStatus.UNPLANNED, reasons=tuple(failures), notes=tuple(notes))
    saving = sum(separate.values()) - merged_plan.total_dollars
    gap = merged_plan.mip_gap
    if gap and saving > CENT and saving < gap * merged_plan.total_dollars:
        notes.append(f"the saving is within the merged plan's proven gap ({gap:.2%}): it may be smaller")
    return _with(
        advice,
        status=GroupStatus.ADVISED if saving > CENT else GroupStatus.NO_SAVING,
        notes=tuple(notes),
        separate_dollars=separate,
        merged_dollars=merged_plan.total_dollars,
    )


def _with(advice: GroupAdvice, **changes: Any) -> GroupAdvice:
    return dataclasses.replace(advice, **changes)


def advise(pools: Iterable[PoolEntry], now: dt.datetime) -> tuple[GroupAdvice, ...]:
    """Advice for every group of pools that serve the same model in overlapping regions."""
    return tuple(advise_group(model, members, now) for model, members in groups(pools))


def document(advice: Sequence[GroupAdvice]) -> dict[str, Any]:
    """The advice as plain JSON-ready values: what ``-o json`` prints."""

    def money(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "groups": [
            {
                "model": a.model,
                "pools": list(a.pools),
                "sharedRegions": list(a.shared_regions),
                "status": a.status.value,
                "start": a.start.isoformat(),
                "horizonHours": a.horizon_hours,
                "separateDollars": {k: money(v) for k, v in a.separate_dollars.items()},
                "separateDollarsPerHour": money(a.separate_total_dollars / a.horizon_hours)
                if a.merged_dollars is not None
                else None,
                "mergedDollars": money(a.merged_dollars),
                "mergedDollarsPerHour": money(None if a.merged_dollars is None else a.merged_dollars / a.horizon_hours),
                "savingDollars": money(a.saving_dollars),
                "savingDollarsPerHour": money(a.saving_dollars_per_hour),
                "savingRatio": None if a.saving_ratio is None else round(a.saving_ratio, 4),
                "reasons": list(a.reasons),
                "notes": list(a.notes),
            }
            for a in advice
        ]
    }
