"""Greedy fallback planner: used when the MILP solver fails or finds nothing in time.

Each region serves its own demand (or, with no GPUs of its own, the first region allowed to
serve it): committed nodes first, then spot within the spot policy, then on-demand, each time
the cheapest class per replica. It does not aim for the budget or the change cap; when it breaks
either, its status is Degraded and its message names the constraint and the hours.
Returns the same ``Plan`` type as ``core.blend``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from sunblend.api.spec import CapacityType
from sunblend.core import assemble, changes
from sunblend.core.plan import Plan, SolveStatus
from sunblend.core.problem import BlendProblem, Offer

SOLVER = "greedy"


def _per_token(offer: Offer) -> float:
    return offer.dollars_per_node_hour / offer.tokens_per_second_per_node


def _per_replica(offer: Offer) -> float:
    return offer.dollars_per_node_hour / offer.replicas_per_node


def _served(problem: BlendProblem, t: int) -> dict[tuple[str, str], float]:
    offered = {o.region for o in problem.offers}
    routed = {}
    for user in problem.regions:
        demand = problem.demand[user][t]
        if demand <= 0:
            continue
        server = user if user in offered else next(r for r in problem.serving_regions(user) if r in offered)
        routed[(user, server)] = demand
    return routed


def _room(offer: Offer, nodes: dict[Offer, int]) -> float:
    room: float = offer.committed_nodes if offer.capacity_type is CapacityType.COMMITTED else math.inf
    if offer.max_nodes is not None:
        room = min(room, offer.max_nodes)
    return room - nodes.get(offer, 0)


def _fill(offers: list[Offer], tokens_per_second: float, nodes: dict[Offer, int]) -> float:
    """Add nodes, cheapest per token first, until ``tokens_per_second`` more is covered; return what is left."""
    for offer in sorted(offers, key=_per_token):
        if tokens_per_second <= 1e-9:
            break
        count = int(min(math.ceil(tokens_per_second / offer.tokens_per_second_per_node - 1e-9), _room(offer, nodes)))
        if count > 0:
            nodes[offer] = nodes.get(offer, 0) + count
            tokens_per_second -= count * offer.tokens_per_second_per_node
    return max(tokens_per_second, 0.0)


def _capacity(nodes: dict[Offer, int]) -> float:
    return sum(n * o.tokens_per_second_per_node for o, n in nodes.items())


def _region_nodes(problem: BlendProblem, region: str, tokens_per_second: float) -> dict[Offer, int]:
    offers = list(problem.offers_in(region))
    by_type = {c: [o for o in offers if o.capacity_type is c] for c in CapacityType}
    need = (1 + problem.headroom) * tokens_per_second
    nodes: dict[Offer, int] = {}
    _fill(by_type[CapacityType.COMMITTED], need, nodes)
    _fill(
        by_type[CapacityType.ON_DEMAND], problem.spot_loss_served_fraction * tokens_per_second - _capacity(nodes), nodes
    )
    left = need - _capacity(nodes)
    f = problem.max_spot_fraction
    if left > 0 and f > 0 and by_type[CapacityType.SPOT]:
        cheapest = min(by_type[CapacityType.SPOT], key=_per_token)
        non_spot_gpus = sum(n * o.gpus_per_node for o, n in nodes.items())
        allowed = math.inf if f >= 1 else math.floor(f / (1 - f) * non_spot_gpus + 1e-9) // cheapest.gpus_per_node
        allowed = min(allowed, _room(cheapest, nodes))
        count = int(min(math.ceil(left / cheapest.tokens_per_second_per_node - 1e-9), allowed))
        if count > 0:
            nodes[cheapest] = count
            left -= count * cheapest.tokens_per_second_per_node
    _fill(by_type[CapacityType.ON_DEMAND], left, nodes)
    short = problem.min_replicas_per_region - sum(n * o.replicas_per_node for o, n in nodes.items())
    if short > 0 and by_type[CapacityType.ON_DEMAND]:
        cheapest = min(by_type[CapacityType.ON_DEMAND], key=_per_replica)
        nodes[cheapest] = nodes.get(cheapest, 0) + math.ceil(short / cheapest.replicas_per_node)
    return nodes


def hour_plan(problem: BlendProblem, t: int) -> tuple[dict[tuple[int, int], int], dict[tuple[str, str, int], float]]:
    """Node counts and routes of hour ``t``: each region serving its own users where it can."""
    index = {o: i for i, o in enumerate(problem.offers)}
    nodes: dict[tuple[int, int], int] = {(i, t): 0 for i in range(len(problem.offers))}
    routed: dict[tuple[str, str, int], float] = {}
    served = _served(problem, t)
    for (user, server), demand in served.items():
        routed[(user, server, t)] = demand
    for region in problem.regions:
        load = sum(d for (_, server), d in served.items() if server == region)
        if not problem.offers_in(region):
            continue
        for offer, count in _region_nodes(problem, region, load).items():
            nodes[(index[offer], t)] = count
    return nodes, routed


def plan(problem: BlendProblem) -> Plan:
    """A feasible plan (budget and change cap aside) built without a solver."""
    nodes: dict[tuple[int, int], int] = {}
    routed: dict[tuple[str, str, int], float] = {}
    for t in range(problem.horizon):
        more_nodes, more_routed = hour_plan(problem, t)
        nodes.update(more_nodes)
        routed.update(more_routed)
    result = assemble.plan_of(problem, SolveStatus.FEASIBLE, SOLVER, nodes, routed)
    broken = broken_constraints(problem, result, nodes)
    if broken:
        return dataclasses.replace(
            result, status=SolveStatus.DEGRADED, message="greedy fallback plan; it breaks " + "; ".join(broken)
        )
    return dataclasses.replace(result, message="greedy fallback plan; it keeps every constraint")


def broken_constraints(problem: BlendProblem, result: Plan, nodes: Mapping[tuple[int, int], int]) -> list[str]:
    """The pool's hard constraints that a fallback plan breaks, in words (the greedy plan minds only some)."""
    broken = []
    budget = problem.budget_dollars_per_hour
    if budget is not None:
        over = [h for h in result.hour_costs if h.dollars > budget + 1e-6]
        if over:
            worst = max(h.dollars for h in over)
            broken.append(
                f"policy.budgetDollarsPerHour (${budget:,.2f}/h) in {len(over)} of {problem.horizon} hour(s), "
                f"up to ${worst:,.2f}/h"
            )
    cap = problem.max_node_changes_per_hour
    if cap is not None:
        over_cap = [t for t in range(problem.horizon) if changes.node_changes(problem, nodes, t) > cap]
        if over_cap:
            most = max(changes.node_changes(problem, nodes, t) for t in over_cap)
            broken.append(f"policy.maxNodeChangesPerHour ({cap}) in {len(over_cap)} hour(s), up to {most} node changes")
    return broken
