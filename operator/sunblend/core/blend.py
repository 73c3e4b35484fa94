"""The blend planner: the cheapest mix of committed, spot and on-demand nodes per region and hour.

``plan`` validates the problem, then solves it within ``planning.timeLimitSeconds`` of wall-clock
time, all of it (building, solving, explaining) counted. When nothing couples the hours (no change
penalty, no cap on node changes, no commitment sizing) each hour is its own MILP
(``core.model``), and hours with identical inputs share one solve. Otherwise ``core.coupled``
plans the horizon from plans anyone could write down and improves them. If the solver fails, the
greedy fallback (``core.greedy``) plans, and says which constraint it breaks. Callers: the CLI, the
operator, the simulator.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from sunblend.core import assemble, coupled, greedy, hourly
from sunblend.core.changes import penalty_dollars
from sunblend.core.deadline import Deadline
from sunblend.core.model import ZERO, NodeCounts, PlanningError, build, solve
from sunblend.core.plan import Marginal, Plan, SolveStatus
from sunblend.core.problem import BlendProblem

# Share of the time limit kept back for the work after the solves (duals, assembling the plan).
RESERVE = 0.1


def validate(problem: BlendProblem) -> list[str]:
    """Reasons no plan can exist, found without solving (unreachable demand, no GPUs at all)."""
    reasons = []
    offered = {o.region for o in problem.offers}
    for user in problem.regions:
        servers = [r for r in problem.serving_regions(user) if r in offered]
        peak = max(problem.demand[user], default=0.0)
        if peak > 0 and not servers:
            reasons.append(
                f"demand in region {user} ({peak:g} tokens/s) cannot be served: no region within "
                f"the routing latency limit offers a GPU class"
            )
    if not problem.offers:
        reasons.append("no GPU class is offered in any region")
    return reasons


def coupled_hours(problem: BlendProblem) -> bool:
    """Whether the hours must be planned together."""
    return (
        problem.size_commitments
        or problem.max_node_changes_per_hour is not None
        or problem.change_penalty_dollars_per_node > 0
    )


def marginals(problem: BlendProblem, hours: tuple[int, ...], deadline: Deadline | None = None) -> tuple[Marginal, ...]:
    """Duals of the LP relaxation for the first hour: what one more unit of a limit is worth."""
    limit = problem.solver.time_limit_seconds if deadline is None else deadline.remaining()
    if limit <= 0:
        return ()
    model = build(problem, hours, relax_integers=True)
    if solve(problem, model, limit, relaxed=True) is not SolveStatus.OPTIMAL:
        return ()
    first = hours[0]
    found = []
    for name, (kind, hour, subject) in model.rows.items():
        if hour != first:
            continue
        pi = model.lp.get_constraint_by_name(name).pi or 0.0
        if kind == "budget":
            found.append(Marginal("budget", max(-pi, 0.0), "per extra $/h of budget"))
        elif kind == "committed":
            offer = problem.offers[int(subject)]
            found.append(
                Marginal(
                    f"committed {offer.gpu_class} in {offer.region}",
                    -pi / offer.gpus_per_node,
                    "saved per extra committed GPU",
                )
            )
        elif kind == "route":
            found.append(Marginal(f"demand in {subject}", pi * 1000, "per extra 1000 tokens/s"))
    return tuple(m for m in found if abs(m.dollars_per_hour) > ZERO or m.subject == "budget")


def objective_dollars(result: Plan, problem: BlendProblem, nodes: NodeCounts) -> float:
    """What the planner minimises, in dollars: the horizon's cost plus the change penalty."""
    return result.total_dollars + penalty_dollars(problem, nodes)


def _gap(objective: float, bound: float | None) -> float | None:
    if bound is None:
        return None
    if objective <= ZERO:
        return 0.0
    return max(objective - bound, 0.0) / objective


def plan(problem: BlendProblem, decompose: bool = True, clock: Callable[[], float] = time.perf_counter) -> Plan:
    """Plan ``problem`` within its time limit; fall back to greedy when the solver gives nothing.

    ``decompose=False`` solves the whole horizon as one MILP: the baseline the benchmark compares
    against. ``clock`` reads wall-clock seconds; the deadline is the time limit from the call.
    """
    deadline = Deadline(clock, problem.solver.time_limit_seconds * (1 - RESERVE))
    reasons = validate(problem)
    if reasons:
        return Plan(SolveStatus.INFEASIBLE, problem.solver.name.value, "; ".join(reasons), problem.hours)
    try:
        if not decompose:
            found = coupled.monolithic(problem, deadline)
        elif coupled_hours(problem):
            found = coupled.plan_horizon(problem, deadline)
        else:
            results = hourly.solve_hours(problem, deadline)
            found = coupled.Found.of_blocks(problem, results, coupled.lower_bound(problem, results.values()))
    except PlanningError as error:
        fallback = greedy.plan(problem)
        return _finish(_replace(fallback, message=f"{error}; {fallback.message}"), problem, deadline)
    if found.status is SolveStatus.INFEASIBLE:
        return _finish(Plan(found.status, problem.solver.name.value, found.message, problem.hours), problem, deadline)
    if found.status is SolveStatus.ERROR or found.nodes is None:
        fallback = greedy.plan(problem)
        return _finish(
            _replace(fallback, message=f"the solver found no plan in time; {fallback.message}"), problem, deadline
        )
    assembled = assemble.plan_of(
        problem, found.status, problem.solver.name.value, found.nodes, found.routed, found.committed, found.message
    )
    objective = objective_dollars(assembled, problem, found.nodes)
    gap = _gap(objective, found.bound)
    status = found.status
    if status is SolveStatus.FEASIBLE and gap is not None and gap <= problem.solver.relative_gap + 1e-6:
        status = SolveStatus.OPTIMAL  # proven within the pool's relative gap by the bound
    advice_saves = None
    if problem.size_commitments and found.held_only_dollars is not None:
        advice_saves = found.held_only_dollars - objective
    return _finish(
        _replace(
            assembled,
            status=status,
            binding=found.binding,
            marginals=marginals(problem, (0,), deadline),
            mip_gap=gap if gap is not None else found.gap,
            lower_bound_dollars=found.bound,
            savings_from_sizing_dollars=advice_saves,
        ),
        problem,
        deadline,
    )


def _finish(result: Plan, problem: BlendProblem, deadline: Deadline) -> Plan:
    notes = tuple(dict.fromkeys((*result.notes, *problem.notes)))
    return _replace(result, notes=notes, solve_seconds=deadline.elapsed())


def _replace(result: Plan, **changes: object) -> Plan:
    return dataclasses.replace(result, **changes)  # type: ignore[arg-type]
