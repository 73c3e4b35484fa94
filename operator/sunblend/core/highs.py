"""Solves a PuLP model with HiGHS in-process, passing the whole matrix to highspy at once.

PuLP's own HiGHS adapter adds columns, rows and integrality one call at a time; on the
planner's many small per-hour models that costs about as much as the solve (see
bench/planner.py). This adapter reads the model through PuLP's public API, passes it with one
``passModel``, and writes values, duals and slacks back onto the PuLP objects, so the rest of
the planner reads results the usual way. Called by ``core.blend``.
"""

from __future__ import annotations

from collections.abc import Iterable

import highspy
import numpy as np
import pulp

from sunblend.core.plan import SolveStatus

_FOUND = 2  # HiGHS solution status: a feasible solution is held


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


def solve(
    lp: pulp.LpProblem,
    row_names: Iterable[str],
    time_limit: float,
    relative_gap: float,
    relaxed: bool = False,
) -> tuple[SolveStatus, float | None]:
    """Solve ``lp`` (rows ``row_names``); return our status and the MIP gap.

    A run stopped by its time limit with an incumbent is Feasible, never Optimal.
    """
    columns = lp.variables()
    index = {v.name: i for i, v in enumerate(columns)}
    rows = [lp.get_constraint_by_name(name) for name in row_names]
    model = _matrix(lp, rows, index)
    integer = [not relaxed and v.cat == pulp.LpInteger for v in columns]
    if any(integer):
        model.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integer]
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.setOptionValue("time_limit", float(time_limit))
    highs.setOptionValue("mip_rel_gap", float(relative_gap))
    # A feasible plan is easy to find (the greedy one is); the feasibility-jump heuristic only
    # costs time here: 0.41 s -> 0.26 s on the benchmark's 24 per-hour 8x6 models, one run.
    highs.setOptionValue("mip_heuristic_run_feasibility_jump", False)
    highs.passModel(model)
    highs.run()
    verdict = highs.getModelStatus()
    info = highs.getInfo()
    if verdict in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return SolveStatus.INFEASIBLE, None
    if verdict == highspy.HighsModelStatus.kOptimal:
        status = SolveStatus.OPTIMAL
    elif info.primal_solution_status == _FOUND:
        status = SolveStatus.FEASIBLE
    else:
        return SolveStatus.ERROR, None
    solution = highs.getSolution()
    for variable, value in zip(columns, solution.col_value, strict=True):
        variable.varValue = value
    duals = solution.row_dual if solution.dual_valid else [0.0] * len(rows)
    for row, value, dual, low, high in zip(
        rows, solution.row_value, duals, model.row_lower_, model.row_upper_, strict=True
    ):
        row.pi = dual
        row.slack = min(value - low, high - value)
    gap = float(info.mip_gap) if any(integer) and np.isfinite(info.mip_gap) else None
    return status, gap
