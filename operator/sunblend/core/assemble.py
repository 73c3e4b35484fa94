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


def partial_node_dollars(
    problem: BlendProblem, nodes: Mapping[tuple[int, int], int], committed: Mapping[int, int], hour: int
) -> float:
    """On-demand cost, in ``hour``, of the uncovered GPUs of partially committed nodes that run."""
    total = 0.0
    for i, o in enumerate(problem.offers):
        partial = o.capacity_type is CapacityType.COMMITTED and i not in committed
        if partial and o.partial_node_dollars_per_hour > 0 and nodes.get((i, hour), 0) >= o.committed_nodes:
            total += o.partial_node_dollars_per_hour
    return total


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
    held_dollars = problem.unplaced_commitment_dollars_per_hour + sum(
        committed[i] * o.dollars_per_node_hour if i in committed else o.sunk_dollars_per_hour
        for i, o in enumerate(offers)
        if o.capacity_type is CapacityType.COMMITTED
    )
    hour_costs = []
    for t, start in enumerate(problem.hours):
        spot = sum(a.dollars_per_hour for a in allocations if a.hour == t and a.capacity_type is CapacityType.SPOT)
        od = sum(a.dollars_per_hour for a in allocations if a.hour == t and a.capacity_type is CapacityType.ON_DEMAND)
        od += partial_node_dollars(problem, nodes, committed, t)
        demand = sum(problem.demand[r][t] for r in problem.regions)
        load: dict[str, float] = {}
        for (_, server, hour), y in routed.items():
            if hour == t:
                load[server] = load.get(server, 0.0) + y
        baseline = problem.all_on_demand_dollars(t, load if load else None)
        hour_costs.append(HourCost(t, start, demand, held_dollars, spot, od, baseline))
    flows = tuple(
        Flow(t, u, s, y)
        for (u, s, t), y in sorted(routed.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
        if y > ZERO
    )
    advice = tuple(
        CommitmentAdvice(
            offers[i].gpu_class,
            offers[i].region,
            offers[i].held_gpus,
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
