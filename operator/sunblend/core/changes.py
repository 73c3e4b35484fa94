"""Node changes between hours: what the change cap limits and the change penalty charges.

Shared by the planner (``core.blend``), its incumbents (``core.incumbent``) and the greedy
fallback (``core.greedy``), so that each counts a change the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from sunblend.core.problem import BlendProblem


def node_changes(problem: BlendProblem, nodes: Mapping[tuple[int, int], int], hour: int) -> int:
    """Nodes added plus removed going into ``hour`` (from the current nodes for hour 0, if known)."""
    total = 0
    for i, offer in enumerate(problem.offers):
        if hour == 0:
            if not problem.current_nodes:
                return 0
            before = problem.current_nodes.get(offer.key, 0)
        else:
            before = nodes.get((i, hour - 1), 0)
        total += abs(nodes.get((i, hour), 0) - before)
    return total


def penalty_dollars(problem: BlendProblem, nodes: Mapping[tuple[int, int], int]) -> float:
    """The change penalty over the horizon: dollars per node added or removed, times the changes."""
    if problem.change_penalty_dollars_per_node <= 0:
        return 0.0
    moves = sum(node_changes(problem, nodes, t) for t in range(problem.horizon))
    return problem.change_penalty_dollars_per_node * moves
