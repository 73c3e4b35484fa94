"""Capacity policies replayed by the simulator: five baselines and sunblend itself.

Each policy sees only the past (``Observation``) and returns node targets. Sources:
- ``on-demand``: Kubernetes HPA-style reactive autoscaling, all on-demand, with the HPA's
  default 5-minute scale-down stabilisation window (kubernetes.io, "Horizontal Pod Autoscaling").
- ``static-blend``: an AWS Auto Scaling MixedInstancesPolicy: OnDemandBaseCapacity, then
  OnDemandPercentageAboveBaseCapacity on-demand and the rest spot; spot that cannot be had is
  retried as spot, not replaced (AWS EC2 Auto Scaling user guide, "instances distribution").
- ``reserved-peak``: reserve for the declared peak of every region and nothing else.
- ``spot-fallback``: spot first, on-demand when spot cannot be had (Karpenter's capacity-type
  fallback: an unavailable offering is skipped for a while, then retried).
- ``spothedge``: SkyServe's SpotHedge (Mao et al., EuroSys 2025): over-provision spot, spread
  over the regions allowed to serve, with dynamic on-demand fallback for missing spot.
- ``sunblend``: the operator's own decision engine (``core.policy``): the forecast and the MILP
  plan every hour, and the reactive corrections between hours, as Command values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, forecast, policy
from sunblend.core.problem import BlendProblem, Offer, OfferKey
from sunblend.sim.engine import Observation, Policy, apply_commands

STABILIZATION_STEPS = 5
RECENT_STEPS = 5
SPOT_BACKOFF_STEPS = 10


class PolicyError(Exception):
    """A policy cannot run on this pool (e.g. it needs a price the pool does not give)."""


def _per_token(offer: Offer, prices: Mapping[OfferKey, float]) -> float:
    return prices.get(offer.key, offer.dollars_per_gpu_hour) * offer.gpus_per_node / offer.tokens_per_second_per_node


def _cheapest(
    problem: BlendProblem, region: str, capacity_type: CapacityType, prices: Mapping[OfferKey, float]
) -> Offer | None:
    offers = [o for o in problem.offers_in(region) if o.capacity_type is capacity_type]
    return min(offers, key=lambda o: _per_token(o, prices)) if offers else None


def _seen_demand(observation: Observation, region: str, declared: Callable[[str], float]) -> float:
    """The recent peak of observed demand; the declared profile before anything is observed."""
    recent = observation.history.recent(region, RECENT_STEPS)
    return max(recent) if recent else declared(region)


def _declared(pool: spec.InferencePoolSpec, observation: Observation) -> Callable[[str], float]:
    return lambda region: forecast.declared_demand(pool.region(region), observation.now)


class _Reactive:
    """Shared by the reactive baselines: size each region from recent demand, scale down slowly."""

    name = "reactive"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem) -> None:
        self.pool = pool
        self.problem = blend_problem
        self._recommendations: dict[str, list[float]] = defaultdict(list)

    def commitments(self, blend_problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        return {}

    def _stable_demand(self, observation: Observation, region: str) -> float:
        window = self._recommendations[region]
        window.append(_seen_demand(observation, region, _declared(self.pool, observation)))
        del window[:-STABILIZATION_STEPS]
        return max(window)


class OnDemandAutoscaler(_Reactive):
    """All on-demand, sized from recent demand like the HPA."""

    name = "on-demand"

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        targets = {}
        for region in self.problem.regions:
            offer = _cheapest(self.problem, region, CapacityType.ON_DEMAND, observation.prices)
            if offer is not None:
                targets[offer.key] = self.problem.nodes_needed(offer, self._stable_demand(observation, region))
        return targets


class StaticBlend(_Reactive):
    """A MixedInstancesPolicy: base and percentage on-demand, the rest spot; no fallback."""

    name = "static-blend"

    def __init__(
        self,
        pool: spec.InferencePoolSpec,
        blend_problem: BlendProblem,
        base_nodes: int = 1,
        on_demand_share: float = 0.3,
    ) -> None:
        super().__init__(pool, blend_problem)
        self.base_nodes = base_nodes
        self.on_demand_share = on_demand_share

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        targets = {}
        for region in self.problem.regions:
            od = _cheapest(self.problem, region, CapacityType.ON_DEMAND, observation.prices)
            if od is None:
                continue
            spot = next(
                (
                    o
                    for o in self.problem.offers_in(region)
                    if o.capacity_type is CapacityType.SPOT and o.gpu_class == od.gpu_class
                ),
                None,
            )
            total = self.problem.nodes_needed(od, self._stable_demand(observation, region))
            on_demand = min(total, self.base_nodes) + math.ceil(max(0, total - self.base_nodes) * self.on_demand_share)
            targets[od.key] = on_demand if spot is not None else total
            if spot is not None:
                targets[spot.key] = total - on_demand
        return targets


class ReservedPeak:
    """Commit for each region's declared peak; run the commitment and nothing else."""

    name = "reserved-peak"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem) -> None:
        self.pool = pool
        self.problem = blend_problem
        self._held: dict[tuple[str, str], int] = {}
        for region in pool.regions:
            offers = [o for o in blend_problem.offers_in(region.name) if o.capacity_type is CapacityType.COMMITTED]
            if not offers:
                raise PolicyError(f"reserved-peak needs a committed price for a GPU class in {region.name}")
            offer = min(offers, key=lambda o: _per_token(o, {}))
            self._held[(region.name, offer.gpu_class)] = blend_problem.nodes_needed(
                offer, region.demand.peak_tokens_per_second
            )

    def commitments(self, blend_problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        return self._held

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        return {(r, g, CapacityType.COMMITTED): n for (r, g), n in self._held.items()}


class SpotFallback(_Reactive):
    """Spot first; on-demand for what spot cannot give, and spot retried after a back-off."""

    name = "spot-fallback"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem) -> None:
        super().__init__(pool, blend_problem)
        self._spot_blocked_until: dict[str, int] = {}

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        targets: dict[OfferKey, int] = {}
        for region in self.problem.regions:
            spot = _cheapest(self.problem, region, CapacityType.SPOT, observation.prices)
            od = _cheapest(self.problem, region, CapacityType.ON_DEMAND, observation.prices)
            need = self._stable_demand(observation, region)
            if spot is not None and observation.lost_spot.get(spot.key):
                self._spot_blocked_until[region] = observation.step + SPOT_BACKOFF_STEPS
            blocked = observation.step < self._spot_blocked_until.get(region, -1)
            if spot is None or od is None:
                offer = spot or od
                if offer is not None:
                    targets[offer.key] = self.problem.nodes_needed(offer, need)
                continue
            wanted = self.problem.nodes_needed(spot, need)
            have = observation.running.get(spot.key, 0) + observation.booting.get(spot.key, 0)
            spot_nodes = min(wanted, have) if blocked else wanted
            targets[spot.key] = spot_nodes
            covered = spot_nodes * spot.tokens_per_second_per_node
            missing = max(0.0, (1 + self.problem.headroom) * need - covered)
            targets[od.key] = math.ceil(missing / od.tokens_per_second_per_node - 1e-9)
        return targets


class SpotHedge(_Reactive):
    """Over-provisioned spot spread over allowed regions, with dynamic on-demand fallback."""

    name = "spothedge"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem, extra_share: float = 0.25) -> None:
        super().__init__(pool, blend_problem)
        self.extra_share = extra_share

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        targets: dict[OfferKey, int] = defaultdict(int)
        for region in self.problem.regions:
            spot = _cheapest(self.problem, region, CapacityType.SPOT, observation.prices)
            od = _cheapest(self.problem, region, CapacityType.ON_DEMAND, observation.prices)
            need = self._stable_demand(observation, region)
            if spot is None:
                if od is not None:
                    targets[od.key] += self.problem.nodes_needed(od, need)
                continue
            wanted = self.problem.nodes_needed(spot, need)
            extra = math.ceil(wanted * self.extra_share)
            targets[spot.key] += wanted
            # Spread the over-provisioned spot over the other regions allowed to serve this one.
            others = [r for r in self.problem.serving_regions(region) if r != region]
            for i in range(extra):
                place = others[i % len(others)] if others else region
                hedge = _cheapest(self.problem, place, CapacityType.SPOT, observation.prices) or spot
                targets[hedge.key] += 1
            running = observation.running.get(spot.key, 0) * spot.tokens_per_second_per_node
            missing = max(0.0, (1 + self.problem.headroom) * need - running)
            if od is not None and missing > 0:
                targets[od.key] += math.ceil(missing / od.tokens_per_second_per_node - 1e-9)
        return targets


class Sunblend:
    """sunblend: the operator's decision engine (``core.policy``), step by step; a thin adapter.

    Each step turns the simulator's observation into the engine's, runs ``policy.decide`` and
    applies the node Commands it returns (``engine.apply_commands``). The slices follow their
    ScaleSlice commands at once; their ready replicas are those that fit on running nodes.
    """

    name = "sunblend"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem) -> None:
        self.pool = pool
        self.problem = blend_problem
        self.offers = {o.key: o for o in blend_problem.offers}
        self.state = policy.State()
        self.slices: dict[OfferKey, int] = {}
        self.decisions: list[policy.Decision] = []  # kept only when ``record`` is set (tests)
        self.record = False

    def commitments(self, blend_problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        return {(o.region, o.gpu_class): o.committed_nodes for o in blend_problem.offers if o.committed_nodes}

    def observe(self, observation: Observation) -> policy.Observation:
        """The engine's view of a simulator step: demand up to the previous step, nodes, notices."""
        demand = (
            {r: observation.history.at(r, observation.step - 1) for r in self.problem.regions}
            if observation.step > 0
            else {}
        )
        notices = tuple(
            policy.Notice(f"{observation.step}/{key[0]}/{key[1]}/{key[2].value}/{i}", key)
            for key, lost in sorted(observation.lost_spot.items())
            for i in range(lost)
        )
        ready_replicas = {
            k: min(n, observation.running.get(k, 0) * self.offers[k].replicas_per_node)
            for k, n in self.slices.items()
            if k in self.offers
        }
        return policy.Observation(
            now=observation.now,
            ready=dict(observation.running),
            booting={k: n for k, n in observation.booting.items() if n},
            replicas=dict(self.slices),
            ready_replicas=ready_replicas,
            demand=demand,
            notices=notices,
            prices=dict(observation.prices),
        )

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        decision = policy.decide(self.pool, self.problem, self.observe(observation), self.state)
        self.state = decision.state
        if self.record:
            self.decisions.append(decision)
        for command in decision.commands:
            if isinstance(command, commands.ScaleSlice):
                self.slices[command.offer] = command.replicas
        current = {k: observation.running.get(k, 0) + observation.booting.get(k, 0) for k in self.offers}
        return apply_commands(current, decision.commands)


POLICIES: dict[str, Callable[[spec.InferencePoolSpec, BlendProblem], Policy]] = {
    "on-demand": OnDemandAutoscaler,
    "static-blend": StaticBlend,
    "reserved-peak": ReservedPeak,
    "spot-fallback": SpotFallback,
    "spothedge": SpotHedge,
    "sunblend": Sunblend,
}


def make(name: str, pool: spec.InferencePoolSpec, blend_problem: BlendProblem) -> Policy:
    """The policy called ``name``."""
    try:
        return POLICIES[name](pool, blend_problem)
    except KeyError:
        raise PolicyError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}") from None
