"""Plans hours one by one: each hour's MILP, or its LP relaxation rounded when that is close enough.

``solve_hours`` gives every hour a plan before the deadline (a first pass, each hour seeded with
its greedy plan), then spends what is left on the hours furthest from their bound. ``solve_hour``
first solves the hour's LP relaxation and rounds it (``core.rounding``); when the rounded plan
is within the pool's relative gap of the LP bound, that is the hour's plan, proven, with no
branch and bound. Used by ``core.blend`` (uncoupled pools) and ``core.coupled`` (the hourly
relaxation of a coupled horizon, and each hour re-planned from the one before).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

from sunblend.core import explain, greedy, rounding
from sunblend.core.changes import node_changes
from sunblend.core.deadline import SHORTEST_SOLVE_SECONDS, Deadline
from sunblend.core.model import CHANGES, RELAXABLE, BlockResult, NodeCounts, build, extract, solve
from sunblend.core.plan import SolveStatus
from sunblend.core.problem import BlendProblem


def _resolver(deadline: Deadline) -> explain.Resolver:
    def resolve(
        problem: BlendProblem, hours: tuple[int, ...], leave_out: tuple[str, ...]
    ) -> tuple[SolveStatus, NodeCounts]:
        if deadline.expired():
            return SolveStatus.ERROR, {}
        model = build(problem, hours, leave_out=leave_out)
        status = solve(problem, model, deadline.share(len(RELAXABLE)))
        return status, extract(problem, model, status).nodes

    return resolve


def solve_hours(
    problem: BlendProblem, deadline: Deadline, leave_out: Iterable[str] = ()
) -> dict[tuple[int, ...], BlockResult]:
    """Solve every hour on its own; hours with identical demand share one solve.

    Two passes share the time left: the first gives every hour an equal part of half of it, so
    that every hour has a plan before the deadline; the second re-solves the hours furthest from
    their bound, each seeded with its plan, until the deadline. An hour not planned in time is
    an error (the caller falls back); no solve starts after the deadline.
    """
    results: dict[tuple[int, ...], BlockResult] = {}
    solved: dict[tuple[float, ...], int] = {}
    skip = tuple(leave_out)
    distinct = len({tuple(problem.demand[r][t] for r in problem.regions) for t in range(problem.horizon)})
    pass_ends = deadline.elapsed() + deadline.remaining() * FIRST_PASS
    overhead = 0.0
    misses, rounds = 0, True
    for t in range(problem.horizon):
        signature = tuple(problem.demand[r][t] for r in problem.regions)
        if signature in solved and t != 0:  # hour 0 always gets its own solve: its binding rows are reported
            results[(t,)] = _shift(results[(solved[signature],)], solved[signature], t)
            continue
        if deadline.remaining() < SHORTEST_SOLVE_SECONDS:
            results[(t,)] = _unsolved(problem, t)
            solved.setdefault(signature, t)
            continue
        left = max(distinct - len(solved), 1)
        began = deadline.elapsed()
        limit = max((pass_ends - began) / left - overhead, SHORTEST_SOLVE_SECONDS)
        # Seeded with the greedy plan of the hour, so that even a short solve returns a plan.
        start, _ = greedy.hour_plan(problem, t)
        results[(t,)] = solve_hour(problem, t, skip, min(limit, deadline.remaining()), deadline, start, rounds)
        # Rounding that never proves an hour (a small pool: few nodes per region) costs an LP per hour.
        misses = 0 if results[(t,)].message == ROUNDED else misses + 1
        rounds = misses < ROUNDING_TRIES
        # What an hour costs beyond its solver time (building, rounding): kept out of the next limits.
        overhead = max(0.8 * overhead + 0.2 * (deadline.elapsed() - began - limit), 0.0)
        solved.setdefault(signature, t)
    _improve_hours(problem, deadline, skip, results, solved)
    return results


# An hour's plan that is its LP relaxation rounded; after this many hours in a row that rounding
# does not prove, the remaining hours go straight to the MILP.
ROUNDED = "rounded LP relaxation"
ROUNDING_TRIES = 3
# Share of the time left that the first pass over the hours may use.
FIRST_PASS = 0.5


def solve_hour(
    problem: BlendProblem,
    t: int,
    skip: tuple[str, ...],
    limit: float,
    deadline: Deadline,
    start: NodeCounts | None = None,
    rounds: bool = True,
) -> BlockResult:
    """Plan hour ``t`` within ``limit`` seconds: the LP relaxation rounded if proven close enough, else the MILP.

    The MILP starts from the cheaper of the rounded and the greedy plan; if it finds nothing in
    time, that plan is the hour's (Feasible, with the LP's bound). Hour 0 always gets the MILP:
    its binding rows are reported. ``start`` is unused when the LP gives a plan of its own.
    """
    if problem.size_commitments or not rounds:
        return _solve_hour(problem, t, skip, limit, deadline, start)
    relaxed = build(problem, (t,), leave_out=skip, relax_integers=True)
    status = solve(problem, relaxed, limit / 3, relaxed=True)
    if status is not SolveStatus.OPTIMAL or relaxed.objective is None:
        return _solve_hour(problem, t, skip, limit, deadline, start)
    penalised = CHANGES not in skip and t == 0
    candidates: list[tuple[float, NodeCounts, dict[tuple[str, str, int], float]]] = []
    lp_bound = relaxed.objective
    rounded = rounding.round_hour(problem, relaxed, t)
    tighter = _tighter_caps(problem, skip, t) if rounded is None else []
    for cap in tighter:
        # Rounding adds node changes: plan the LP under a lower cap to leave room for them.
        narrower = dataclasses.replace(problem, max_node_changes_per_hour=cap)
        relaxed = build(narrower, (t,), leave_out=skip, relax_integers=True)
        if solve(narrower, relaxed, limit / 6, relaxed=True) is not SolveStatus.OPTIMAL:
            break
        rounded = rounding.round_hour(problem, relaxed, t)
        if rounded is not None:
            break
    if rounded is not None:
        routes = {key: float(v.varValue or 0.0) for key, v in relaxed.routed.items()}
        candidates.append((_dollars(problem, rounded, penalised), rounded, routes))
    greedy_nodes, greedy_routes = greedy.hour_plan(problem, t)
    if rounding.within_limits(problem, greedy_nodes, t):
        candidates.append((_dollars(problem, greedy_nodes, penalised), greedy_nodes, greedy_routes))
    if not candidates:
        return _solve_hour(problem, t, skip, limit, deadline, start)
    dollars, nodes, routes = min(candidates, key=lambda c: c[0])
    bound = min(lp_bound, dollars)
    gap = 0.0 if dollars <= 0 else (dollars - bound) / dollars
    if t != 0 and gap <= problem.solver.relative_gap:
        return BlockResult(SolveStatus.OPTIMAL, nodes, routes, gap=gap, message=ROUNDED, bound=bound, objective=dollars)
    result = _solve_hour(problem, t, skip, max(limit * 2 / 3, SHORTEST_SOLVE_SECONDS), deadline, nodes)
    if result.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        if result.bound is not None and result.bound < bound:
            result = dataclasses.replace(result, bound=bound)
        return result
    if result.status is SolveStatus.INFEASIBLE:
        return result
    return BlockResult(SolveStatus.FEASIBLE, nodes, routes, gap=gap, bound=bound, objective=dollars)


def _tighter_caps(problem: BlendProblem, skip: tuple[str, ...], t: int) -> list[int]:
    cap = problem.max_node_changes_per_hour
    if cap is None or CHANGES in skip or t != 0 or not problem.current_nodes:
        return []
    return sorted({math.floor(cap * share) for share in (0.7, 0.4)} - {cap}, reverse=True)


def _dollars(problem: BlendProblem, nodes: NodeCounts, penalised: bool) -> float:
    dollars = rounding.hour_dollars(problem, nodes)
    if penalised:
        dollars += problem.change_penalty_dollars_per_node * node_changes(problem, nodes, 0)
    return dollars


def _unsolved(problem: BlendProblem, t: int) -> BlockResult:
    """An hour reached after the deadline: its greedy plan if that keeps the hour's limits, else an error."""
    nodes, routes = greedy.hour_plan(problem, t)
    if problem.size_commitments or not rounding.within_limits(problem, nodes, t):
        return BlockResult(SolveStatus.ERROR, message="planning time limit reached")
    return BlockResult(SolveStatus.FEASIBLE, nodes, routes, objective=rounding.hour_dollars(problem, nodes))


def _solve_hour(
    problem: BlendProblem,
    t: int,
    skip: tuple[str, ...],
    limit: float,
    deadline: Deadline,
    start: NodeCounts | None = None,
) -> BlockResult:
    model = build(problem, (t,), leave_out=skip)
    status = solve(problem, model, max(limit, 0.0), start=start)
    result = extract(problem, model, status)
    if status is SolveStatus.INFEASIBLE:
        result = BlockResult(status, message=explain.infeasible(problem, (t,), _resolver(deadline)))
    return result


def _improve_hours(
    problem: BlendProblem,
    deadline: Deadline,
    skip: tuple[str, ...],
    results: dict[tuple[int, ...], BlockResult],
    solved: Mapping[tuple[float, ...], int],
) -> None:
    """Re-solve the hours with the largest gap to their bound, seeded with their plans, until the deadline."""
    open_hours = [
        t for t in solved.values() if results[(t,)].status is SolveStatus.FEASIBLE and results[(t,)].bound is not None
    ]
    open_hours.sort(key=lambda t: _absolute_gap(results[(t,)]), reverse=True)
    for k, t in enumerate(open_hours):
        if deadline.remaining() < 0.05:
            break
        before = results[(t,)]
        again = _solve_hour(problem, t, skip, deadline.share(len(open_hours) - k), deadline, before.nodes)
        if again.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) and _cost(again) <= _cost(before):
            results[(t,)] = again
    for signature, source in solved.items():
        for t in range(problem.horizon):
            if t != source and tuple(problem.demand[r][t] for r in problem.regions) == signature and t != 0:
                results[(t,)] = _shift(results[(source,)], source, t)


def _cost(result: BlockResult) -> float:
    return result.objective if result.objective is not None else float("inf")


def _absolute_gap(result: BlockResult) -> float:
    if result.objective is None or result.bound is None:
        return 0.0
    return result.objective - result.bound


def _shift(result: BlockResult, source: int, target: int) -> BlockResult:
    return BlockResult(
        status=result.status,
        nodes={(i, target): n for (i, t), n in result.nodes.items() if t == source},
        routed={(u, s, target): y for (u, s, t), y in result.routed.items() if t == source},
        committed=result.committed,
        gap=result.gap,
        message=result.message,
        bound=result.bound,
        objective=result.objective,
    )
