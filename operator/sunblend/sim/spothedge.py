"""``spothedge``: SkyServe's SpotHedge, as SkyPilot implements it.

Sources: Mao et al., "SkyServe: Serving AI Models across Regions and Clouds with Spot
Instances", EuroSys 2025; SkyPilot's ``sky/serve/autoscalers.py`` (``FallbackRequestRateAutoscaler``
with ``num_overprovision`` and ``dynamic_ondemand_fallback``) and ``sky/serve/spot_placer.py``
(``DynamicFallbackSpotPlacer``). Written from their described behaviour; no code is copied.

What it follows:
- **N_extra.** One small integer for the whole service (``num_overprovision``, 1 here as in the
  paper's artifact): the service keeps ``target + N_extra`` spot replicas. The target is the
  replicas that serve the demand seen (a request-rate autoscaler); no headroom is added under
  N_extra, which is SpotHedge's only hedge.
- **Placement.** Every spot replica is placed by the dynamic-fallback placer: among the zones it
  holds *active*, one not used by a replica of the service yet, else any active one; the
  cheapest of those. A zone turns *preempted* when a replica there is preempted or its launch
  fails, and *active* again when a launch there succeeds; when fewer than two zones are left
  active, every zone is made active again. Running replicas are never moved.
- **On-demand fallback.** ``min(target, target + N_extra - ready spot)`` on-demand replicas,
  counting ready spot in every region of the service; the cap means no on-demand ever stands in
  for the N_extra replicas. They go to the cheapest on-demand offer of the service.
- **Scale down.** Replicas not ready yet go first, then spread is kept (the zone holding most).

Mapping to the simulator: a replica is a node; a zone is a region's cheapest spot offer (the
trace gives spot per region); a service is the set of user regions allowed to be served by the
same regions, so a pool whose regions may all serve one another is one service with one N_extra,
and a pool whose latency limit splits it runs one SkyServe service per group of user regions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core.problem import BlendProblem, Offer, OfferKey
from sunblend.sim import reactive
from sunblend.sim.engine import Observation

N_EXTRA = 1


class ZonePlacer:
    """SkyPilot's dynamic-fallback spot placer over ``zones``: which are active, where to launch."""

    def __init__(self, zones: Sequence[OfferKey]) -> None:
        self.zones = tuple(zones)
        self.preempted: set[OfferKey] = set()

    def active(self) -> list[OfferKey]:
        """Zones a spot replica may be placed in now."""
        return [z for z in self.zones if z not in self.preempted]

    def set_preempted(self, zone: OfferKey) -> None:
        """A replica in ``zone`` was preempted or failed to launch; with under two zones left
        active, every zone is active again."""
        self.preempted.add(zone)
        if len(self.active()) < 2:
            self.preempted.clear()

    def set_active(self, zone: OfferKey) -> None:
        """A launch in ``zone`` succeeded."""
        self.preempted.discard(zone)

    def select(
        self, used: Mapping[OfferKey, int], prices: Mapping[OfferKey, float], offers: Mapping[OfferKey, Offer]
    ) -> OfferKey:
        """The zone for the next replica: an active zone not used yet if any, else any active zone;
        the cheapest of them (ties go to the earlier zone)."""
        active = self.active()
        candidates = [z for z in active if used.get(z, 0) == 0] or active
        return min(candidates, key=lambda z: reactive.per_token(offers[z], prices))


@dataclass
class Service:
    """One SkyServe service: the user regions it serves, its spot zones and its on-demand offers."""

    users: tuple[str, ...]
    placer: ZonePlacer
    on_demand: tuple[Offer, ...]
    placed: dict[OfferKey, int] = field(default_factory=dict)  # spot replicas launched and not lost


class SpotHedge(reactive.Reactive):
    """target + N_extra spot spread over active zones; on-demand for spot that is not ready."""

    name = "spothedge"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem, extra: int = N_EXTRA) -> None:
        super().__init__(pool, blend_problem)
        self.extra = extra
        self.offers = {o.key: o for o in blend_problem.offers}
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for region in blend_problem.regions:
            servers = tuple(r for r in blend_problem.regions if r in blend_problem.serving_regions(region))
            groups[servers].append(region)
        self.services: list[Service] = []
        for servers, users in groups.items():
            zones = [o.key for r in servers if (o := reactive.cheapest(blend_problem, r, CapacityType.SPOT, {}))]
            on_demand = tuple(
                o for r in servers if (o := reactive.cheapest(blend_problem, r, CapacityType.ON_DEMAND, {}))
            )
            self.services.append(Service(tuple(users), ZonePlacer(zones), on_demand))
        self._running_before: dict[OfferKey, int] = {}

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        demand = {r: self.stable_demand(observation, r) for r in self.problem.regions}
        self._observe_zones(observation)
        self._forget_lost(observation)
        placed_total: dict[OfferKey, int] = defaultdict(int)
        targets: dict[OfferKey, int] = defaultdict(int)
        wanted = {id(s): self._target(s, demand) for s in self.services}
        for service in self.services:
            self._scale_spot(service, wanted[id(service)] + self.extra, observation)
            for key, nodes in service.placed.items():
                placed_total[key] += nodes
        for service in self.services:
            target = wanted[id(service)]
            for key, nodes in service.placed.items():
                targets[key] += nodes
            ready = sum(
                observation.running.get(key, 0) * nodes / placed_total[key]
                for key, nodes in service.placed.items()
                if nodes
            )
            on_demand = min(target, max(0, target + self.extra - math.floor(ready + 1e-9)))
            if not service.placer.zones:
                on_demand = target  # no spot anywhere in the service
            if on_demand and service.on_demand:
                offer = min(service.on_demand, key=lambda o: reactive.per_token(o, observation.prices))
                targets[offer.key] += on_demand
        self._running_before = {k: n for k, n in observation.running.items() if k[2] is CapacityType.SPOT}
        return targets

    def _target(self, service: Service, demand: Mapping[str, float]) -> int:
        """Replicas (nodes) that serve the service's demand, no headroom; at least the minimum."""
        per_node = max(
            (self.offers[z].tokens_per_second_per_node for z in service.placer.zones),
            default=max((o.tokens_per_second_per_node for o in service.on_demand), default=1.0),
        )
        replicas_per_node = max((self.offers[z].replicas_per_node for z in service.placer.zones), default=1)
        for_demand = math.ceil(sum(demand[u] for u in service.users) / per_node - 1e-9)
        return max(for_demand, math.ceil(self.problem.min_replicas_per_region / max(1, replicas_per_node)))

    def _observe_zones(self, observation: Observation) -> None:
        """Preemptions and failed launches mark a zone preempted; a node come up marks it active."""
        for service in self.services:
            for zone in service.placer.zones:
                if observation.lost_spot.get(zone, 0) > 0:
                    service.placer.set_preempted(zone)
                elif observation.running.get(zone, 0) > self._running_before.get(zone, 0):
                    service.placer.set_active(zone)

    def _forget_lost(self, observation: Observation) -> None:
        """Replicas the cloud took back or refused leave the services that placed them."""
        for zone in {z for s in self.services for z in s.placer.zones}:
            alive = observation.running.get(zone, 0) + observation.booting.get(zone, 0)
            holders = [s for s in self.services if s.placed.get(zone, 0)]
            shortfall = sum(s.placed[zone] for s in holders) - alive
            while shortfall > 0 and holders:
                holder = max(holders, key=lambda s: s.placed[zone])
                holder.placed[zone] -= 1
                shortfall -= 1
                holders = [s for s in holders if s.placed[zone]]

    def _scale_spot(self, service: Service, wanted: int, observation: Observation) -> None:
        """Launch or remove spot replicas until the service holds ``wanted``."""
        have = sum(service.placed.values())
        while have < wanted and service.placer.zones:
            zone = service.placer.select(service.placed, observation.prices, self.offers)
            service.placed[zone] = service.placed.get(zone, 0) + 1
            have += 1
        while have > wanted:
            zone = max(
                (z for z, n in service.placed.items() if n),
                key=lambda z: (
                    observation.booting.get(z, 0) > 0,
                    service.placed[z],
                    reactive.per_token(self.offers[z], observation.prices),
                ),
            )
            service.placed[zone] -= 1
            have -= 1
