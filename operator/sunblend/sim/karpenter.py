"""``spot-fallback``: Karpenter's capacity-type fallback from spot to on-demand, as Karpenter does it.

What it follows (aws/karpenter-provider-aws and sigs.k8s.io/karpenter):
- Pods are sized from demand like the HPA (``reactive.Reactive``, the pool's headroom as the
  HPA's target utilisation); Karpenter launches nodes for the pods nothing covers, on the
  cheapest offering it may launch. Spot is cheaper, so it comes first; nodes still launching
  count as coverage (their pods are nominated to them).
- A launch refused with an insufficient-capacity error marks that offering (capacity type,
  instance type, zone) unavailable in the unavailable-offerings cache for
  ``UnavailableOfferingsTTL``, 3 minutes (pkg/cache/cache.go; the cache is
  pkg/cache/unavailableofferings.go), and the pods are launched at once on the next cheapest
  offering still available, on-demand included. Here the error comes back within one step
  (``engine.Observation.launch_errors``) and the fallback is launched in that step.
- A spot interruption warning also marks the offering unavailable
  (pkg/controllers/interruption/controller.go), and the interrupted node's pods get a
  replacement at the warning, not at the end of the notice.
- When the TTL runs out the cheaper offering is tried again. Consolidation then replaces the
  dearer nodes and deletes surplus ones, only once the replacements are running (make before
  break: a replacement must be initialized before a node is disrupted).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core.problem import BlendProblem, OfferKey
from sunblend.sim import reactive
from sunblend.sim.engine import Observation

UNAVAILABLE_OFFERINGS_TTL = dt.timedelta(minutes=3)


class SpotFallback(reactive.Reactive):
    """Spot first; an insufficient-capacity error or an interruption skips spot for the cache TTL."""

    name = "spot-fallback"

    def __init__(
        self,
        pool: spec.InferencePoolSpec,
        blend_problem: BlendProblem,
        unavailable_for: dt.timedelta = UNAVAILABLE_OFFERINGS_TTL,
    ) -> None:
        super().__init__(pool, blend_problem)
        self.unavailable_for = unavailable_for
        self.unavailable_until: dict[OfferKey, dt.datetime] = {}  # the unavailable-offerings cache

    def available(self, key: OfferKey, now: dt.datetime) -> bool:
        """Whether ``key`` is out of the unavailable-offerings cache at ``now``."""
        until = self.unavailable_until.get(key)
        return until is None or now >= until

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        # Refused launches (launch_errors) and interruptions are both in lost_spot.
        for key, nodes in observation.lost_spot.items():
            if nodes > 0:
                self.unavailable_until[key] = observation.now + self.unavailable_for
        targets: dict[OfferKey, int] = {}
        for region in self.problem.regions:
            targets.update(self._region(observation, region))
        return targets

    def _region(self, observation: Observation, region: str) -> dict[OfferKey, int]:
        """Walk the region's offerings from the cheapest: launch on the first one available, keep
        the others' nodes only while what is running on cheaper ones does not cover the demand."""
        need = self.stable_demand(observation, region)
        offers = sorted(
            (o for o in self.problem.offers_in(region) if o.capacity_type is not CapacityType.COMMITTED),
            key=lambda o: reactive.per_token(o, observation.prices),
        )
        if not offers:
            return {}
        required = self.problem.nodes_needed(offers[0], need) * offers[0].tokens_per_second_per_node
        targets: dict[OfferKey, int] = {}
        launched = False
        ready_before = 0.0  # tokens/s running on the cheaper offerings kept
        kept_before = 0.0  # tokens/s running or launching on the cheaper offerings kept
        for offer in offers:
            per_node = offer.tokens_per_second_per_node
            running = observation.running.get(offer.key, 0)
            alive = running + observation.booting.get(offer.key, 0)
            if not launched and self.available(offer.key, observation.now):
                nodes = max(0, math.ceil((required - kept_before) / per_node - 1e-9))
                launched = True
            else:
                nodes = min(alive, max(0, math.ceil((required - ready_before) / per_node - 1e-9)))
            targets[offer.key] = nodes
            ready_before += min(nodes, running) * per_node
            kept_before += nodes * per_node
        return targets
