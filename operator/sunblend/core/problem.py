"""The planner's input, normalised: offers, demand per hour, routes and policy, with no YAML left.

``from_spec`` builds a ``BlendProblem`` from a pool spec, a forecast and the current nodes; tests
and benchmarks may build one directly. Everything the planner and the plan checker read is here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import forecast

# Spec price field for each capacity type.
_PRICE_FIELD = {
    CapacityType.COMMITTED: "committed",
    CapacityType.SPOT: "spot",
    CapacityType.ON_DEMAND: "on_demand",
}

OfferKey = tuple[str, str, CapacityType]  # (region, gpu_class, capacity_type)


@dataclass(frozen=True)
class Offer:
    """Nodes of one GPU class that can be had in one region with one capacity type."""

    region: str
    gpu_class: str
    capacity_type: CapacityType
    gpus_per_node: int
    replicas_per_node: int
    dollars_per_gpu_hour: float
    tokens_per_second_per_replica: float
    committed_nodes: int = 0  # nodes the commitment can run (committed offers only), a partial one included
    max_nodes: int | None = None  # nodes obtainable at most (e.g. spot seen scarce); None: no limit
    committed_gpus: int | None = None  # GPUs held; None: committed_nodes whole nodes
    uncovered_dollars_per_gpu_hour: float = 0.0  # what a partial node's GPUs beyond the commitment cost (on-demand)

    @property
    def key(self) -> OfferKey:
        """(region, gpu_class, capacity_type)."""
        return (self.region, self.gpu_class, self.capacity_type)

    @property
    def dollars_per_node_hour(self) -> float:
        """Price of one node for one hour."""
        return self.dollars_per_gpu_hour * self.gpus_per_node

    @property
    def tokens_per_second_per_node(self) -> float:
        """Throughput of one full node."""
        return self.replicas_per_node * self.tokens_per_second_per_replica

    @property
    def held_gpus(self) -> int:
        """Committed GPUs paid for every hour, used or not (committed offers only)."""
        return self.committed_nodes * self.gpus_per_node if self.committed_gpus is None else self.committed_gpus

    @property
    def sunk_dollars_per_hour(self) -> float:
        """What the commitment costs each hour, whether or not its nodes run."""
        return self.held_gpus * self.dollars_per_gpu_hour

    @property
    def partial_node_dollars_per_hour(self) -> float:
        """Extra cost of running the last committed node when the commitment does not fill it.

        A commitment of 12 GPUs on 8-GPU nodes runs two nodes: one fully committed, and one whose
        4 uncovered GPUs are billed at the on-demand price while it runs (as per-GPU commitments,
        such as committed use discounts, are applied). Zero when the commitment fills its nodes.
        """
        uncovered = self.committed_nodes * self.gpus_per_node - self.held_gpus
        return max(uncovered, 0) * self.uncovered_dollars_per_gpu_hour


@dataclass(frozen=True)
class SolverSettings:
    """Which solver, and when it may stop."""

    name: spec.SolverName = spec.SolverName.HIGHS
    time_limit_seconds: float = 10.0
    relative_gap: float = 0.01


@dataclass(frozen=True)
class BlendProblem:
    """Everything the planner needs, for every hour of the horizon."""

    hours: tuple[dt.datetime, ...]
    time_zones: Mapping[str, str]  # region -> IANA zone; also the list of regions, in order
    demand: Mapping[str, tuple[float, ...]]  # region -> tokens/s per hour
    offers: tuple[Offer, ...]
    routes: frozenset[tuple[str, str]]  # (user region, serving region), self-routes included
    headroom: float = 0.2
    max_spot_fraction: float = 0.5
    spot_loss_served_fraction: float = 0.5
    min_replicas_per_region: int = 0
    budget_dollars_per_hour: float | None = None
    max_node_changes_per_hour: int | None = None
    change_penalty_dollars_per_node: float = 0.0
    current_nodes: Mapping[OfferKey, int] = field(default_factory=dict)
    size_commitments: bool = False
    solver: SolverSettings = field(default_factory=SolverSettings)
    unplaced_commitment_dollars_per_hour: float = 0.0  # commitments no offer can use: paid, never run
    notes: tuple[str, ...] = ()  # what the planner should tell the user about its input

    @property
    def regions(self) -> tuple[str, ...]:
        """Region names in declared order."""
        return tuple(self.time_zones)

    @property
    def horizon(self) -> int:
        """Number of hours planned."""
        return len(self.hours)

    def offers_in(self, region: str) -> tuple[Offer, ...]:
        """Offers in one region."""
        return tuple(o for o in self.offers if o.region == region)

    @property
    def committed_sunk_dollars_per_hour(self) -> float:
        """Amortised cost of the commitments already bought, paid whether used or not."""
        held = sum(o.sunk_dollars_per_hour for o in self.offers if o.capacity_type is CapacityType.COMMITTED)
        return held + self.unplaced_commitment_dollars_per_hour

    @property
    def constant_dollars_per_hour(self) -> float:
        """What every plan pays each hour whatever it decides: the sunk commitments (when not sizing them)."""
        if self.size_commitments:
            return self.unplaced_commitment_dollars_per_hour
        return self.committed_sunk_dollars_per_hour

    def window(self, start: int, stop: int, before: Mapping[OfferKey, int] | None) -> BlendProblem:
        """The hours ``[start, stop)`` as a problem of their own, ``before`` running just before them.

        ``before`` None keeps the problem's own current nodes (for a window that starts at hour 0).
        """
        current = dict(self.current_nodes) if before is None else {o.key: before.get(o.key, 0) for o in self.offers}
        return replace(
            self,
            hours=self.hours[start:stop],
            demand={r: d[start:stop] for r, d in self.demand.items()},
            current_nodes=current,
        )

    def serving_regions(self, user_region: str) -> tuple[str, ...]:
        """Regions allowed to serve ``user_region``'s demand."""
        return tuple(r for r in self.regions if (user_region, r) in self.routes)

    def nodes_needed(self, offer: Offer, tokens_per_second: float) -> int:
        """Nodes of ``offer`` that serve ``tokens_per_second`` with headroom and the minimum replicas."""
        for_demand = math.ceil((1 + self.headroom) * tokens_per_second / offer.tokens_per_second_per_node - 1e-9)
        for_minimum = math.ceil(self.min_replicas_per_region / offer.replicas_per_node)
        return max(for_demand, for_minimum)

    def all_on_demand_dollars(self, hour: int, load: Mapping[str, float] | None = None) -> float:
        """Cost of serving the hour all on-demand, on each serving region's cheapest single class.

        ``load`` is the demand each region serves (tokens/s), routed as the plan routes it; by
        default each region serves its own users, or, with no GPUs of its own, the first region
        allowed to serve them. A region with no on-demand offer is priced at the cheapest
        on-demand offer among the regions its users may use.
        """
        if load is None:
            load = self.local_load(hour)
        total = 0.0
        offered = {o.region for o in self.offers}
        for region in self.regions:
            tokens_per_second = load.get(region, 0.0)
            if tokens_per_second <= 0 and region not in offered:
                continue
            candidates = [region, *(r for r in self.regions if (region, r) in self.routes and r != region)]
            for candidate in candidates:
                costs = [
                    self.nodes_needed(o, tokens_per_second) * o.dollars_per_node_hour
                    for o in self.offers_in(candidate)
                    if o.capacity_type is CapacityType.ON_DEMAND
                ]
                if costs:
                    total += min(costs)
                    break
        return total

    def local_load(self, hour: int) -> dict[str, float]:
        """Demand per serving region when each region serves its own users where it can."""
        offered = {o.region for o in self.offers}
        load: dict[str, float] = {}
        for user in self.regions:
            demand = self.demand[user][hour]
            if demand <= 0:
                continue
            server = user if user in offered else next((r for r in self.serving_regions(user) if r in offered), user)
            load[server] = load.get(server, 0.0) + demand
        return load


def _routes(pool_spec: spec.InferencePoolSpec) -> frozenset[tuple[str, str]]:
    routing = pool_spec.policy.routing
    routes = {(r.name, r.name) for r in pool_spec.regions}
    if routing.max_latency_ms == 0:
        return frozenset(routes)  # documented as local only, whatever the latency entries say
    for latency in routing.latencies:
        if latency.milliseconds <= routing.max_latency_ms:
            routes.add((latency.from_region, latency.to_region))
            routes.add((latency.to_region, latency.from_region))
    # An explicit reverse entry over the limit overrides the symmetric default.
    for latency in routing.latencies:
        if latency.milliseconds > routing.max_latency_ms and latency.from_region != latency.to_region:
            routes.discard((latency.from_region, latency.to_region))
    return frozenset(routes)


def _offers(pool_spec: spec.InferencePoolSpec, priced_commitments: bool) -> tuple[tuple[Offer, ...], float, list[str]]:
    """The offers, what commitments that no offer can use cost per hour, and notes about them."""
    per_replica = pool_spec.model_server.gpus_per_replica
    bought: dict[tuple[str, str], int] = {}
    for c in pool_spec.commitments:
        bought[(c.region, c.gpu_class)] = bought.get((c.region, c.gpu_class), 0) + c.gpus
    offers = []
    unplaced = 0.0
    notes = []
    for region in pool_spec.regions:
        for gpu_class in pool_spec.gpu_classes:
            prices = pool_spec.prices(gpu_class, region.name)
            held_gpus = bought.get((region.name, gpu_class.name), 0)
            if not pool_spec.offers(gpu_class, region.name):
                if held_gpus:
                    unplaced += held_gpus * (prices.committed or 0.0)
                    notes.append(
                        f"{held_gpus} committed {gpu_class.name} GPUs in {region.name} are paid for, but "
                        f"{gpu_class.name} is not offered there (spec.gpuClasses regions): no node can use them"
                    )
                continue
            held_nodes = math.ceil(held_gpus / gpu_class.gpus_per_node)
            if held_gpus % gpu_class.gpus_per_node:
                notes.append(
                    f"{held_gpus} committed {gpu_class.name} GPUs in {region.name} fill "
                    f"{held_gpus // gpu_class.gpus_per_node} of {held_nodes} {gpu_class.gpus_per_node}-GPU nodes: "
                    f"the last node's other GPUs are billed on-demand while it runs"
                )
            for capacity_type, price_field in _PRICE_FIELD.items():
                price: float | None = getattr(prices, price_field)
                if capacity_type is CapacityType.COMMITTED:
                    if held_gpus and price is None:
                        raise ValueError(f"committed {gpu_class.name} GPUs in {region.name} have no committed price")
                    if held_gpus == 0 and not priced_commitments:
                        continue
                if price is None:
                    continue
                committed = capacity_type is CapacityType.COMMITTED
                offers.append(
                    Offer(
                        region=region.name,
                        gpu_class=gpu_class.name,
                        capacity_type=capacity_type,
                        gpus_per_node=gpu_class.gpus_per_node,
                        replicas_per_node=gpu_class.gpus_per_node // per_replica,
                        dollars_per_gpu_hour=price,
                        tokens_per_second_per_replica=gpu_class.tokens_per_second_per_replica
                        or pool_spec.model_server.tokens_per_second_per_replica,
                        committed_nodes=held_nodes if committed else 0,
                        committed_gpus=held_gpus if committed else None,
                        uncovered_dollars_per_gpu_hour=prices.on_demand if committed else 0.0,
                    )
                )
    return tuple(offers), unplaced, notes


def from_spec(
    pool_spec: spec.InferencePoolSpec,
    now: dt.datetime,
    demand: Mapping[str, tuple[float, ...]] | None = None,
    current_nodes: Mapping[OfferKey, int] | None = None,
    priced_commitments: bool = False,
) -> BlendProblem:
    """Build the planning problem for ``pool_spec`` starting at the hour containing ``now``.

    ``demand`` defaults to the declared daily profiles; ``current_nodes`` (what runs now) feeds
    the change penalty and the cap on node changes. ``priced_commitments`` lists a committed
    offer wherever a committed price is given, even with nothing held (the simulator's
    reserved-peak policy buys its own); commitment sizing does so anyway.
    """
    planning = pool_spec.planning
    policy = pool_spec.policy
    hours = forecast.hour_starts(now, planning.horizon_hours)
    size = planning.mode is spec.PlanningMode.SIZE_COMMITMENTS
    offers, unplaced, notes = _offers(pool_spec, size or priced_commitments)
    return BlendProblem(
        hours=hours,
        time_zones={r.name: r.time_zone for r in pool_spec.regions},
        demand=dict(demand) if demand is not None else forecast.declared_forecast(pool_spec, hours),
        offers=offers,
        routes=_routes(pool_spec),
        headroom=policy.headroom,
        max_spot_fraction=policy.max_spot_fraction,
        spot_loss_served_fraction=policy.spot_loss_served_fraction,
        min_replicas_per_region=policy.min_replicas_per_region,
        budget_dollars_per_hour=policy.budget_dollars_per_hour,
        max_node_changes_per_hour=policy.max_node_changes_per_hour,
        change_penalty_dollars_per_node=policy.change_penalty_dollars_per_node,
        current_nodes=dict(current_nodes or {}),
        size_commitments=size,
        solver=SolverSettings(planning.solver, planning.time_limit_seconds, planning.relative_gap),
        unplaced_commitment_dollars_per_hour=unplaced,
        notes=tuple(notes),
    )
