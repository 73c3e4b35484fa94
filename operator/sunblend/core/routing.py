"""Traffic weights from the plan: for each user region, the regions serving it and their share.

The plan routes demand of users in one region to another within the latency limit
(``Plan.flows``). Here those flows become integer weights summing to 100 per user region, as a
Gateway API ``HTTPRoute`` (``actuate.routes``) and the pool's status carry them. Shares are
rounded by the largest-remainder method, so they always sum to exactly 100; a serving region
whose share rounds to 0 is left out. A user region with no demand served this hour serves itself
at 100. Pure: nothing here talks to the cluster.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from sunblend.core.plan import Plan

TOTAL = 100

Weights = dict[str, list[tuple[str, int]]]


def largest_remainder(shares: Mapping[str, float], total: int = TOTAL) -> list[tuple[str, int]]:
    """``shares`` (non-negative, not all zero) scaled to integers summing to ``total``.

    Each key gets the floor of its exact quota; the units left over go to the largest remainders,
    ties to the key first by name. Keys whose integer share is 0 are left out; the rest are
    sorted by name.
    """
    positive = {key: value for key, value in shares.items() if value > 0}
    whole = sum(positive.values())
    if whole <= 0:
        raise ValueError("no positive share to divide")
    quotas = {key: value * total / whole for key, value in positive.items()}
    floors = {key: math.floor(quota) for key, quota in quotas.items()}
    left = total - sum(floors.values())
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - floors[key]), key))
    for key in by_remainder[:left]:
        floors[key] += 1
    return sorted((key, share) for key, share in floors.items() if share > 0)


def weights(plan: Plan, hour: int = 0, regions: Iterable[str] = ()) -> Weights:
    """Per user region, the serving regions and their integer share of its traffic in ``hour``.

    The user regions are ``regions`` and every region named by the plan (in any hour's flows or
    allocations); each maps to ``[(serving_region, weight), ...]`` sorted by serving region, the
    weights summing to 100. A user region with no flow this hour (no demand, or no plan) serves
    itself: ``[(region, 100)]``. Raises ``ValueError`` for an hour outside a plan's horizon.
    """
    if plan.hours and not 0 <= hour < len(plan.hours):
        raise ValueError(f"hour {hour} is outside the plan's {len(plan.hours)} hours")
    served: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for flow in plan.flows:
        if flow.hour == hour and flow.tokens_per_second > 0:
            by_region = served[flow.from_region]
            by_region[flow.to_region] = by_region.get(flow.to_region, 0.0) + flow.tokens_per_second
    users = set(regions)
    users.update(f.from_region for f in plan.flows)
    users.update(f.to_region for f in plan.flows)
    users.update(a.region for a in plan.allocations)
    return {user: largest_remainder(served[user]) if user in served else [(user, TOTAL)] for user in sorted(users)}
