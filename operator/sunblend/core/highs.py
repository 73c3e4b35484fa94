"""Solves a PuLP model with HiGHS in-process, passing the whole matrix to highspy at once.

PuLP's own HiGHS adapter adds columns, rows and integrality one call at a time; on the
planner's many small per-hour models that costs about as much as the solve (see
bench/planner.py). This adapter reads the model through PuLP's public API, passes it with one
``passModel``, and writes values, duals and slacks back onto the PuLP objects, so the rest of
the planner reads results the usual way. Called by ``core.blend``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import highspy
import numpy as np
import pulp

from sunblend.core.plan import SolveStatus

_FOUND = 2  # HiGHS solution status: a feasible solution is held
# Verdicts under which a held solution is a plan: HiGHS stopped early, not because the model is bad.
_STOPPED = (
    highspy.HighsModelStatus.kTimeLimit,
    highspy.HighsModelStatus.kInterrupt,
    highspy.HighsModelStatus.kSolutionLimit,
    highspy.HighsModelStatus.kIterationLimit,
)


def _matrix(lp: pulp.LpProblem, rows: list[pulp.LpConstraint], index: dict[str, int]) -> highspy.HighsLp:
    columns = lp.variables()
    model = highspy.HighsLp()
    model.num_col_ = len(columns)
    model.num_row_ = len(rows)
    model.col_cost_ = np.array([lp.objective.get(v, 0.0) for v in columns], dtype=float)
    model.col_lower_ = np.array(
        [-highspy.kHighsInf if v.lowBound is None else v.lowBound for v in columns], dtype=float
    )
    model.col_upper_ = np.array([highspy.kHighsInf if v.upBound is None else v.upBound for v in columns], dtype=float)
    lower, upper, starts, indices, values = [], [], [0], [], []
    for row in rows:
        rhs = -row.constant
        lower.append(rhs if row.sense in (pulp.LpConstraintGE, pulp.LpConstraintEQ) else -highspy.kHighsInf)
        upper.append(rhs if row.sense in (pulp.LpConstraintLE, pulp.LpConstraintEQ) else highspy.kHighsInf)
        for variable, coefficient in row.items():
            if coefficient:
                indices.append(index[variable.name])
                values.append(coefficient)
        starts.append(len(indices))
    model.row_lower_ = np.array(lower, dtype=float)
    model.row_upper_ = np.array(upper, dtype=float)
    model.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    model.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    model.a_matrix_.index_ = np.array(indices, dtype=np.int32)
    model.a_matrix_.value_ = np.array(values, dtype=float)
    return model


@dataclass(frozen=True)
class Outcome:
    """What one HiGHS run found: our status, the MIP gap, the objective and the proven bound."""

    status: SolveStatus
    gap: float | None = None
    objective: float | None = None
    bound: float | None = None


# Options per model shape, chosen by measurement (bench/planner.py). One hour alone: a feasible
# plan is easy to find, and the feasibility-jump heuristic only costs time. A coupled horizon: it
# finds the first plan far sooner (a 2 x 2 x 24 pool with a node-change cap: 1.9 s -> 0.6 s).
ONE_HOUR = {"mip_heuristic_run_feasibility_jump": False}
HORIZON: dict[str, bool | float | str] = {}

# A run that ignores its time limit (HiGHS checks it only between some steps) is cancelled, and
# if it still runs this much later it is left to finish in the background and not waited for.
GRACE_SECONDS = 0.5
# Models up to this many columns run without the worker thread.
DIRECT_COLUMNS = 2000


def _highs(
    model: highspy.HighsLp, time_limit: float, relative_gap: float, options: Mapping[str, bool | float | str]
) -> highspy.Highs:
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.setOptionValue("time_limit", max(float(time_limit), 0.01))
    highs.setOptionValue("mip_rel_gap", float(relative_gap))
    for name, value in options.items():
        highs.setOptionValue(name, value)
    highs.passModel(model)
    return highs


def _consistent(highs: highspy.Highs, model: highspy.HighsLp) -> bool:
    """Whether the solution HiGHS returns has the objective value it reports."""
    if highs.getInfo().primal_solution_status != _FOUND:
        return True
    value = float(np.dot(model.col_cost_, np.asarray(highs.getSolution().col_value)))
    reported = float(highs.getInfo().objective_function_value)
    return abs(value - reported) <= 1e-6 * max(1.0, abs(reported))


def _run_bounded(highs: highspy.Highs, time_limit: float, columns: int) -> bool:
    """Run HiGHS; a large model in a worker thread, cancelled at the time limit. Whether it finished in time.

    Small models (one hour of a pool) keep their time limit on their own, and a thread costs
    about a millisecond to start: they run directly.
    """
    if columns <= DIRECT_COLUMNS:
        highs.run()
        return True
    highs.HandleUserInterrupt = True
    worker = threading.Thread(target=highs.run, daemon=True)
    worker.start()
    worker.join(time_limit + GRACE_SECONDS)
    if worker.is_alive():
        highs.cancelSolve()  # type: ignore[no-untyped-call]
        worker.join(GRACE_SECONDS)
    return not worker.is_alive()


def solve(
    lp: pulp.LpProblem,
    row_names: Iterable[str],
    time_limit: float,
    relative_gap: float,
    relaxed: bool = False,
    start: Mapping[str, float] | None = None,
    options: Mapping[str, bool | float | str] = ONE_HOUR,
) -> Outcome:
    """Solve ``lp`` (rows ``row_names``) within ``time_limit`` seconds of wall-clock time.

    ``start`` gives values for some variables (by name): a plan to start from, which HiGHS
    completes and improves. A run stopped by its time limit with a plan is Feasible, never
    Optimal; one that runs past the limit is abandoned and reports an error.
    """
    columns = lp.variables()
    index = {v.name: i for i, v in enumerate(columns)}
    rows = [lp.get_constraint_by_name(name) for name in row_names]
    model = _matrix(lp, rows, index)
    integer = [not relaxed and v.cat == pulp.LpInteger for v in columns]
    if any(integer):
        model.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integer]
    highs = _highs(model, time_limit, relative_gap, options)
    if start and any(integer):
        known = [(index[name], value) for name, value in start.items() if name in index]
        highs.setSolution(
            len(known),
            np.array([i for i, _ in known], dtype=np.int32),
            np.array([v for _, v in known], dtype=float),
        )
    if not _run_bounded(highs, max(float(time_limit), 0.01), len(columns)):
        return Outcome(SolveStatus.ERROR)
    if start and any(integer) and not _consistent(highs, model):
        # HiGHS 1.16 can hand back the start instead of what it found when presolve solves the
        # whole model; such models are tiny, so solve again without the start.
        highs = _highs(model, time_limit, relative_gap, options)
        if not _run_bounded(highs, max(float(time_limit), 0.01), len(columns)):
            return Outcome(SolveStatus.ERROR)
    verdict = highs.getModelStatus()
    info = highs.getInfo()
    if verdict in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return Outcome(SolveStatus.INFEASIBLE)
    if verdict == highspy.HighsModelStatus.kOptimal:
        status = SolveStatus.OPTIMAL
    elif info.primal_solution_status == _FOUND and verdict in _STOPPED:
        status = SolveStatus.FEASIBLE
    else:
        return Outcome(SolveStatus.ERROR)  # e.g. a model HiGHS refuses: never a plan read from it
    solution = highs.getSolution()
    for variable, value in zip(columns, solution.col_value, strict=True):
        variable.varValue = value
    duals = solution.row_dual if solution.dual_valid else [0.0] * len(rows)
    for row, value, dual, low, high in zip(
        rows, solution.row_value, duals, model.row_lower_, model.row_upper_, strict=True
    ):
        row.pi = dual
        row.slack = min(value - low, high - value)
    objective = float(info.objective_function_value)
    if any(integer):
        gap = float(info.mip_gap) if np.isfinite(info.mip_gap) else None
        bound = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else None
    else:
        gap, bound = None, objective
    return Outcome(status, gap, objective, bound)
