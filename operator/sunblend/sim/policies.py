"""Capacity policies replayed by the simulator: five baselines and sunblend itself.

Each policy sees only the past (``Observation``) and returns node targets. Each baseline follows a
documented behaviour of the tool it stands for, and a unit test (tests/unit/sim/test_baselines.py)
shows that behaviour on a tiny trace:
- ``on-demand``: Kubernetes HPA-style reactive autoscaling, all on-demand, with the HPA's
  default 5-minute scale-down stabilisation window (kubernetes.io, "Horizontal Pod Autoscaling").
- ``static-blend``: an AWS Auto Scaling MixedInstancesPolicy: OnDemandBaseCapacity, then
  OnDemandPercentageAboveBaseCapacity on-demand and the rest spot; spot that cannot be had is
  retried as spot, not replaced (AWS EC2 Auto Scaling user guide, "instances distribution").
- ``reserved-peak``: reserve for the declared peak of every region and nothing else.
- ``spot-fallback``: Karpenter's capacity-type fallback (``sim.karpenter``).
- ``spothedge``: SkyServe's SpotHedge as SkyPilot implements it (``sim.spothedge``).
- ``sunblend``: the operator's own decision engine (``core.policy``): the forecast and the MILP
  plan every hour, and the reactive corrections between hours, as Command values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, policy
from sunblend.core.problem import BlendProblem, OfferKey
from sunblend.sim import reactive
from sunblend.sim.engine import Observation, Policy, apply_commands
from sunblend.sim.karpenter import SpotFallback
from sunblend.sim.spothedge import SpotHedge


class PolicyError(Exception):
    """A policy cannot run on this pool (e.g. it needs a price the pool does not give)."""


class OnDemandAutoscaler(reactive.Reactive):
    """All on-demand, sized from recent demand like the HPA, scaled down after the 5-minute window."""

    name = "on-demand"

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        targets = {}
        for region in self.problem.regions:
            offer = reactive.cheapest(self.problem, region, CapacityType.ON_DEMAND, observation.prices)
            if offer is not None:
                targets[offer.key] = self.problem.nodes_needed(offer, self.stable_demand(observation, region))
        return targets


class StaticBlend(reactive.Reactive):
    """A MixedInstancesPolicy: base and percentage on-demand, the rest spot; spot retried as spot."""

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
            od = reactive.cheapest(self.problem, region, CapacityType.ON_DEMAND, observation.prices)
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
            total = self.problem.nodes_needed(od, self.stable_demand(observation, region))
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
            offer = min(offers, key=lambda o: reactive.per_token(o, {}))
            self._held[(region.name, offer.gpu_class)] = blend_problem.nodes_needed(
                offer, region.demand.peak_tokens_per_second
            )

    def commitments(self, blend_problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        return self._held

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        return {(r, g, CapacityType.COMMITTED): n for (r, g), n in self._held.items()}


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
        """The engine's view of a simulator step: demand up to the previous step, nodes, notices.

        Every spot node lost this step is a notice: preempted, or refused at launch for
        insufficient capacity (``refused``: the engine's ``launch_errors``)."""
        demand = (
            {r: observation.history.at(r, observation.step - 1) for r in self.problem.regions}
            if observation.step > 0
            else {}
        )
        notices = tuple(
            policy.Notice(
                f"{observation.step}/{key[0]}/{key[1]}/{key[2].value}/{i}",
                key,
                refused=i < observation.launch_errors.get(key, 0),
            )
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
