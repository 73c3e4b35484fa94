"""Checks a ``Plan`` against its ``BlendProblem``, independently of the solver.

It recomputes every constraint from the plan's allocations and flows and lists each violation
in words. Used by property tests, and before acting on a plan (decide, then validate, then act).
"""

from __future__ import annotations

from collections import defaultdict

from sunblend.api.spec import CapacityType
from sunblend.core.plan import Plan
from sunblend.core.problem import BlendProblem

TOLERANCE = 1e-4


def violations(problem: BlendProblem, plan: Plan, check_budget: bool = True) -> list[str]:
    """Every constraint ``plan`` breaks; empty when the plan is valid."""
    found: list[str] = []
    offers = {o.key: o for o in problem.offers}
    routed: dict[tuple[str, int], float] = defaultdict(float)
    served: dict[tuple[str, int], float] = defaultdict(float)
    for flow in plan.flows:
        if (flow.from_region, flow.to_region) not in problem.routes:
            found.append(f"hour {flow.hour}: {flow.from_region} routed to {flow.to_region} beyond the latency limit")
        routed[(flow.from_region, flow.hour)] += flow.tokens_per_second
        served[(flow.to_region, flow.hour)] += flow.tokens_per_second
    for t in range(problem.horizon):
        spend = 0.0
        moves = 0
        for region in problem.regions:
            demand = problem.demand[region][t]
            if abs(routed[(region, t)] - demand) > TOLERANCE * max(1.0, demand):
                found.append(f"hour {t}: {region} demand {demand:g} routed {routed[(region, t)]:g}")
            here = [a for a in plan.allocations_at(t) if a.region == region]
            for a in here:
                offer = offers.get((a.region, a.gpu_class, a.capacity_type))
                if offer is None:
                    found.append(f"hour {t}: {a.gpu_class} {a.capacity_type} is not offered in {region}")
                    continue
                if offer.max_nodes is not None and a.nodes > offer.max_nodes:
                    found.append(
                        f"hour {t}: {region} {a.gpu_class} {a.capacity_type} above its {offer.max_nodes} nodes"
                    )
                if a.nodes < 0 or a.gpus != a.nodes * offer.gpus_per_node:
                    found.append(f"hour {t}: {region} {a.gpu_class} node/GPU count mismatch")
                if (
                    a.capacity_type is CapacityType.COMMITTED
                    and not problem.size_commitments
                    and a.nodes > offer.committed_nodes
                ):
                    found.append(
                        f"hour {t}: {region} uses {a.nodes} committed {a.gpu_class} nodes"
                        f" but holds {offer.committed_nodes}"
                    )
                if a.capacity_type is not CapacityType.COMMITTED:
                    spend += a.nodes * offer.dollars_per_node_hour
            throughput = {
                a: offers[(a.region, a.gpu_class, a.capacity_type)].tokens_per_second_per_replica
                for a in here
                if (a.region, a.gpu_class, a.capacity_type) in offers
            }
            capacity = sum(a.replicas * throughput.get(a, 0.0) for a in here)
            need = (1 + problem.headroom) * served[(region, t)]
            if capacity + TOLERANCE < need - TOLERANCE * need:
                found.append(f"hour {t}: {region} capacity {capacity:g} below demand with headroom {need:g}")
            if problem.offers_in(region) and sum(a.replicas for a in here) < problem.min_replicas_per_region:
                found.append(f"hour {t}: {region} below minReplicasPerRegion")
            gpus = sum(a.gpus for a in here)
            spot = sum(a.gpus for a in here if a.capacity_type is CapacityType.SPOT)
            if spot > problem.max_spot_fraction * gpus + TOLERANCE:
                found.append(f"hour {t}: {region} spot {spot} of {gpus} GPUs above maxSpotFraction")
            non_spot = sum(
                a.replicas * throughput.get(a, 0.0) for a in here if a.capacity_type is not CapacityType.SPOT
            )
            if non_spot + TOLERANCE < (problem.spot_loss_served_fraction * served[(region, t)] * (1 - TOLERANCE)):
                found.append(f"hour {t}: {region} non-spot capacity below spotLossServedFraction")
            now = {(a.gpu_class, a.capacity_type): a.nodes for a in here}
            if t > 0:
                before = {
                    (a.gpu_class, a.capacity_type): a.nodes for a in plan.allocations_at(t - 1) if a.region == region
                }
                moves += sum(abs(now.get(k, 0) - before.get(k, 0)) for k in set(before) | set(now))
            elif problem.current_nodes:  # the first hour against what runs now, offer by offer (core.changes)
                moves += sum(
                    abs(now.get((o.gpu_class, o.capacity_type), 0) - problem.current_nodes.get(o.key, 0))
                    for o in problem.offers_in(region)
                )
        budget = problem.budget_dollars_per_hour
        committed = plan.hour_costs[t].committed_dollars if plan.hour_costs else 0.0
        if check_budget and budget is not None and spend + committed > budget + TOLERANCE:
            found.append(f"hour {t}: cost {spend + committed:.2f} above budget {budget:g}")
        cap = problem.max_node_changes_per_hour
        if cap is not None and (t > 0 or problem.current_nodes) and moves > cap:
            found.append(f"hour {t}: {moves} node changes above maxNodeChangesPerHour {cap}")
    return found
