"""The blend MILP itself: build one block of hours, solve it with a deadline, read the plan out.

``build`` writes the formulation (see DESIGN.md): node counts per offer and hour, demand routed
over the allowed routes, and the policy's rows; ``solve`` runs HiGHS (in-process, bounded in
wall-clock time) or CBC; ``extract`` reads node counts, routes and the binding rows. Used by
``core.blend`` (per-hour and whole-horizon blocks) and ``core.coupled`` (windows of hours).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pulp

from sunblend.api.spec import CapacityType, SolverName
from sunblend.core import explain, highs
from sunblend.core.plan import SolveStatus
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

NodeCounts = Mapping[tuple[int, int], int]  # (offer index, hour) -> nodes


class PlanningError(Exception):
    """The solver failed in a way that is not the pool's fault."""


@dataclass
class BlockModel:
    """One built MILP over some hours, with handles to its variables and rows."""

    hours: tuple[int, ...]
    lp: pulp.LpProblem
    nodes: dict[tuple[int, int], pulp.LpVariable] = field(default_factory=dict)  # (offer, hour)
    routed: dict[tuple[str, str, int], pulp.LpVariable] = field(default_factory=dict)  # (user, server, hour)
    committed: dict[int, pulp.LpVariable] = field(default_factory=dict)  # offer -> nodes to hold (sizing)
    partial: dict[tuple[int, int], pulp.LpVariable] = field(default_factory=dict)  # the last node runs (0-1)
    rows: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # row name -> (kind, hour, subject)
    gap: float | None = None
    objective: float | None = None  # the model's objective value, once solved
    bound: float | None = None  # a proven lower bound on it, once solved


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
    bound: float | None = None  # proven lower bound on the block's objective (node and hold costs)
    objective: float | None = None  # the block's objective value


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
    fixed: NodeCounts | None = None,
) -> BlockModel:
    """Build the MILP for ``hours``; ``leave_out`` drops constraint groups, ``relax_integers`` gives the LP.

    ``fixed`` pins some node counts (offer, hour): the neighbours of a window being re-planned.
    The objective is what the nodes cost on top of the sunk commitments (``BlendProblem.
    constant_dollars_per_hour``), the change penalty and a tie-break per node-hour.
    """
    fixed = fixed or {}
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
            low, high = (fixed[(i, t)], fixed[(i, t)]) if (i, t) in fixed else (0, o.max_nodes)
            x = model.lp.add_variable(f"x_{i}_{t}", lowBound=low, upBound=high, cat=category)
            model.nodes[(i, t)] = x
            marginal = 0.0 if o.capacity_type is CapacityType.COMMITTED else o.dollars_per_node_hour
            objective.addterm(x, marginal + NODE_EPSILON)
            if not sizing and o.capacity_type is CapacityType.COMMITTED and o.partial_node_dollars_per_hour > 0:
                # The last committed node's uncovered GPUs are billed on-demand while it runs.
                partial = model.lp.add_variable(f"p_{i}_{t}", lowBound=0, upBound=1)
                model.partial[(i, t)] = partial
                objective.addterm(partial, o.partial_node_dollars_per_hour)
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
                partial = model.partial.get((i, t))
                if partial is not None:
                    _row(model, model.nodes[(i, t)] - partial <= o.committed_nodes - 1, "partial", t, str(i))
                    cost.addterm(partial, o.partial_node_dollars_per_hour)
            else:
                cost.addterm(model.nodes[(i, t)], o.dollars_per_node_hour)
    if BUDGET not in skip and problem.budget_dollars_per_hour is not None:
        for i, held in model.committed.items():
            cost.addterm(held, offers[i].dollars_per_node_hour)
        _row(model, cost <= problem.budget_dollars_per_hour - problem.constant_dollars_per_hour, "budget", t, "")


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


def solve(
    problem: BlendProblem,
    model: BlockModel,
    time_limit: float,
    relaxed: bool = False,
    start: NodeCounts | None = None,
    held: Mapping[int, int] | None = None,
) -> SolveStatus:
    """Run the solver on a built block within ``time_limit`` seconds; records the gap, objective and bound.

    HiGHS runs in-process (``core.highs``), seeded with ``start`` (node counts) and ``held``
    (commitments to hold, when sizing) if given; CBC runs through PuLP, whose "Optimal" after a
    time limit is corrected by the solution status (``status_from``).
    """
    limit = max(time_limit, 0.01)
    if problem.solver.name is SolverName.HIGHS:
        values: dict[str, float] = {}
        for key, count in (start or {}).items():
            if key in model.nodes:
                values[model.nodes[key].name] = float(count)
        for i, count in (held or {}).items():
            if i in model.committed:
                values[model.committed[i].name] = float(count)
        options = highs.ONE_HOUR if len(model.hours) == 1 else highs.HORIZON
        try:
            outcome = highs.solve(
                model.lp, model.rows, limit, problem.solver.relative_gap, relaxed, values or None, options
            )
        except (RuntimeError, ValueError) as error:
            raise PlanningError(f"HiGHS failed: {error}") from error
        model.gap, model.objective, model.bound = outcome.gap, outcome.objective, outcome.bound
        return outcome.status
    try:
        model.lp.solve(_cbc(problem, limit))
    except pulp.PulpSolverError as error:
        raise PlanningError(f"solver failed: {error}") from error
    status = status_from(model.lp.status, model.lp.sol_status)
    if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        model.objective = pulp.value(model.lp.objective)
        model.bound = model.objective if status is SolveStatus.OPTIMAL and not relaxed else None
        if status is SolveStatus.OPTIMAL and problem.solver.relative_gap > 0 and model.objective is not None:
            model.bound = model.objective * (1 - problem.solver.relative_gap)
    return status


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
        if hour == first and kind not in ("route", "change", "partial") and abs(constraint.slack or 0.0) < ZERO:
            if kind == "committed":
                offer = problem.offers[int(subject)]
                subject = f"{offer.gpu_class} in {offer.region}"
            binding.append(explain.describe_row(kind, subject))
    return BlockResult(
        status,
        nodes,
        routed,
        committed,
        tuple(dict.fromkeys(binding)),
        model.gap,
        bound=model.bound,
        objective=model.objective,
    )
