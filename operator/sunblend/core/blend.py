"""The blend planner: a MILP over regions x GPU classes x capacity types x hours (PuLP + HiGHS).

Pipeline: ``validate`` -> ``build`` -> ``solve`` -> ``extract``, each its own function; ``plan``
runs it. When nothing couples the hours (no change penalty, no cap on node changes, no
commitment sizing) each hour is an independent block, and hours with identical inputs share
one solve; otherwise the whole horizon is one block. Callers: the CLI, the operator, the simulator.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pulp

from sunblend.api.spec import CapacityType, SolverName
from sunblend.core import assemble, explain, greedy, highs
from sunblend.core.plan import Marginal, Plan, SolveStatus
from sunblend.core.problem import BlendProblem

# Tie-break cost per node-hour: among equal-cost plans prefer fewer nodes.
NODE_EPSILON = 1e-4
ZERO = 1e-6

# Constraint groups; ``build`` can leave any of them out to explain an infeasible pool.
BUDGET = "budget"
CHANGES = "changes"
MIN_REPLICAS = "min_replicas"
SPOT_SHARE = "spot_share"
SPOT_LOSS = "spot_loss"
RELAXABLE = (BUDGET, CHANGES, MIN_REPLICAS, SPOT_LOSS, SPOT_SHARE)


@dataclass
class BlockModel:
    """One built MILP over some hours, with handles to its variables and rows."""

    hours: tuple[int, ...]
    lp: pulp.LpProblem
    nodes: dict[tuple[int, int], pulp.LpVariable] = field(default_factory=dict)  # (offer, hour)
    routed: dict[tuple[str, str, int], pulp.LpVariable] = field(default_factory=dict)  # (user, server, hour)
    committed: dict[int, pulp.LpVariable] = field(default_factory=dict)  # offer -> nodes to hold (sizing)
    rows: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # row name -> (kind, hour, subject)
    gap: float | None = None


@dataclass(frozen=True)
class BlockResult:
    """A block's solution: status, node counts, routed demand and, for hour 0, duals."""

    status: SolveStatus
    nodes: Mapping[tuple[int, int], int] = field(default_factory=dict)
    routed: Mapping[tuple[str, str, int], float] = field(default_factory=dict)
    committed: Mapping[int, int] = field(default_factory=dict)
    binding: tuple[str, ...] = ()
    gap: float | None = None
    message: str = ""


class PlanningError(Exception):
    """The solver failed in a way that is not the pool's fault."""


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


def coupled(problem: BlendProblem) -> bool:
    """Whether the hours must be solved together."""
    return (
        problem.size_commitments
        or problem.max_node_changes_per_hour is not None
        or problem.change_penalty_dollars_per_node > 0
    )


def blocks(problem: BlendProblem, together: bool) -> list[tuple[int, ...]]:
    """The hour blocks solved separately: one per hour, or the whole horizon ``together``."""
    if together:
        return [tuple(range(problem.horizon))]
    return [(t,) for t in range(problem.horizon)]


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


def _decomposable_anyway(problem: BlendProblem, results: Mapping[tuple[int, ...], BlockResult]) -> bool:
    """Whether per-hour optima already keep the node-change cap, and so are optimal for the coupled problem.

    With no change penalty and no commitment sizing, the per-hour problems are a relaxation of
    the coupled one (only the cap is dropped); a relaxed optimum that keeps the cap is optimal.
    """
    if problem.size_commitments or problem.change_penalty_dollars_per_node > 0:
        return False
    if any(r.status is not SolveStatus.OPTIMAL for r in results.values()):
        return False
    cap = problem.max_node_changes_per_hour
    nodes = {k: v for r in results.values() for k, v in r.nodes.items()}
    return cap is None or all(node_changes(problem, nodes, t) <= cap for t in range(problem.horizon))


def _row(model: BlockModel, constraint: pulp.LpConstraint, kind: str, hour: int, subject: str) -> None:
    """Add a row named deterministically by its kind, hour and a counter; remember what it means."""
    name = f"{kind}_{hour}_{len(model.rows)}"
    model.lp.addConstraint(constraint, name)
    model.rows[name] = (kind, hour, subject)


def build(
    problem: BlendProblem,
    hours: tuple[int, ...],
    leave_out: Iterable[str] = (),
    relax_integers: bool = False,
) -> BlockModel:
    """Build the MILP for ``hours``; ``leave_out`` drops constraint groups, ``relax_integers`` gives the LP."""
    skip = set(leave_out)
    category = pulp.LpContinuous if relax_integers else pulp.LpInteger
    model = BlockModel(hours=hours, lp=pulp.LpProblem("blend", pulp.LpMinimize))
    offers = problem.offers
    sizing = problem.size_commitments
    objective = pulp.LpAffineExpression()

    if sizing:
        for i, o in enumerate(offers):
            if o.capacity_type is CapacityType.COMMITTED:
                held = model.lp.add_variable(f"hold_{i}", lowBound=o.committed_nodes, cat=category)
                model.committed[i] = held
                objective.addterm(held, o.dollars_per_node_hour * len(hours))

    for t in hours:
        for i, o in enumerate(offers):
            x = model.lp.add_variable(f"x_{i}_{t}", lowBound=0, upBound=o.max_nodes, cat=category)
            model.nodes[(i, t)] = x
            marginal = 0.0 if o.capacity_type is CapacityType.COMMITTED else o.dollars_per_node_hour
            objective.addterm(x, marginal + NODE_EPSILON)
        for user in problem.regions:
            if problem.demand[user][t] <= 0:
                continue
            for server in problem.serving_regions(user):
                if problem.offers_in(server):
                    name = f"y_{problem.regions.index(user)}_{problem.regions.index(server)}_{t}"
                    model.routed[(user, server, t)] = model.lp.add_variable(name, lowBound=0)

    for t in hours:
        _hour_rows(problem, model, t, skip)

    if CHANGES not in skip and (
        problem.max_node_changes_per_hour is not None or problem.change_penalty_dollars_per_node > 0
    ):
        _change_rows(problem, model, objective)

    model.lp.setObjective(objective)
    return model


def _hour_rows(problem: BlendProblem, model: BlockModel, t: int, skip: set[str]) -> None:
    offers = problem.offers
    for user in problem.regions:
        demand = problem.demand[user][t]
        if demand <= 0:
            continue
        terms = [(v, 1.0) for (u, _, h), v in model.routed.items() if u == user and h == t]
        _row(model, pulp.LpAffineExpression(terms) == demand, "route", t, user)
    cost = pulp.LpAffineExpression()
    for region in problem.regions:
        in_region = [i for i, o in enumerate(offers) if o.region == region]
        if not in_region:
            continue
        served = [(v, 1.0) for (_, s, h), v in model.routed.items() if s == region and h == t]
        capacity = pulp.LpAffineExpression(
            [(model.nodes[(i, t)], offers[i].tokens_per_second_per_node) for i in in_region]
            + [(v, -(1 + problem.headroom) * c) for v, c in served]
        )
        _row(model, capacity >= 0, "capacity", t, region)
        if MIN_REPLICAS not in skip and problem.min_replicas_per_region > 0:
            replicas = pulp.LpAffineExpression([(model.nodes[(i, t)], offers[i].replicas_per_node) for i in in_region])
            _row(model, replicas >= problem.min_replicas_per_region, "min_replicas", t, region)
        spot = [i for i in in_region if offers[i].capacity_type is CapacityType.SPOT]
        if SPOT_SHARE not in skip and spot and problem.max_spot_fraction < 1:
            f = problem.max_spot_fraction
            share = pulp.LpAffineExpression(
                [(model.nodes[(i, t)], offers[i].gpus_per_node * ((1 - f) if i in spot else -f)) for i in in_region]
            )
            _row(model, share <= 0, "spot_share", t, region)
        if SPOT_LOSS not in skip and problem.spot_loss_served_fraction > 0 and served:
            s = problem.spot_loss_served_fraction
            survive = pulp.LpAffineExpression(
                [(model.nodes[(i, t)], offers[i].tokens_per_second_per_node) for i in in_region if i not in spot]
                + [(v, -s * c) for v, c in served]
            )
            _row(model, survive >= 0, "spot_loss", t, region)
        for i in in_region:
            o = offers[i]
            if o.capacity_type is CapacityType.COMMITTED:
                held = model.committed.get(i)
                if held is not None:
                    _row(model, model.nodes[(i, t)] - held <= 0, "committed", t, str(i))
                else:
                    _row(model, model.nodes[(i, t)] <= o.committed_nodes, "committed", t, str(i))
            else:
                cost.addterm(model.nodes[(i, t)], o.dollars_per_node_hour)
    if BUDGET not in skip and problem.budget_dollars_per_hour is not None:
        for i, held in model.committed.items():
            cost.addterm(held, offers[i].dollars_per_node_hour)
        sunk = 0.0 if model.committed else problem.committed_sunk_dollars_per_hour
        _row(model, cost <= problem.budget_dollars_per_hour - sunk, "budget", t, "")


def _change_rows(problem: BlendProblem, model: BlockModel, objective: pulp.LpAffineExpression) -> None:
    offers = problem.offers
    for t in model.hours:
        moves = pulp.LpAffineExpression()
        if t == model.hours[0] and not problem.current_nodes:
            continue  # nothing known of what runs now: the first hour is free to change
        for i, o in enumerate(offers):
            before: pulp.LpAffineExpression | float
            if t == model.hours[0]:
                before = float(problem.current_nodes.get(o.key, 0))
            else:
                before = pulp.LpAffineExpression(model.nodes[(i, t - 1)])
            change = model.lp.add_variable(f"d_{i}_{t}", lowBound=0)
            _row(model, change - model.nodes[(i, t)] + before >= 0, "change", t, o.region)
            _row(model, change + model.nodes[(i, t)] - before >= 0, "change", t, o.region)
            moves.addterm(change, 1.0)
            objective.addterm(change, problem.change_penalty_dollars_per_node)
        if problem.max_node_changes_per_hour is not None and len(moves) > 0:
            _row(model, moves <= problem.max_node_changes_per_hour, "changes", t, "")


def _cbc(problem: BlendProblem, time_limit: float) -> pulp.LpSolver:
    settings = problem.solver
    limit = max(time_limit, 0.05)
    # A system CBC (COIN_CMD) when there is one; PuLP's bundled CBC, deprecated, otherwise.
    cbc = pulp.COIN_CMD(msg=False, timeLimit=limit, gapRel=settings.relative_gap)
    if cbc.available():
        return cbc
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=settings.relative_gap)


def solve(problem: BlendProblem, model: BlockModel, time_limit: float, relaxed: bool = False) -> SolveStatus:
    """Run the solver on a built block and map its verdict to our status; records the MIP gap.

    HiGHS runs in-process (``core.highs``); CBC through PuLP, whose "Optimal" after a time
    limit is corrected by the solution status (``status_from``).
    """
    limit = max(time_limit, 0.05)
    if problem.solver.name is SolverName.HIGHS:
        try:
            status, model.gap = highs.solve(model.lp, model.rows, limit, problem.solver.relative_gap, relaxed)
        except (RuntimeError, ValueError) as error:
            raise PlanningError(f"HiGHS failed: {error}") from error
        return status
    try:
        model.lp.solve(_cbc(problem, limit))
    except pulp.PulpSolverError as error:
        raise PlanningError(f"solver failed: {error}") from error
    return status_from(model.lp.status, model.lp.sol_status)


def status_from(lp_status: int, sol_status: int) -> SolveStatus:
    """Our status from PuLP's problem status and solution status; the solution status wins."""
    if sol_status == pulp.LpSolutionOptimal:
        return SolveStatus.OPTIMAL
    if sol_status == pulp.LpSolutionIntegerFeasible:
        return SolveStatus.FEASIBLE
    if lp_status == pulp.LpStatusInfeasible or sol_status == pulp.LpSolutionInfeasible:
        return SolveStatus.INFEASIBLE
    return SolveStatus.ERROR


def extract(problem: BlendProblem, model: BlockModel, status: SolveStatus) -> BlockResult:
    """Read node counts and routes out of a solved block; name the binding rows of its first hour."""
    if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return BlockResult(status=status)
    nodes = {key: round(v.varValue or 0.0) for key, v in model.nodes.items()}
    routed = {key: float(v.varValue or 0.0) for key, v in model.routed.items()}
    committed = {i: round(v.varValue or 0.0) for i, v in model.committed.items()}
    first = model.hours[0]
    binding = []
    for name, (kind, hour, subject) in model.rows.items():
        constraint = model.lp.get_constraint_by_name(name)
        if hour == first and kind not in ("route", "change") and abs(constraint.slack or 0.0) < ZERO:
            if kind == "committed":
                offer = problem.offers[int(subject)]
                subject = f"{offer.gpu_class} in {offer.region}"
            binding.append(explain.describe_row(kind, subject))
    return BlockResult(status, nodes, routed, committed, tuple(dict.fromkeys(binding)), model.gap)


def marginals(problem: BlendProblem, hours: tuple[int, ...]) -> tuple[Marginal, ...]:
    """Duals of the LP relaxation for the first hour: what one more unit of a limit is worth."""
    model = build(problem, hours, relax_integers=True)
    if solve(problem, model, problem.solver.time_limit_seconds, relaxed=True) is not SolveStatus.OPTIMAL:
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


def _solve_blocks(
    problem: BlendProblem, started: float, together: bool
) -> tuple[dict[tuple[int, ...], BlockResult], int]:
    """Solve every block; per-hour blocks with identical inputs share one solve."""
    results: dict[tuple[int, ...], BlockResult] = {}
    solved: dict[tuple[float, ...], tuple[int, BlockResult]] = {}
    solves = 0
    for hours in blocks(problem, together):
        signature = tuple(problem.demand[r][hours[0]] for r in problem.regions) if len(hours) == 1 else None
        if signature is not None and signature in solved and not _first(hours):
            source, result = solved[signature]
            results[hours] = _shift(result, source, hours[0])
            continue
        remaining = problem.solver.time_limit_seconds - (time.perf_counter() - started)
        # Hour by hour is the relaxation without the change rows; together keeps them.
        model = build(problem, hours, leave_out=() if together else (CHANGES,))
        status = solve(problem, model, remaining)
        solves += 1
        result = extract(problem, model, status)
        if status is SolveStatus.INFEASIBLE:
            result = BlockResult(status, message=explain.infeasible(problem, hours, _feasible_without))
        results[hours] = result
        if signature is not None:
            solved.setdefault(signature, (hours[0], result))
    return results, solves


def _first(hours: tuple[int, ...]) -> bool:
    # Hour 0 always gets its own solve: its binding rows are reported.
    return hours[0] == 0


def _shift(result: BlockResult, source: int, target: int) -> BlockResult:
    return BlockResult(
        status=result.status,
        nodes={(i, target): n for (i, t), n in result.nodes.items() if t == source},
        routed={(u, s, target): y for (u, s, t), y in result.routed.items() if t == source},
        gap=result.gap,
        message=result.message,
    )


def _feasible_without(
    problem: BlendProblem, hours: tuple[int, ...], leave_out: tuple[str, ...]
) -> tuple[SolveStatus, Mapping[tuple[int, int], int]]:
    model = build(problem, hours, leave_out=leave_out)
    status = solve(problem, model, problem.solver.time_limit_seconds)
    return status, extract(problem, model, status).nodes


def _infeasible(results: Mapping[tuple[int, ...], BlockResult]) -> bool:
    return any(r.status is SolveStatus.INFEASIBLE for r in results.values())


def _status_of(results: Iterable[BlockResult]) -> SolveStatus:
    statuses = {r.status for r in results}
    for worst in (SolveStatus.ERROR, SolveStatus.INFEASIBLE, SolveStatus.FEASIBLE):
        if worst in statuses:
            return worst
    return SolveStatus.OPTIMAL


def plan(problem: BlendProblem, decompose: bool = True) -> Plan:
    """Plan ``problem``: validate, then build, solve and extract each block; fall back to greedy on solver errors.

    ``decompose=False`` solves the whole horizon as one MILP: the baseline the benchmark compares against.
    """
    started = time.perf_counter()
    reasons = validate(problem)
    if reasons:
        return Plan(SolveStatus.INFEASIBLE, problem.solver.name.value, "; ".join(reasons), problem.hours)
    try:
        together = coupled(problem) or not decompose
        results: dict[tuple[int, ...], BlockResult] = {}
        solves = 0
        if decompose and not problem.size_commitments and problem.change_penalty_dollars_per_node == 0:
            # The hours one by one relax the node-change cap. If that is infeasible, so is the
            # whole; if its optimum keeps the cap, it is the optimum of the whole.
            results, solves = _solve_blocks(problem, started, together=False)
            if together and (_infeasible(results) or _decomposable_anyway(problem, results)):
                together = False
        if together:
            results, more = _solve_blocks(problem, started, together=True)
            solves += more
    except PlanningError as error:
        fallback = greedy.plan(problem)
        return _replace(fallback, message=f"{error}; {fallback.message}")
    status = _status_of(results.values())
    solve_seconds = time.perf_counter() - started
    if status is SolveStatus.INFEASIBLE:
        message = next(r.message for r in results.values() if r.status is SolveStatus.INFEASIBLE)
        return Plan(status, problem.solver.name.value, message, problem.hours, solve_seconds=solve_seconds)
    if status is SolveStatus.ERROR:
        fallback = greedy.plan(problem)
        return _replace(fallback, message=f"solver returned no solution in time; {fallback.message}")
    nodes: dict[tuple[int, int], int] = {}
    routed: dict[tuple[str, str, int], float] = {}
    committed: dict[int, int] = {}
    for result in results.values():
        nodes.update(result.nodes)
        routed.update(result.routed)
        committed.update(result.committed)
    gaps = [r.gap for r in results.values() if r.gap is not None]
    first = results[blocks(problem, together)[0]]
    assembled = assemble.plan_of(
        problem,
        status,
        problem.solver.name.value,
        nodes,
        routed,
        committed,
        message=f"{len(results)} block(s), {solves} solve(s)",
    )
    savings = None
    if problem.size_commitments:
        held_only = plan(dataclasses.replace(problem, size_commitments=False), decompose)
        if held_only.has_solution:
            savings = held_only.total_dollars - assembled.total_dollars
    return _replace(
        assembled,
        binding=first.binding,
        marginals=marginals(problem, blocks(problem, together)[0]),
        mip_gap=max(gaps) if gaps else None,
        savings_from_sizing_dollars=savings,
        solve_seconds=time.perf_counter() - started,
    )


def _replace(result: Plan, **changes: object) -> Plan:
    return dataclasses.replace(result, **changes)  # type: ignore[arg-type]
