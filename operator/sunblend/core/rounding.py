"""One hour's LP relaxation rounded to whole nodes and repaired: a plan in milliseconds, with a bound.

The LP relaxation's value is a proven lower bound on the hour's cost. Rounding its node counts
(spot down, everything else up, committed within what is held) and buying the cheapest
non-spot capacity for what rounding spot down left short keeps the hour's rows:
capacity, spot loss and minimum replicas only gain, and the spot share only falls. When the pool
is large (tens of nodes per region) the rounded plan is within a fraction of a percent of the
bound, and no branch and bound is needed; otherwise it seeds the MILP. The budget and the node
changes are not repaired: a rounded plan that breaks them is not returned. Called by ``core.blend``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sunblend.api.spec import CapacityType
from sunblend.core.changes import node_changes
from sunblend.core.model import BlockModel
from sunblend.core.problem import BlendProblem, Offer

ZERO = 1e-6


def _per_token(offer: Offer) -> float:
    return offer.dollars_per_node_hour / offer.tokens_per_second_per_node


def round_hour(problem: BlendProblem, model: BlockModel, t: int) -> dict[tuple[int, int], int] | None:
    """Whole node counts for hour ``t`` from a solved LP relaxation ``model``; None if they break a limit."""
    offers = problem.offers
    # With node changes priced or capped, round toward what runs now rather than up.
    toward = problem.current_nodes if t == 0 and problem.current_nodes and _coupled(problem) else None
    nodes: dict[tuple[int, int], int] = {}
    for (i, hour), variable in model.nodes.items():
        if hour != t:
            continue
        value = float(variable.varValue or 0.0)
        o = offers[i]
        low, high = math.floor(value + ZERO), math.ceil(value - ZERO)
        if toward is not None and o.capacity_type is not CapacityType.COMMITTED:
            now = toward.get(o.key, 0)
            count = low if abs(low - now) <= abs(high - now) else high
        elif o.capacity_type is CapacityType.SPOT:
            count = low
        elif o.capacity_type is CapacityType.COMMITTED:
            count = min(high, o.committed_nodes)
        else:
            count = high
        if o.max_nodes is not None:
            count = min(count, o.max_nodes)
        nodes[(i, t)] = count
    if toward is not None:
        _keep_spot_share(problem, nodes, t)
    served: dict[str, float] = {}
    for (_, server, hour), variable in model.routed.items():
        if hour == t:
            served[server] = served.get(server, 0.0) + float(variable.varValue or 0.0)
    for region in problem.regions:
        if not _repair(problem, region, served.get(region, 0.0), nodes, t):
            return None
    if not within_limits(problem, nodes, t):
        return None
    return nodes


def _coupled(problem: BlendProblem) -> bool:
    return problem.max_node_changes_per_hour is not None or problem.change_penalty_dollars_per_node > 0


def _keep_spot_share(problem: BlendProblem, nodes: dict[tuple[int, int], int], t: int) -> None:
    """Take spot nodes away, most expensive first, until each region keeps ``maxSpotFraction``."""
    f = problem.max_spot_fraction
    for region in problem.regions:
        in_region = [i for i, o in enumerate(problem.offers) if o.region == region]
        spot = [i for i in in_region if problem.offers[i].capacity_type is CapacityType.SPOT]
        spot.sort(key=lambda i: problem.offers[i].dollars_per_node_hour, reverse=True)
        for i in spot:
            while nodes[(i, t)] > 0:
                spot_gpus = sum(nodes[(j, t)] * problem.offers[j].gpus_per_node for j in spot)
                all_gpus = sum(nodes[(j, t)] * problem.offers[j].gpus_per_node for j in in_region)
                if spot_gpus <= f * all_gpus + ZERO:
                    break
                nodes[(i, t)] -= 1


def _repair(problem: BlendProblem, region: str, served: float, nodes: dict[tuple[int, int], int], t: int) -> bool:
    """Buy the cheapest on-demand capacity for what rounding left short in ``region``; False if none can be had."""
    in_region = [i for i, o in enumerate(problem.offers) if o.region == region]
    if not in_region:
        return True
    offers = problem.offers
    capacity = sum(nodes[(i, t)] * offers[i].tokens_per_second_per_node for i in in_region)
    replicas = sum(nodes[(i, t)] * offers[i].replicas_per_node for i in in_region)
    short = (1 + problem.headroom) * served - capacity
    replicas_short = problem.min_replicas_per_region - replicas
    if short <= ZERO and replicas_short <= 0:
        return True
    on_demand = [
        i for i in in_region if offers[i].capacity_type is CapacityType.ON_DEMAND and offers[i].max_nodes is None
    ]
    if not on_demand:
        return False

    def needed(i: int) -> int:
        o = offers[i]
        return max(
            math.ceil(max(short, 0.0) / o.tokens_per_second_per_node - ZERO),
            math.ceil(max(replicas_short, 0) / o.replicas_per_node),
        )

    # The class that fills the gap for least: small nodes fill a small gap, whatever their price per token.
    cheapest = min(on_demand, key=lambda i: (needed(i) * offers[i].dollars_per_node_hour, _per_token(offers[i])))
    nodes[(cheapest, t)] += needed(cheapest)
    return True


def within_limits(problem: BlendProblem, nodes: Mapping[tuple[int, int], int], t: int) -> bool:
    """Whether hour ``t``'s nodes keep the budget and, for the first hour, the cap on node changes."""
    budget = problem.budget_dollars_per_hour
    if budget is not None:
        spend = sum(
            n * problem.offers[i].dollars_per_node_hour
            for (i, _), n in nodes.items()
            if problem.offers[i].capacity_type is not CapacityType.COMMITTED
        )
        if spend + problem.constant_dollars_per_hour > budget + ZERO:
            return False
    cap = problem.max_node_changes_per_hour
    return not (cap is not None and t == 0 and node_changes(problem, nodes, 0) > cap)


def hour_dollars(problem: BlendProblem, nodes: Mapping[tuple[int, int], int]) -> float:
    """What the nodes cost at the margin (the block objective without the tie-break or the penalty)."""
    total = 0.0
    for (i, _), n in nodes.items():
        o = problem.offers[i]
        if o.capacity_type is not CapacityType.COMMITTED:
            total += n * o.dollars_per_node_hour
        elif o.partial_node_dollars_per_hour > 0 and n >= o.committed_nodes:
            total += o.partial_node_dollars_per_hour
    return total
