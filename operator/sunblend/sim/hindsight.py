"""Hindsight bounds: what the pool's own planner would pay knowing the replayed traces in advance.

A policy's cost means little on its own; its distance to the cheapest plan that the same pool
could have run on the same traces says how much it leaves on the table. Two rows are computed,
both with the planner itself (``core.blend`` and ``core.model``), on the ``BlendProblem`` the
simulator replays, with the commitments as the pool holds them:

- ``hindsight-hourly``: each hour (UTC) of the replay is planned on its own, as the planner
  plans an hour (integer nodes, ``blend.plan``), for that hour's actual peak-minute demand per
  region, with spot capped at the hour's actual minimum availability in the spot trace
  (available GPUs // GPUs per node), and every constraint of the pool kept: headroom, routes and
  latency, ``maxSpotFraction``, ``spotLossServedFraction``, minimum replicas and the budget. The
  plan is priced at the hour's mean price per offer over the hour's steps; since its nodes run
  the whole hour, that is exactly what the engine would bill them at the trace's step prices.
- ``hindsight-step``: the same for every simulation step (minute), with that step's demand, spot
  and prices, as the LP relaxation of the planner's model (fractional nodes): tens of thousands
  of integer solves would take minutes, and the relaxation is never dearer than the integer plan,
  so it stays a bound. Steps with identical inputs share one solve, and one HiGHS model, rebuilt
  when the prices change, is re-solved from its last basis with each step's demand and spot caps.
  Looser than the hourly row; shown for context.

Both are billed as ``engine.Run.dollars`` bills a run: spot and on-demand nodes per step at the
step's price, and the commitments held (``Offer.committed_nodes``, as the ``sunblend`` policy
holds them) every step at the committed price, used or not. Using a held commitment costs
nothing at the margin, and a partially committed node is billed as a whole committed node, as
the engine bills it.

Why they bound the policies, and what they ignore: a policy decides without the future, so in an
hour it must hold at least enough for the peak it could not foresee, plus headroom, and its spot
can be taken back; the hindsight plans know the peak and the spot that stayed. They ignore boot
delays, preemption notices, node churn (``maxNodeChangesPerHour`` and the change penalty couple
the hours and are left out) and any demand a policy leaves unserved: they serve all of it, with
headroom. They are bounds under the pool's constraints, not on any bill at all: a policy that
runs below the pool's headroom inside an hour, or serves less than all demand, can cost less.
Commitments the pool holds for a GPU class that no region offers are not billed here, as the
engine does not bill them either.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import highspy
import pulp

from sunblend.api.spec import CapacityType
from sunblend.core import blend, greedy, model
from sunblend.core.plan import Plan, SolveStatus
from sunblend.core.problem import BlendProblem, Offer, OfferKey
from sunblend.sim.engine import SECONDS_PER_HOUR, Engine

HOURLY = "hindsight-hourly"
STEP = "hindsight-step"

# Our status for the worst hour of a bound, best first.
_RANK = (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


class HindsightError(Exception):
    """No plan keeps the pool's constraints for some hour or step of the traces."""


@dataclass
class Bound:
    """A hindsight plan over the whole replay: nodes per step, and what they cost."""

    name: str
    description: str
    lp_relaxation: bool  # fractional nodes: a bound on the integer plan, not a plan to run
    times: Sequence[dt.datetime]
    nodes: list[Mapping[OfferKey, float]]  # per step: nodes of each offer (fractional for an LP relaxation)
    dollars: dict[CapacityType, float] = field(default_factory=lambda: dict.fromkeys(CapacityType, 0.0))
    all_on_demand_dollars: float = 0.0
    demand_token_seconds: float = 0.0
    capacity_token_seconds: float = 0.0
    solves: int = 0  # distinct inputs planned
    status: SolveStatus = SolveStatus.OPTIMAL  # the worst hour's (Feasible: a solve stopped at its time limit)

    @property
    def total_dollars(self) -> float:
        """Cost of the plan, committed (amortised) included."""
        return sum(self.dollars.values())

    @property
    def savings_ratio(self) -> float:
        """Savings versus the all-on-demand reference of the same replay."""
        reference = self.all_on_demand_dollars
        return 0.0 if reference <= 0 else 1 - self.total_dollars / reference

    @property
    def utilization_ratio(self) -> float:
        """Demand over the capacity the plan runs (below 1 / (1 + headroom) by construction)."""
        return 0.0 if self.capacity_token_seconds <= 0 else self.demand_token_seconds / self.capacity_token_seconds

    def gpus(self, region: str, offers: Mapping[OfferKey, Offer]) -> list[float]:
        """GPUs the plan runs in ``region`` at each step, all capacity types together."""
        return [
            sum(n * offers[key].gpus_per_node for key, n in step.items() if key[0] == region) for step in self.nodes
        ]


def hourly(replay: Engine) -> Bound:
    """``hindsight-hourly``: each hour planned by ``blend.plan`` for its actual peak and minimum spot."""
    base = _uncoupled(replay.problem, relative_gap=0.0)
    bound = _start(
        replay,
        HOURLY,
        "per hour, the cheapest integer plan under the pool's constraints for the hour's actual peak "
        "minute, spot capped at the hour's minimum availability, commitments as held",
        lp_relaxation=False,
    )
    plans: dict[tuple[object, ...], dict[OfferKey, float]] = {}
    for steps in _hours(replay):
        start = replay.times[steps[0]].astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        peaks = tuple(max(replay.demand[r][k] for k in steps) for r in base.regions)
        prices = tuple(math.fsum(replay.prices[o.key][k] for k in steps) / len(steps) for o in base.offers)
        caps = tuple(_spot_cap(replay, o, steps) for o in base.offers)
        signature = (peaks, prices, caps)
        if signature not in plans:
            offers = tuple(
                dataclasses.replace(o, dollars_per_gpu_hour=price, max_nodes=cap)
                for o, price, cap in zip(base.offers, prices, caps, strict=True)
            )
            hour_problem = dataclasses.replace(
                base, hours=(start,), demand={r: (p,) for r, p in zip(base.regions, peaks, strict=True)}, offers=offers
            )
            result = blend.plan(hour_problem)
            _check(result, start)
            bound.status = max(bound.status, result.status, key=_RANK.index)
            plans[signature] = {(a.region, a.gpu_class, a.capacity_type): float(a.nodes) for a in result.allocations}
            bound.solves += 1
        for k in steps:
            _bill(replay, bound, k, plans[signature])
    return bound


def per_step(replay: Engine) -> Bound:
    """``hindsight-step``: every step's LP relaxation of the planner's model, identical steps solved once."""
    base = _uncoupled(replay.problem, relative_gap=replay.problem.solver.relative_gap)
    bound = _start(
        replay,
        STEP,
        "per step, the LP relaxation (fractional nodes) of the cheapest plan under the pool's constraints "
        "for the step's actual demand and spot, commitments as held, boot delays ignored",
        lp_relaxation=True,
    )
    served = {r for r in base.regions if max(replay.demand[r], default=0.0) > 0}
    reasons = blend.validate(dataclasses.replace(base, demand={r: tuple(replay.demand[r]) for r in base.regions}))
    if reasons:
        raise HindsightError(f"{STEP}: " + "; ".join(reasons))
    relaxation: _Relaxation | None = None  # the model for the current prices (they change seldom)
    solved: dict[tuple[object, ...], dict[OfferKey, float]] = {}
    for k, moment in enumerate(replay.times):
        prices = tuple(replay.prices[o.key][k] for o in base.offers)
        demand = tuple(replay.demand[r][k] for r in base.regions)
        caps = tuple(_spot_cap(replay, o, (k,)) for o in base.offers)
        signature = (prices, demand, caps)
        if signature not in solved:
            if relaxation is None or relaxation.prices != prices:
                priced = tuple(
                    dataclasses.replace(o, dollars_per_gpu_hour=p) for o, p in zip(base.offers, prices, strict=True)
                )
                relaxation = _Relaxation(dataclasses.replace(base, offers=priced), served)
            nodes = relaxation.solve(demand, caps)
            if nodes is None:
                _explain(relaxation.problem, moment, demand, caps)
            solved[signature] = nodes
            bound.solves += 1
        _bill(replay, bound, k, solved[signature])
    return bound


class _Relaxation:
    """The planner's one-hour model (``core.model.build``), relaxed, held in HiGHS for warm re-solves.

    Built once with demand in every region, so that every route and row exists; each solve then
    sets the demand rows' right-hand sides and the spot columns' upper bounds, and HiGHS starts
    from the previous basis.
    """

    def __init__(self, problem: BlendProblem, served: set[str]) -> None:
        self.problem = dataclasses.replace(
            problem, hours=problem.hours[:1], demand={r: (1.0 if r in served else 0.0,) for r in problem.regions}
        )
        self.block = model.build(self.problem, (0,), relax_integers=True)
        # One thread, as core.highs runs every solve: HiGHS's thread pool is shared by the process,
        # and a solver made with more threads would make later single-threaded solves fail.
        self.block.lp.solve(pulp.HiGHS(mip=False, msg=False, threads=1, timeLimit=problem.solver.time_limit_seconds))
        self.highs = self.block.lp.solverModel
        self.rows = {
            subject: self.block.lp.get_constraint_by_name(name).index
            for name, (kind, _, subject) in self.block.rows.items()
            if kind == "route"
        }
        self.columns = [self.block.nodes[(i, 0)].index for i in range(len(problem.offers))]
        self.prices = tuple(o.dollars_per_gpu_hour for o in problem.offers)

    def solve(self, demand: Sequence[float], caps: Sequence[int | None]) -> dict[OfferKey, float] | None:
        """Nodes per offer for ``demand`` per region and spot ``caps`` per offer; None when infeasible."""
        for region, tokens_per_second in zip(self.problem.regions, demand, strict=True):
            if region in self.rows:  # a region with no demand in the whole replay has no row
                self.highs.changeRowBounds(self.rows[region], tokens_per_second, tokens_per_second)
        for column, offer, cap in zip(self.columns, self.problem.offers, caps, strict=True):
            if offer.capacity_type is CapacityType.SPOT:
                self.highs.changeColBounds(column, 0.0, highspy.kHighsInf if cap is None else float(cap))
        self.highs.run()
        if self.highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        values = self.highs.getSolution().col_value
        return {o.key: max(float(values[c]), 0.0) for o, c in zip(self.problem.offers, self.columns, strict=True)}


def _uncoupled(problem: BlendProblem, relative_gap: float) -> BlendProblem:
    """The replayed problem with the hours uncoupled and commitments sunk as the engine bills them."""
    offers = tuple(
        dataclasses.replace(o, committed_gpus=None) if o.capacity_type is CapacityType.COMMITTED else o
        for o in problem.offers
    )
    return dataclasses.replace(
        problem,
        offers=offers,
        size_commitments=False,
        max_node_changes_per_hour=None,
        change_penalty_dollars_per_node=0.0,
        current_nodes={},
        solver=dataclasses.replace(problem.solver, relative_gap=relative_gap),
    )


def _start(replay: Engine, name: str, description: str, lp_relaxation: bool) -> Bound:
    """A bound with nothing planned yet: the commitments held, the demand and the reference billed."""
    step_hours = replay.settings.step.total_seconds() / SECONDS_PER_HOUR
    bound = Bound(name, description, lp_relaxation, replay.times, nodes=[])
    for o in replay.problem.offers:
        if o.capacity_type is CapacityType.COMMITTED and o.committed_nodes > 0:
            bound.dollars[CapacityType.COMMITTED] += (
                o.committed_nodes * o.gpus_per_node * math.fsum(replay.prices[o.key]) * step_hours
            )
    for k in range(len(replay.times)):
        bound.demand_token_seconds += sum(replay.demand[r][k] for r in replay.problem.regions)
        # The engine's own all-on-demand reference, so that savings compare with the policies' rows.
        bound.all_on_demand_dollars += replay._all_on_demand(k) * step_hours
    bound.demand_token_seconds *= replay.settings.step.total_seconds()
    return bound


def _bill(replay: Engine, bound: Bound, k: int, nodes: Mapping[OfferKey, float]) -> None:
    """Record step ``k`` of the plan: its nodes, their capacity, and spot and on-demand at the step's price."""
    step_seconds = replay.settings.step.total_seconds()
    bound.nodes.append(nodes)
    for key, count in nodes.items():
        offer = replay.offers[key]
        bound.capacity_token_seconds += count * offer.tokens_per_second_per_node * step_seconds
        if key[2] is not CapacityType.COMMITTED:
            bound.dollars[key[2]] += (
                count * offer.gpus_per_node * replay.prices[key][k] * step_seconds / SECONDS_PER_HOUR
            )


def _hours(replay: Engine) -> list[list[int]]:
    """Step indices grouped by the UTC hour they fall in, in order."""
    groups: list[list[int]] = []
    current: dt.datetime | None = None
    for k, moment in enumerate(replay.times):
        hour = moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if hour != current:
            groups.append([])
            current = hour
        groups[-1].append(k)
    return groups


def _spot_cap(replay: Engine, offer: Offer, steps: Sequence[int]) -> int | None:
    """Spot nodes of ``offer`` obtainable at every one of ``steps``; None where the trace sets no cap."""
    if offer.capacity_type is not CapacityType.SPOT:
        return offer.max_nodes
    gpus = replay.spot_gpus.get((offer.region, offer.gpu_class))
    if gpus is None:
        return offer.max_nodes
    least = min(gpus[k] for k in steps)
    return None if math.isinf(least) else int(least // offer.gpus_per_node)


def _check(result: Plan, start: dt.datetime) -> None:
    """Refuse an hour the planner could not plan within the pool's constraints."""
    if result.status in _RANK and result.solver != greedy.SOLVER:
        return
    reason = result.message or result.status.value
    raise HindsightError(
        f"{HOURLY}: no plan keeps the pool's constraints in the hour from {start:%Y-%m-%d %H:%M} UTC: {reason}"
    )


def _explain(
    problem: BlendProblem, moment: dt.datetime, demand: Sequence[float], caps: Sequence[int | None]
) -> NoReturn:
    """Say why a step has no plan, in the planner's own words (its explanation of an infeasible hour)."""
    offers = tuple(dataclasses.replace(o, max_nodes=cap) for o, cap in zip(problem.offers, caps, strict=True))
    step_problem = dataclasses.replace(
        problem,
        hours=(moment,),
        demand={r: (d,) for r, d in zip(problem.regions, demand, strict=True)},
        offers=offers,
    )
    result = blend.plan(step_problem)
    reason = result.message or "the LP relaxation is infeasible"
    raise HindsightError(f"{STEP}: no plan keeps the pool's constraints at {moment:%Y-%m-%d %H:%M} UTC: {reason}")
