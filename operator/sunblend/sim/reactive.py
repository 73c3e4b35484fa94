"""What the reactive baselines share: demand seen recently, an HPA-like window, cheapest offers.

The baselines in ``sim.policies``, ``sim.karpenter`` and ``sim.spothedge`` size capacity from the
demand they have seen (never the future: ``Observation.history`` refuses it) and pick offers by
their price per token now. Nothing here decides capacity on its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import forecast
from sunblend.core.problem import BlendProblem, Offer, OfferKey
from sunblend.sim.engine import Observation

STABILIZATION_STEPS = 5  # the HPA's default 5-minute scale-down stabilisation window, in 1-minute steps
RECENT_STEPS = 5


def per_token(offer: Offer, prices: Mapping[OfferKey, float]) -> float:
    """Dollars per token-second of ``offer`` at ``prices`` (the spec's price where none is given)."""
    return prices.get(offer.key, offer.dollars_per_gpu_hour) * offer.gpus_per_node / offer.tokens_per_second_per_node


def cheapest(
    problem: BlendProblem, region: str, capacity_type: CapacityType, prices: Mapping[OfferKey, float]
) -> Offer | None:
    """The cheapest offer per token of ``capacity_type`` in ``region``, if any."""
    offers = [o for o in problem.offers_in(region) if o.capacity_type is capacity_type]
    return min(offers, key=lambda o: per_token(o, prices)) if offers else None


def seen_demand(observation: Observation, region: str, declared: Callable[[str], float]) -> float:
    """The recent peak of observed demand; the declared profile before anything is observed."""
    recent = observation.history.recent(region, RECENT_STEPS)
    return max(recent) if recent else declared(region)


def declared(pool: spec.InferencePoolSpec, observation: Observation) -> Callable[[str], float]:
    """The pool's declared demand profile at the observation's time, per region."""
    return lambda region: forecast.declared_demand(pool.region(region), observation.now)


class Reactive:
    """Base of the reactive baselines: size each region from recent demand, scale down slowly."""

    name = "reactive"

    def __init__(self, pool: spec.InferencePoolSpec, blend_problem: BlendProblem) -> None:
        self.pool = pool
        self.problem = blend_problem
        self._recommendations: dict[str, list[float]] = defaultdict(list)

    def commitments(self, blend_problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        """The reactive baselines hold no commitments."""
        return {}

    def stable_demand(self, observation: Observation, region: str) -> float:
        """The highest recent demand over the stabilisation window (call once per region per step)."""
        window = self._recommendations[region]
        window.append(seen_demand(observation, region, declared(self.pool, observation)))
        del window[:-STABILIZATION_STEPS]
        return max(window)
