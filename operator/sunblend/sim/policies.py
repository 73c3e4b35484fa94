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
- ``sunblend``: the forecast (``core.forecast``) and the MILP plan (``core.blend``) every hour,
  the same code the operator runs, plus a reactive on-demand correction between hours.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Mapping

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import blend, forecast
from sunblend.core.problem import BlendProblem, Offer, OfferKey
from sunblend.sim.engine import Observation, Policy

STABILIZATION_STEPS = 5
RECENT_STEPS = 5
SPOT_BACKOFF_STEPS = 10
SPOT_MEMORY_STEPS = 720  # after losing spot, sunblend plans as if it stays this scarce for 12 hours


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
    """sunblend: forecast and plan every hour with the operator's code, correct reactively between."""

    name = "sunblend"

    def __init__(
        self,
        pool: spec.InferencePoolSpec,
        blend_problem: BlendProblem,
        plan_hours: int = 24,
        lead: dt.timedelta = dt.timedelta(minutes=8),
    ) -> None:
        self.pool = pool
        self.problem = blend_problem
        self.plan_hours = plan_hours
        self.lead = lead  # plan the next hour this early, so its nodes have booted when it starts
        self._next: tuple[dt.datetime, dict[OfferKey, int], dict[str, float], int] | None = None
        self.offers = {o.key: o for o in blend_problem.offers}
        self.profiles = {r.name: forecast.HourOfWeekProfile(r.time_zone) for r in pool.regions}
        self.correction = dict.fromkeys(blend_problem.regions, 1.0)
        self._hour_peaks: dict[str, float] = defaultdict(float)
        self._hour_steps = 0
        self._forecast_now: dict[str, float] = {}
        self._planned: dict[OfferKey, int] = {}
        self._replacement: dict[OfferKey, int] = defaultdict(int)  # on-demand standing in for lost spot
        self._surge: dict[OfferKey, int] = defaultdict(int)  # on-demand for demand above the forecast
        self._hour: dt.datetime | None = None
        # Spot seen scarce: (nodes obtainable, believed until step, learned at step).
        self._spot_cap: dict[OfferKey, tuple[int, int, int]] = {}

    def commitments(self, blend_problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        return {(o.region, o.gpu_class): o.committed_nodes for o in blend_problem.offers if o.committed_nodes}

    def _learn(self, observation: Observation) -> None:
        """Track each hour's peak demand: capacity is planned for the busiest part of the hour."""
        if observation.step == 0:
            return
        for region in self.problem.regions:
            seen = observation.history.at(region, observation.step - 1)
            self._hour_peaks[region] = max(self._hour_peaks[region], seen)
        self._hour_steps += 1

    def _close_hour(self, hour_start: dt.datetime) -> None:
        if not self._hour_steps:
            return
        for region in self.problem.regions:
            actual = self._hour_peaks[region]
            self.profiles[region].add(hour_start, actual)
            if region in self._forecast_now:
                self.correction[region] = forecast.update_correction(
                    self.correction[region], actual, self._forecast_now[region]
                )
        self._hour_peaks.clear()
        self._hour_steps = 0

    def _plan(self, observation: Observation, start: dt.datetime) -> tuple[dict[OfferKey, int], dict[str, float]]:
        """This policy's targets for the hour starting at ``start``, and the forecast they serve."""
        hours = forecast.hour_starts(start, self.plan_hours)
        demand = {
            r.name: forecast.regional_forecast(r, hours, self.profiles[r.name], self.correction[r.name], full_at=2)
            for r in self.pool.regions
        }
        offers = []
        for o in self.problem.offers:
            cap = self._spot_cap.get(o.key)
            offers.append(
                dataclasses.replace(
                    o,
                    dollars_per_gpu_hour=observation.prices.get(o.key, o.dollars_per_gpu_hour),
                    max_nodes=cap[0] if cap and cap[1] > observation.step else None,
                )
            )
        current = {k: observation.running.get(k, 0) + observation.booting.get(k, 0) for k in self.offers}
        step_problem = dataclasses.replace(
            self.problem, hours=hours, demand=demand, offers=tuple(offers), current_nodes=current
        )
        result = blend.plan(step_problem)
        planned = dict(self._planned)
        if result.has_solution:
            planned = {(a.region, a.gpu_class, a.capacity_type): a.nodes for a in result.allocations_at(0)}
        return planned, {r: values[0] for r, values in demand.items()}

    def _replace_lost_spot(self, observation: Observation) -> None:
        for key, lost in observation.lost_spot.items():
            if not lost:
                continue
            running = observation.running.get(key, 0)
            self._spot_cap[key] = (running, observation.step + SPOT_MEMORY_STEPS, observation.step)
            self._planned[key] = min(self._planned.get(key, 0), running + observation.booting.get(key, 0))
            od = _cheapest(self.problem, key[0], CapacityType.ON_DEMAND, observation.prices)
            if od is not None:
                tokens = lost * self.offers[key].tokens_per_second_per_node
                self._replacement[od.key] += math.ceil(tokens / od.tokens_per_second_per_node - 1e-9)

    def _cover_surges(self, observation: Observation, targets: Mapping[OfferKey, int]) -> None:
        """Between plans: if recent demand (with headroom) outgrows the targets, add on-demand now.

        Demand is routed as the engine routes it (each region first, then regions allowed to
        serve it), so a plan that serves one region from another is not second-guessed; what
        stays unmet gets on-demand in its own region, kept until the next plan.
        """
        if observation.step == 0:
            return
        headroom = 1 + self.problem.headroom
        capacity: dict[str, float] = defaultdict(float)
        for key, nodes in targets.items():
            capacity[key[0]] += nodes * self.offers[key].tokens_per_second_per_node
        wanted = {r: headroom * _seen_demand(observation, r, lambda _: 0.0) for r in self.problem.regions}
        served = {r: min(wanted[r], capacity[r]) for r in wanted}
        spare = {r: capacity[r] - served[r] for r in wanted}
        for user in self.problem.regions:
            for server in self.problem.serving_regions(user):
                moved = min(wanted[user] - served[user], spare[server])
                if moved > 0:
                    served[user] += moved
                    spare[server] -= moved
            unmet = wanted[user] - served[user]
            od = _cheapest(self.problem, user, CapacityType.ON_DEMAND, observation.prices)
            if unmet > 1e-6 and od is not None:
                self._surge[od.key] += math.ceil(unmet / od.tokens_per_second_per_node - 1e-9)

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        self._learn(observation)
        hour = observation.now.replace(minute=0, second=0, microsecond=0)
        if hour != self._hour:
            if self._hour is not None:
                self._close_hour(self._hour)
            self._hour = hour
            spot_news = max((since for _, _, since in self._spot_cap.values()), default=-1)
            if self._next is not None and self._next[0] == hour and self._next[3] >= spot_news:
                _, self._planned, self._forecast_now, _ = self._next
            else:  # no plan made ahead, or spot was lost since: plan again with what is known now
                self._planned, self._forecast_now = self._plan(observation, hour)
            self._next = None
            self._replacement.clear()
            self._surge.clear()
        upcoming = hour + forecast.HOUR
        if self._next is None and observation.now >= upcoming - self.lead:
            planned, expected = self._plan(observation, upcoming)
            self._next = (upcoming, planned, expected, observation.step)
        self._replace_lost_spot(observation)
        targets: dict[OfferKey, int] = defaultdict(int)
        for extra in (self._planned, self._replacement, self._surge):
            for key, n in extra.items():
                targets[key] += n
        before = dict(self._surge)
        self._cover_surges(observation, targets)
        for key, n in self._surge.items():
            targets[key] += n - before.get(key, 0)
        if self._next is not None:  # boot the next hour's nodes ahead of it; keep this hour's
            for key, n in self._next[1].items():
                targets[key] = max(targets[key], n)
        return targets


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
