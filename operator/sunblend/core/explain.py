"""Plain-words explanations: why a pool has no plan, and what a binding constraint means.

``infeasible`` re-solves a block with one constraint group left out at a time (a relaxation);
the first group whose removal restores a plan is named, with the hour and the amount.
Called by ``core.blend``; the re-solve itself is passed in, so this module builds no models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sunblend.api.spec import CapacityType
from sunblend.core import forecast
from sunblend.core.plan import SolveStatus
from sunblend.core.problem import BlendProblem

_ROW_WORDS = {
    "capacity": "capacity in {} is fully used by demand plus headroom",
    "min_replicas": "region {} is at minReplicasPerRegion",
    "spot_share": "spot in {} is at maxSpotFraction",
    "spot_loss": "non-spot capacity in {} just covers spotLossServedFraction",
    "committed": "every committed GPU of {} is in use",
    "budget": "the hourly budget is spent{}",
    "changes": "the cap on node changes is reached{}",
}


def _amount(dollars: float) -> str:
    return f"{dollars:,.2f}".removesuffix(".00")


def describe_row(kind: str, subject: str) -> str:
    """A binding constraint in words."""
    return _ROW_WORDS.get(kind, kind + " {}").format(subject)


NodeCounts = Mapping[tuple[int, int], int]  # (offer index, hour) -> nodes
# Re-solves a block with some constraint groups left out; gives the status and the node counts.
Resolver = Callable[[BlendProblem, tuple[int, ...], tuple[str, ...]], tuple[SolveStatus, NodeCounts]]


def _busiest_zone(problem: BlendProblem, hour: int) -> str:
    region = max(problem.regions, key=lambda r: problem.demand[r][hour])
    return problem.time_zones[region]


def _hourly_cost(problem: BlendProblem, nodes: NodeCounts, hour: int) -> float:
    spend = sum(
        n * problem.offers[i].dollars_per_node_hour
        for (i, t), n in nodes.items()
        if t == hour and problem.offers[i].capacity_type is not CapacityType.COMMITTED
    )
    return spend + problem.committed_sunk_dollars_per_hour


def infeasible(problem: BlendProblem, hours: tuple[int, ...], resolve: Resolver) -> str:
    """Name the constraint group that makes ``hours`` infeasible, in plain words."""
    for group in ("budget", "changes", "min_replicas", "spot_loss", "spot_share"):
        if not _present(problem, group):
            continue
        status, nodes = resolve(problem, hours, (group,))
        if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            continue
        if group == "budget":
            budget = problem.budget_dollars_per_hour or 0.0
            worst = max(hours, key=lambda t: _hourly_cost(problem, nodes, t))
            cost = _hourly_cost(problem, nodes, worst)
            return (
                f"budget {_amount(budget)} $/h is below the cheapest feasible plan, {cost:.2f} $/h, at "
                f"{forecast.local_label(problem.hours[worst], _busiest_zone(problem, worst))}"
            )
        if group == "changes":
            return (
                f"maxNodeChangesPerHour {problem.max_node_changes_per_hour} is too low to follow demand "
                f"from the current nodes within {len(hours)} hour(s)"
            )
        if group == "min_replicas":
            return f"minReplicasPerRegion {problem.min_replicas_per_region} cannot be met within the other limits"
        if group == "spot_loss":
            return (
                f"spotLossServedFraction {problem.spot_loss_served_fraction:g} cannot be met: "
                "not enough non-spot capacity can be had within the other limits"
            )
        return f"maxSpotFraction {problem.max_spot_fraction:g} cannot be met within the other limits"
    return "no plan meets all the limits together; relax the budget, spot policy or node-change cap"


def _present(problem: BlendProblem, group: str) -> bool:
    return {
        "budget": problem.budget_dollars_per_hour is not None,
        "changes": problem.max_node_changes_per_hour is not None,
        "min_replicas": problem.min_replicas_per_region > 0,
        "spot_loss": problem.spot_loss_served_fraction > 0,
        "spot_share": problem.max_spot_fraction < 1,
    }[group]
