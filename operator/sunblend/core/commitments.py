"""Commitment advice from demand history: what to commit to, per GPU class, region and term.

``hourly_peaks`` turns demand samples (from a CSV trace or Prometheus, read by the caller) into
each region's peak per UTC hour. ``sizing_problem`` makes the pool's planning problem over those
hours in SizeCommitments mode, holding nothing yet; the change cap, the change penalty and the
budget are left out (they govern how the operator moves, not what demand costs). ``advise`` then,
for each commitment term offered (a price per GPU-hour per class and region):

1. plans every hour on its own with the committed count free at the term's price: a proven lower
   bound, and how many committed nodes each hour would use;
2. holds, per class and region, the count those hours use often enough to pay for themselves
   (the planner's price-ratio rule), then improves it one node at a time while that lowers the
   total cost; each candidate is costed exactly by planning every hour with it held (hours are
   independent once the commitments are fixed: ``core.hourly``);
3. reports the GPUs to commit, the break-even utilisation (term price over the on-demand price
   a committed GPU displaces), the saving against holding none, and the cost if demand falls
   (by 20% by default) against the best plan that holds none at that demand.

Pure: the caller passes the deadline's clock. Called by the CLI (``sunblend advise commitments``)
and the advice benchmark.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import blend, coupled, hourly, problem
from sunblend.core.deadline import Deadline
from sunblend.core.model import CHANGES, BlockResult, NodeCounts
from sunblend.core.plan import SolveStatus
from sunblend.core.problem import BlendProblem, Offer

HOUR = dt.timedelta(hours=1)
DEMAND_FALL = 0.2
"""The fall in demand whose risk the advice reports: 20%."""
MAX_HOURS = 8784
"""The longest history advised on: a leap year of hours."""
HOURS_PER_MONTH = 730.0
"""Hours in an average month (8,760 / 12), to state a saving per month."""
POOL_TERM = "pool"
"""The name of the term priced by the pool's own committed prices."""
# Relative gap of each hour's plan when costing commitments: tighter than the planner's default,
# so that two candidates' costs differ by what they hold, not by the solver's tolerance.
COSTING_GAP = 0.001
# Share of a term's search time for planning every hour with its commitments free (the bound).
RELAXATION_SHARE = 0.4
# A candidate must save at least this much over the history to replace the best one.
IMPROVEMENT_DOLLARS = 0.01
# Seconds every costing that the report needs may take, whatever the search left.
REPORT_SECONDS = 60.0
# Share of the time limit the search for better commitments may use; the rest is for the report.
SEARCH_SHARE = 0.7

Samples = Sequence[tuple[dt.datetime, float]]
Held = tuple[int, ...]  # committed nodes per committed offer, in offer order


class AdviceError(Exception):
    """The history or the pool cannot give advice; the message says which hour, region or term."""


@dataclass(frozen=True)
class History:
    """Each region's peak demand per UTC hour, from ``start``."""

    start: dt.datetime
    demand: Mapping[str, tuple[float, ...]]  # region -> peak tokens/s per hour
    hours_without_data: Mapping[str, int]  # region -> hours in which no sample was in force (taken as 0)

    @property
    def hours(self) -> int:
        """Hours of history."""
        return len(next(iter(self.demand.values()), ()))

    def scaled(self, factor: float) -> History:
        """The same history with every hour's demand times ``factor``."""
        return dataclasses.replace(
            self, demand={r: tuple(v * factor for v in values) for r, values in self.demand.items()}
        )


def hourly_peaks(samples: Mapping[str, Samples], hold: dt.timedelta | None = None) -> History:
    """Each region's highest demand in force during each UTC hour, over the hours the samples span.

    A sample holds until the next one of its region (a step function, as trace files are read;
    the last one to the end of the history's last hour), or for at most ``hold`` when given
    (Prometheus points, each the mean over its step). Hours in which nothing is in force count
    as zero demand, and are counted per region.
    """
    series = {r: sorted(points) for r, points in samples.items() if points}
    if not series:
        raise AdviceError("the history has no demand samples")
    first = min(points[0][0] for points in series.values())
    last = max(points[-1][0] for points in series.values())
    start = first.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hours = int((last - start) / HOUR) + 1
    if hours > MAX_HOURS:
        raise AdviceError(
            f"the history spans {hours:,} hours, from {first.isoformat()} to {last.isoformat()}; "
            f"at most {MAX_HOURS:,} (a year) are advised on"
        )
    demand: dict[str, tuple[float, ...]] = {}
    empty: dict[str, int] = {}
    for region in samples:
        points = series.get(region, [])
        peaks: list[float | None] = [None] * hours
        for k, (moment, value) in enumerate(points):
            until = points[k + 1][0] if k + 1 < len(points) else start + hours * HOUR
            if hold is not None:
                until = min(until, moment + hold)
            first_hour = int((moment - start) / HOUR)
            last_hour = min(int((max(until - dt.timedelta(microseconds=1), moment) - start) / HOUR), hours - 1)
            for h in range(first_hour, last_hour + 1):
                peak = peaks[h]
                peaks[h] = value if peak is None else max(peak, value)
        demand[region] = tuple(0.0 if p is None else p for p in peaks)
        empty[region] = sum(1 for p in peaks if p is None)
    return History(start=start, demand=demand, hours_without_data=empty)


@dataclass(frozen=True)
class Term:
    """A commitment term on offer: its price per GPU-hour, amortised, per (GPU class, region)."""

    name: str
    prices: Mapping[tuple[str, str], float]  # (gpu_class, region) -> $/GPU-hour


def pool_term(pool_spec: spec.InferencePoolSpec) -> Term | None:
    """The term priced by the pool's committed prices, where it gives any; None if it gives none."""
    prices = {}
    for gpu_class in pool_spec.gpu_classes:
        for region in pool_spec.regions:
            price = pool_spec.prices(gpu_class, region.name).committed
            if price is not None and pool_spec.offers(gpu_class, region.name):
                prices[(gpu_class.name, region.name)] = price
    return Term(POOL_TERM, prices) if prices else None


def sizing_problem(pool_spec: spec.InferencePoolSpec, history: History) -> BlendProblem:
    """The pool's problem over the history's hours, sizing commitments from none held.

    Left out: the change cap, the change penalty and the budget. A class and region with no
    committed price get their committed offer from the terms (``advise``).
    """
    planning = pool_spec.planning.model_copy(update={"mode": spec.PlanningMode.SIZE_COMMITMENTS})
    bare = pool_spec.model_copy(update={"commitments": [], "planning": planning})
    hours = tuple(history.start + k * HOUR for k in range(history.hours))
    made = problem.from_spec(bare, history.start, demand=history.demand)
    committed = [o for o in made.offers if o.capacity_type is CapacityType.COMMITTED]
    keys = {(o.gpu_class, o.region) for o in committed}
    extra = tuple(
        dataclasses.replace(o, capacity_type=CapacityType.COMMITTED, uncovered_dollars_per_gpu_hour=0.0)
        for o in made.offers
        if o.capacity_type is CapacityType.ON_DEMAND and (o.gpu_class, o.region) not in keys
    )
    return dataclasses.replace(
        made,
        hours=hours,
        offers=made.offers + extra,
        budget_dollars_per_hour=None,
        max_node_changes_per_hour=None,
        change_penalty_dollars_per_node=0.0,
        current_nodes={},
    )


@dataclass(frozen=True)
class Commitment:
    """Advice for one GPU class in one region under one term."""

    gpu_class: str
    region: str
    gpus: int
    dollars_per_gpu_hour: float  # the term's price
    on_demand_dollars_per_gpu_hour: float  # what a committed GPU displaces at the margin
    break_even_ratio: float  # share of hours a committed GPU must run to beat on-demand
    utilisation_ratio: float | None  # share of the committed GPU-hours the history's plan runs
    saving_dollars: float  # what this row saves over the history, the term's other rows held


@dataclass(frozen=True)
class TermAdvice:
    """What to commit to under one term, and what it saves and risks over the history."""

    term: str
    commitments: tuple[Commitment, ...]
    dollars: float  # total cost over the history holding the advice (amortised commitments included)
    none_dollars: float  # total cost over the history holding no commitments
    fall_dollars: float  # the same advice held, demand times (1 - fall)
    fall_none_dollars: float  # holding none, demand times (1 - fall)
    lower_bound_dollars: float | None  # proven: no commitments of this term cost less over the history
    searched: int  # candidate commitments the search costed
    finished: bool = True  # the search stopped because no move saved money, not at its time limit

    @property
    def saving_dollars(self) -> float:
        """Saving over the history against holding none."""
        return self.none_dollars - self.dollars

    @property
    def saving_ratio(self) -> float:
        """The saving as a share of the cost holding none."""
        return self.saving_dollars / self.none_dollars if self.none_dollars > 0 else 0.0

    def per_month(self, dollars: float, hours: int) -> float:
        """``dollars`` over ``hours`` of history, as dollars per average month."""
        return dollars * HOURS_PER_MONTH / hours if hours else 0.0

    @property
    def fall_extra_dollars(self) -> float:
        """What the advice costs beyond holding none if demand falls; negative: it still saves."""
        return self.fall_dollars - self.fall_none_dollars

    @property
    def gap(self) -> float | None:
        """How far the advice's cost may be above the best commitments of this term, at most."""
        if self.lower_bound_dollars is None or self.dollars <= 0:
            return None
        return max(self.dollars - self.lower_bound_dollars, 0.0) / self.dollars


@dataclass(frozen=True)
class Advice:
    """Commitment advice for every term, from one history."""

    start: dt.datetime
    hours: int
    regions: tuple[str, ...]
    fall: float
    terms: tuple[TermAdvice, ...]
    hours_without_data: Mapping[str, int]
    seconds: float


def check_terms(sizing: BlendProblem, terms: Sequence[Term]) -> None:
    """Every term names GPU classes and regions the pool offers, once each, at a price."""
    names = [t.name for t in terms]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AdviceError(f"term(s) given more than once: {', '.join(twice)}")
    offered = {(o.gpu_class, o.region) for o in sizing.offers}
    for term in terms:
        for gpu_class, region in term.prices:
            if (gpu_class, region) not in offered:
                raise AdviceError(
                    f"term {term.name}: the pool does not offer GPU class {gpu_class!r} in region {region!r}"
                )
        if not term.prices:
            raise AdviceError(f"term {term.name}: no price for any GPU class and region")


def advise(
    sizing: BlendProblem,
    history: History,
    terms: Sequence[Term],
    clock: Callable[[], float],
    time_limit_seconds: float,
    fall: float = DEMAND_FALL,
) -> Advice:
    """Advice for each term on ``sizing`` (from ``sizing_problem``).

    The search for better commitments stops within ``time_limit_seconds`` on ``clock``; the
    costings the report needs (holding none, the advice, the fall in demand) always run.
    """
    started = clock()
    if not terms:
        raise AdviceError("no commitment term is offered: the pool gives no committed price and no term was given")
    check_terms(sizing, terms)
    reasons = blend.validate(sizing)
    if reasons:
        raise AdviceError("; ".join(reasons))
    if not 0 <= fall < 1:
        raise AdviceError(f"the demand fall must be in [0, 1), not {fall}")
    sizing = dataclasses.replace(
        sizing, solver=dataclasses.replace(sizing.solver, relative_gap=min(sizing.solver.relative_gap, COSTING_GAP))
    )
    # Once bought, a commitment costs nothing at the margin: what else runs in each hour depends
    # on how many committed nodes are held, not on their price. So one costing serves every term.
    costing = _Costing(sizing, clock)
    fall_costing = _Costing(dataclasses.replace(sizing, demand=history.scaled(1 - fall).demand), clock)
    advised = []
    for k, term in enumerate(terms):
        left = max(time_limit_seconds - (clock() - started), 0.0)
        search = Deadline(clock, left * SEARCH_SHARE / (len(terms) - k))
        advised.append(_advise_term(term, costing, fall_costing, search))
    return Advice(
        start=history.start,
        hours=history.hours,
        regions=sizing.regions,
        fall=fall,
        terms=tuple(advised),
        hours_without_data=dict(history.hours_without_data),
        seconds=clock() - started,
    )


def _priced(sizing: BlendProblem, term: Term) -> BlendProblem:
    """``sizing`` with the committed offers at the term's prices; classes and regions it does not price have none."""
    offers = []
    for o in sizing.offers:
        if o.capacity_type is CapacityType.COMMITTED:
            price = term.prices.get((o.gpu_class, o.region))
            if price is None:
                continue
            o = dataclasses.replace(o, dollars_per_gpu_hour=price)
        offers.append(o)
    return dataclasses.replace(sizing, offers=tuple(offers))


class _Costing:
    """Costs commitments held over every hour of a problem, exactly, and remembers each answer.

    ``held`` gives the committed nodes of every committed offer of the sizing problem, in order.
    What the hours spend beyond the commitments is remembered per ``held``; the commitments'
    own cost is added at each term's prices.
    """

    def __init__(self, sizing: BlendProblem, clock: Callable[[], float]) -> None:
        self.sizing = sizing
        self.clock = clock
        self.committed = tuple(i for i, o in enumerate(sizing.offers) if o.capacity_type is CapacityType.COMMITTED)
        self.known: dict[Held, tuple[float, NodeCounts]] = {}

    def holding(self, held: Held) -> BlendProblem:
        """The problem in Operate mode with ``held`` committed nodes per committed offer, bought at no cost."""
        counts = dict(zip(self.committed, held, strict=True))
        offers = tuple(
            dataclasses.replace(
                o,
                committed_nodes=counts[i],
                committed_gpus=counts[i] * o.gpus_per_node,
                dollars_per_gpu_hour=0.0,
            )
            if o.capacity_type is CapacityType.COMMITTED
            else o
            for i, o in enumerate(self.sizing.offers)
        )
        return dataclasses.replace(self.sizing, offers=offers, size_commitments=False)

    def commitment_dollars(self, held: Held, term: Term) -> float:
        """What holding ``held`` costs over the hours at the term's prices."""
        total = 0.0
        for i, nodes in zip(self.committed, held, strict=True):
            if nodes:
                o = self.sizing.offers[i]
                total += nodes * o.gpus_per_node * term.prices[(o.gpu_class, o.region)] * self.sizing.horizon
        return total

    def dollars(self, held: Held, term: Term) -> float:
        """Total cost over the hours holding ``held`` bought at the term's prices."""
        return self.plan(held)[0] + self.commitment_dollars(held, term)

    def plan(self, held: Held) -> tuple[float, NodeCounts]:
        """What the hours spend beyond the commitments holding ``held``, and node counts per (offer, hour)."""
        if held not in self.known:
            operate = self.holding(held)
            results = hourly.solve_hours(operate, Deadline(self.clock, REPORT_SECONDS), (CHANGES,))
            status = coupled.status_of(results.values())
            if status is SolveStatus.INFEASIBLE:
                failed = next(r for r in results.values() if r.status is SolveStatus.INFEASIBLE)
                raise AdviceError(f"the pool cannot serve the history: {failed.message}")
            if status is SolveStatus.ERROR:
                raise AdviceError(f"costing {len(operate.hours)} hours took over {REPORT_SECONDS:g} s")
            nodes = {key: n for r in results.values() for key, n in r.nodes.items()}
            self.known[held] = (coupled.objective(operate, nodes, {}), nodes)
        return self.known[held]


def _price_ratio_holds(
    sizing: BlendProblem, committed: Sequence[int], by_hour: Mapping[tuple[int, ...], BlockResult]
) -> dict[int, int]:
    """Per committed offer, the count the hours use in more than (term price / on-demand price) of them."""
    holds = {}
    for i in committed:
        o = sizing.offers[i]
        used = sorted(r.nodes.get((i, hour), 0) for (hour,), r in by_hour.items())
        share = min(o.dollars_per_gpu_hour / on_demand_price(sizing, o), 1.0)
        index = min(math.floor((1 - share) * len(used)), len(used) - 1)
        holds[i] = used[index] if used else 0
    return holds


def on_demand_price(sizing: BlendProblem, offer: Offer) -> float:
    """The on-demand price per GPU-hour of ``offer``'s class in its region (infinite if none)."""
    return next(
        (
            o.dollars_per_gpu_hour
            for o in sizing.offers
            if o.capacity_type is CapacityType.ON_DEMAND and (o.gpu_class, o.region) == (offer.gpu_class, offer.region)
        ),
        math.inf,
    )


def _advise_term(term: Term, costing: _Costing, fall_costing: _Costing, search: Deadline) -> TermAdvice:
    sizing, committed = costing.sizing, costing.committed
    offers = sizing.offers
    movable = [j for j, i in enumerate(committed) if (offers[i].gpu_class, offers[i].region) in term.prices]
    zeros: Held = (0,) * len(committed)
    tried: set[Held] = set()

    def cost(held: Held) -> float:
        tried.add(held)
        return costing.dollars(held, term)

    priced = _priced(sizing, term)
    by_hour = hourly.solve_hours(priced, search.part(RELAXATION_SHARE), (CHANGES,))
    relaxed = coupled.status_of(by_hour.values()) in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
    bound = coupled.lower_bound(priced, by_hour.values()) if relaxed else None
    best = zeros
    if relaxed:
        # The priced problem's committed offers, in order, are those of the movable coordinates.
        ratio = _price_ratio_holds(
            priced, [i for i, o in enumerate(priced.offers) if o.capacity_type is CapacityType.COMMITTED], by_hour
        )
        start = list(zeros)
        for j, count in zip(movable, ratio.values(), strict=True):
            start[j] = count
        if cost(tuple(start)) < cost(best):
            best = tuple(start)
    improved = True
    finished = relaxed
    while improved and not search.expired():
        improved = False
        for j in movable:
            for step in (1, -1):
                candidate = (*best[:j], best[j] + step, *best[j + 1 :])
                if candidate[j] < 0 or search.expired():
                    continue
                if cost(candidate) < cost(best) - IMPROVEMENT_DOLLARS:
                    best, improved = candidate, True
                    break
            if improved:
                break
        else:
            finished = finished and not search.expired()
    dollars = costing.dollars(best, term)
    nodes = costing.plan(best)[1]
    rows = []
    for j, i in enumerate(committed):
        if best[j] == 0:
            continue
        o = offers[i]
        price = term.prices[(o.gpu_class, o.region)]
        without = (*best[:j], 0, *best[j + 1 :])
        used = sum(min(nodes.get((i, t), 0), best[j]) for t in range(sizing.horizon))
        on_demand = on_demand_price(sizing, o)
        rows.append(
            Commitment(
                gpu_class=o.gpu_class,
                region=o.region,
                gpus=best[j] * o.gpus_per_node,
                dollars_per_gpu_hour=price,
                on_demand_dollars_per_gpu_hour=on_demand,
                break_even_ratio=price / on_demand,
                utilisation_ratio=used / (best[j] * sizing.horizon) if sizing.horizon else None,
                saving_dollars=costing.dollars(without, term) - dollars,
            )
        )
    return TermAdvice(
        term=term.name,
        commitments=tuple(rows),
        dollars=dollars,
        none_dollars=costing.dollars(zeros, term),
        fall_dollars=fall_costing.dollars(best, term),
        fall_none_dollars=fall_costing.dollars(zeros, term),
        lower_bound_dollars=bound,
        searched=len(tried),
        finished=finished and not improved,
    )
