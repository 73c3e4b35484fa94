"""Turns node counts and routes into a ``Plan`` with costs per hour.

Shared by the MILP planner (``core.blend``) and its greedy fallback (``core.greedy``), so both
report costs the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from sunblend.api.spec import CapacityType
from sunblend.core.plan import Allocation, CommitmentAdvice, Flow, HourCost, Plan, SolveStatus
from sunblend.core.problem import BlendProblem

ZERO = 1e-6


def plan_of(
    problem: BlendProblem,
    status: SolveStatus,
    solver: str,
    nodes: Mapping[tuple[int, int], int],
    routed: Mapping[tuple[str, str, int], float],
    committed: Mapping[int, int] | None = None,
    message: str = "",
) -> Plan:
    """Turn node counts and routes into a ``Plan`` with costs per hour (shared with the greedy fallback)."""
    offers = problem.offers
    committed = committed or {}
    allocations = []
    for (i, t), n in sorted(nodes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if n <= 0:
            continue
        o = offers[i]
        allocations.append(
            Allocation(
                t,
                o.region,
                o.gpu_class,
                o.capacity_type,
                n,
                n * o.gpus_per_node,
                n * o.replicas_per_node,
                n * o.dollars_per_node_hour,
            )
        )
    held_dollars = sum(
        committed.get(i, o.committed_nodes) * o.dollars_per_node_hour
        for i, o in enumerate(offers)
        if o.capacity_type is CapacityType.COMMITTED
    )
    hour_costs = []
    for t, start in enumerate(problem.hours):
        spot = sum(a.dollars_per_hour for a in allocations if a.hour == t and a.capacity_type is CapacityType.SPOT)
        od = sum(a.dollars_per_hour for a in allocations if a.hour == t and a.capacity_type is CapacityType.ON_DEMAND)
        demand = sum(problem.demand[r][t] for r in problem.regions)
        hour_costs.append(HourCost(t, start, demand, held_dollars, spot, od, problem.all_on_demand_dollars(t)))
    flows = tuple(
        Flow(t, u, s, y)
        for (u, s, t), y in sorted(routed.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
        if y > ZERO
    )
    advice = tuple(
        CommitmentAdvice(
            offers[i].gpu_class,
            offers[i].region,
            offers[i].committed_nodes * offers[i].gpus_per_node,
            n * offers[i].gpus_per_node,
        )
        for i, n in sorted(committed.items())
    )
    return Plan(
        status=status,
        solver=solver,
        message=message,
        hours=problem.hours,
        allocations=tuple(allocations),
        flows=flows,
        hour_costs=tuple(hour_costs),
        commitment_advice=advice,
    )
