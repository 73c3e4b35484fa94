"""Plans a horizon whose hours are coupled, within a deadline, never far from a plan anyone could write.

A node-change cap, a change penalty or commitment sizing couple the hours. Solving the whole
horizon as one MILP can stall for minutes on a week of a large pool, so this module:

1. solves every hour on its own without the coupling (fast, and a proven lower bound);
2. builds plans that keep every constraint from those hours: the hourly plans themselves (with a
   penalty only), each hour re-planned from the one before (cap and penalty), a constant plan for
   the horizon's peak (cap), and, when sizing, the commitments held now and the commitments that
   the hourly plans would use often enough to pay for themselves (price ratio);
3. improves the best of them: the whole horizon as one MILP seeded with it when the model is small,
   otherwise windows of a few hours re-planned with their neighbours fixed, until the deadline.

No plan keeps more nodes of an offer than it can run, not even nodes running now above a
commitment (each one removed is a change like any other); when those removals alone break the cap in
the first hour, the pool is infeasible, and the message says which nodes.

It returns the best plan found, its proven lower bound, and what holding only today's commitments
would cost (so sizing never recommends a change that saves nothing). Called by ``core.blend``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sunblend.api.spec import CapacityType
from sunblend.core import hourly
from sunblend.core.changes import node_changes, penalty_dollars
from sunblend.core.deadline import Deadline
from sunblend.core.model import CHANGES, BlockResult, NodeCounts, build, extract, solve
from sunblend.core.plan import SolveStatus
from sunblend.core.problem import BlendProblem, OfferKey

# Integer variables up to which the whole horizon is solved as one MILP, seeded with the best plan.
WHOLE_HORIZON_INTEGERS = 3000
# Shares of the time left for the hourly relaxation and for each plan built from it; the rest
# goes to improving the best plan.
HOURLY_SHARE = 0.3
CANDIDATE_SHARE = 0.25
# Integer variables in one window of hours re-planned with its neighbours fixed.
WINDOW_INTEGERS = 400

Routed = Mapping[tuple[str, str, int], float]
Hours = tuple[dict[tuple[int, int], int], dict[tuple[str, str, int], float]]  # node counts and routes


@dataclass(frozen=True)
class Found:
    """The best plan found for the horizon, or why there is none."""

    status: SolveStatus
    nodes: NodeCounts | None = None
    routed: Routed = field(default_factory=dict)
    committed: Mapping[int, int] = field(default_factory=dict)  # offer -> nodes to hold (sizing)
    bound: float | None = None  # proven lower bound on the objective, dollars over the horizon
    gap: float | None = None
    message: str = ""
    binding: tuple[str, ...] = ()
    held_only_dollars: float | None = None  # sizing: the objective when holding only today's commitments

    @classmethod
    def of_blocks(
        cls, problem: BlendProblem, results: Mapping[tuple[int, ...], BlockResult], bound: float | None
    ) -> Found:
        """Merge the blocks' results into one horizon."""
        status = status_of(results.values())
        if status is SolveStatus.INFEASIBLE:
            message = next(r.message for r in results.values() if r.status is SolveStatus.INFEASIBLE)
            return cls(status, message=message)
        if status is SolveStatus.ERROR:
            return cls(status)
        nodes: dict[tuple[int, int], int] = {}
        routed: dict[tuple[str, str, int], float] = {}
        committed: dict[int, int] = {}
        for result in results.values():
            nodes.update(result.nodes)
            routed.update(result.routed)
            committed.update(result.committed)
        gaps = [r.gap for r in results.values() if r.gap is not None]
        first = results[min(results)]
        return cls(
            status,
            nodes,
            routed,
            committed,
            bound,
            max(gaps) if gaps else None,
            f"{len(results)} block(s)",
            first.binding,
        )


def status_of(results: Iterable[BlockResult]) -> SolveStatus:
    """The worst status among blocks."""
    statuses = {r.status for r in results}
    for worst in (SolveStatus.ERROR, SolveStatus.INFEASIBLE, SolveStatus.FEASIBLE):
        if worst in statuses:
            return worst
    return SolveStatus.OPTIMAL


def objective(problem: BlendProblem, nodes: NodeCounts, committed: Mapping[int, int]) -> float:
    """The planner's objective in dollars over the horizon: costs (sunk included) plus the change penalty."""
    total = problem.horizon * problem.constant_dollars_per_hour
    for (i, _), n in nodes.items():
        o = problem.offers[i]
        if o.capacity_type is not CapacityType.COMMITTED:
            total += n * o.dollars_per_node_hour
        elif i not in committed and o.partial_node_dollars_per_hour > 0 and n >= o.committed_nodes:
            total += o.partial_node_dollars_per_hour
    for i, held in committed.items():
        total += held * problem.offers[i].dollars_per_node_hour * problem.horizon
    return total + penalty_dollars(problem, nodes)


def _keeps_cap(problem: BlendProblem, nodes: NodeCounts) -> bool:
    cap = problem.max_node_changes_per_hour
    return cap is None or all(node_changes(problem, nodes, t) <= cap for t in range(problem.horizon))


def node_limit(problem: BlendProblem, i: int, held: Mapping[int, int] | None = None) -> int | None:
    """Nodes of offer ``i`` a plan may run in any hour: what can be had and, for committed nodes, what is held.

    ``held`` is the committed nodes to hold, when sizing (then a committed offer without an entry
    is limited only by what can be had). None: no limit.
    """
    o = problem.offers[i]
    limits = [] if o.max_nodes is None else [o.max_nodes]
    if o.capacity_type is CapacityType.COMMITTED:
        if not problem.size_commitments:
            limits.append(o.committed_nodes)
        elif held is not None and i in held:
            limits.append(held[i])
    return min(limits) if limits else None


def _within_limits(problem: BlendProblem, nodes: NodeCounts, held: Mapping[int, int]) -> bool:
    for (i, _), n in nodes.items():
        limit = node_limit(problem, i, held)
        if limit is not None and n > limit:
            return False
    return True


def forced_removals(problem: BlendProblem) -> dict[int, int]:
    """Offer -> nodes running now above what any plan may run of it: removed going into the first hour.

    Every plan removes them, so they count against the cap and the penalty whatever it decides.
    Empty when the current nodes are not known.
    """
    forced = {}
    for i, o in enumerate(problem.offers):
        running = problem.current_nodes.get(o.key, 0)
        limit = node_limit(problem, i)
        if limit is not None and running > limit:
            forced[i] = running - limit
    return forced


@dataclass
class _Best:
    """The best plan so far and its objective."""

    problem: BlendProblem
    nodes: dict[tuple[int, int], int] | None = None
    routed: dict[tuple[str, str, int], float] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    dollars: float = math.inf
    how: str = ""

    def offer(self, nodes: NodeCounts, routed: Routed, committed: Mapping[int, int], how: str) -> None:
        """Keep this plan if it plans every hour, keeps the cap and beats the best so far."""
        if {t for _, t in nodes} != set(range(self.problem.horizon)) or not _keeps_cap(self.problem, nodes):
            return
        if not _within_limits(self.problem, nodes, committed):
            return  # more nodes of an offer than it can run: e.g. current nodes above the commitment, kept
        dollars = objective(self.problem, nodes, committed)
        if dollars < self.dollars - 1e-9:
            self.nodes, self.routed, self.committed = dict(nodes), dict(routed), dict(committed)
            self.dollars, self.how = dollars, how


def _holding(problem: BlendProblem, held: Mapping[int, int]) -> BlendProblem:
    """The problem in Operate mode with ``held`` committed nodes, as if already bought."""
    offers = tuple(
        dataclasses.replace(o, committed_nodes=held[i], committed_gpus=held[i] * o.gpus_per_node) if i in held else o
        for i, o in enumerate(problem.offers)
    )
    return dataclasses.replace(problem, offers=offers, size_commitments=False)


def _merge(
    results: Mapping[tuple[int, ...], BlockResult],
) -> tuple[dict[tuple[int, int], int], dict[tuple[str, str, int], float]]:
    nodes: dict[tuple[int, int], int] = {}
    routed: dict[tuple[str, str, int], float] = {}
    for result in results.values():
        nodes.update(result.nodes)
        routed.update(result.routed)
    return nodes, routed


def _by_key(problem: BlendProblem, nodes: NodeCounts, hour: int) -> dict[OfferKey, int]:
    return {o.key: nodes.get((i, hour), 0) for i, o in enumerate(problem.offers)}


def _shifted(result: BlockResult, offset: int) -> Hours:
    nodes = {(i, t + offset): n for (i, t), n in result.nodes.items()}
    routed = {(u, s, t + offset): y for (u, s, t), y in result.routed.items()}
    return nodes, routed


def rolling(
    problem: BlendProblem, deadline: Deadline
) -> tuple[dict[tuple[int, int], int], dict[tuple[str, str, int], float]] | None:
    """Each hour planned with the coupling rows against the hour before it, fixed; None if an hour cannot be."""
    nodes: dict[tuple[int, int], int] = {}
    routed: dict[tuple[str, str, int], float] = {}
    for t in range(problem.horizon):
        if deadline.expired():
            return None
        before = None if t == 0 else _by_key(problem, nodes, t - 1)
        hour = problem.window(t, t + 1, before)
        result = hourly.solve_hour(hour, 0, (), deadline.share(2 * (problem.horizon - t)), deadline)
        if result.status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            return None
        more_nodes, more_routed = _shifted(result, t)
        nodes.update(more_nodes)
        routed.update(more_routed)
    return nodes, routed


def constant(
    problem: BlendProblem, deadline: Deadline
) -> tuple[dict[tuple[int, int], int], dict[tuple[str, str, int], float]] | None:
    """One plan for every hour, sized for each region's peak over the horizon; None if there is none."""
    peak = {r: (max(d),) for r, d in problem.demand.items()}
    envelope = dataclasses.replace(problem.window(0, 1, None), demand=peak)
    model = build(envelope, (0,))
    status = solve(envelope, model, deadline.share(2))
    if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return None
    shape = extract(envelope, model, status).nodes
    nodes = {(i, t): n for (i, _), n in shape.items() for t in range(problem.horizon)}
    # Route each hour as the peak plan would, scaled to that hour's demand.
    routed: dict[tuple[str, str, int], float] = {}
    flows = extract(envelope, model, status).routed
    for (user, server, _), y in flows.items():
        for t in range(problem.horizon):
            top = peak[user][0]
            routed[(user, server, t)] = y * (problem.demand[user][t] / top if top > 0 else 0.0)
    return nodes, routed


def ramped(problem: BlendProblem, by_hour: Mapping[tuple[int, ...], BlockResult]) -> Hours | None:
    """The hourly plans, reached within the cap: nodes added early, removed late, one change at a time.

    Backward, an hour that would add more nodes than the cap allows has the hour before start
    adding them. Forward from the nodes running now, each hour first adds what its regions need
    to serve the demand its hourly plan routes there (capacity, spot loss, replicas), then spends
    what is left of the cap moving toward its hourly plan, removing the dearest surplus first.
    Every hour keeps its rows with its hourly plan's routes. None if an hour cannot be served
    within the cap, or goes over budget.
    """
    cap = problem.max_node_changes_per_hour
    if cap is None or status_of(by_hour.values()) not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return None
    horizon, count = problem.horizon, len(problem.offers)
    target = [[by_hour[(t,)].nodes.get((i, t), 0) for i in range(count)] for t in range(horizon)]
    cheap = sorted(range(count), key=lambda i: problem.offers[i].dollars_per_node_hour)
    for t in range(horizon - 2, -1, -1):  # add early
        while _moves(target[t], target[t + 1]) > cap:
            grow = next((i for i in cheap if target[t + 1][i] > target[t][i] and _may_add(problem, target[t], i)), None)
            if grow is None:
                break
            target[t][grow] += 1
    served = [_served(by_hour[(t,)], t) for t in range(horizon)]
    before = [problem.current_nodes.get(o.key, 0) for o in problem.offers] if problem.current_nodes else None
    plan: dict[tuple[int, int], int] = {}
    for t in range(horizon):
        stepped = list(target[t]) if before is None else _step_toward(problem, before, target[t], served[t], cap, cheap)
        if stepped is None:
            return None
        now = stepped
        if not _within_budget(problem, now):
            return None
        plan.update({(i, t): n for i, n in enumerate(now)})
        before = now
    routed = {key: y for result in by_hour.values() for key, y in result.routed.items()}
    return plan, routed


def _served(result: BlockResult, t: int) -> dict[str, float]:
    load: dict[str, float] = {}
    for (_, server, hour), y in result.routed.items():
        if hour == t:
            load[server] = load.get(server, 0.0) + y
    return load


def _step_toward(
    problem: BlendProblem,
    before: list[int],
    target: list[int],
    served: Mapping[str, float],
    cap: int,
    cheap: list[int],
) -> list[int] | None:
    """One hour's nodes: at most ``cap`` changes from ``before``, serving ``served``, toward ``target``.

    Nodes in ``before`` above what their offer can run (more committed nodes than the commitment
    runs, more than can be had) are removed first; they count against the cap like any change.
    """
    now = list(before)
    moves = 0
    for i in range(len(now)):
        limit = node_limit(problem, i)
        if limit is not None and now[i] > limit:
            moves += now[i] - limit
            now[i] = limit
    if moves > cap:
        return None
    for region in problem.regions:
        while not _region_serves(problem, now, region, served.get(region, 0.0)):
            grow = next(
                (
                    i
                    for i in cheap
                    if problem.offers[i].region == region and now[i] < target[i] and _may_add(problem, now, i)
                ),
                None,
            )
            if grow is None:
                grow = next(
                    (
                        i
                        for i in cheap
                        if problem.offers[i].region == region
                        and problem.offers[i].capacity_type is CapacityType.ON_DEMAND
                        and _may_add(problem, now, i)
                    ),
                    None,
                )
            if grow is None or moves >= cap:
                return None
            now[grow] += 1
            moves += 1
    dear = list(reversed(cheap))
    while moves < cap:
        drop = next(
            (i for i in dear if now[i] > target[i] and _still_serves(problem, now, i, served)),
            None,
        )
        if drop is not None:
            now[drop] -= 1
            moves += 1
            continue
        grow = next((i for i in cheap if now[i] < target[i] and _may_add(problem, now, i)), None)
        if grow is None:
            break
        now[grow] += 1
        moves += 1
    return now


def _still_serves(problem: BlendProblem, now: list[int], i: int, served: Mapping[str, float]) -> bool:
    region = problem.offers[i].region
    now[i] -= 1
    ok = _region_serves(problem, now, region, served.get(region, 0.0))
    now[i] += 1
    return ok


def _region_serves(problem: BlendProblem, now: list[int], region: str, load: float) -> bool:
    """Whether ``region``'s nodes keep its rows for ``load`` tokens/s routed there."""
    in_region = [i for i, o in enumerate(problem.offers) if o.region == region]
    if not in_region:
        return True
    offers = problem.offers
    capacity = sum(now[i] * offers[i].tokens_per_second_per_node for i in in_region)
    steady = sum(
        now[i] * offers[i].tokens_per_second_per_node
        for i in in_region
        if offers[i].capacity_type is not CapacityType.SPOT
    )
    replicas = sum(now[i] * offers[i].replicas_per_node for i in in_region)
    gpus = sum(now[i] * offers[i].gpus_per_node for i in in_region)
    spot = sum(now[i] * offers[i].gpus_per_node for i in in_region if offers[i].capacity_type is CapacityType.SPOT)
    return (
        capacity >= (1 + problem.headroom) * load - 1e-6
        and steady >= problem.spot_loss_served_fraction * load - 1e-6
        and replicas >= problem.min_replicas_per_region
        and spot <= problem.max_spot_fraction * gpus + 1e-9
    )


def _within_budget(problem: BlendProblem, now: list[int]) -> bool:
    if problem.budget_dollars_per_hour is None:
        return True
    spend = sum(
        n * o.dollars_per_node_hour
        for n, o in zip(now, problem.offers, strict=True)
        if o.capacity_type is not CapacityType.COMMITTED
    )
    spend += sum(
        o.partial_node_dollars_per_hour
        for n, o in zip(now, problem.offers, strict=True)
        if o.capacity_type is CapacityType.COMMITTED and o.partial_node_dollars_per_hour > 0 and n >= o.committed_nodes
    )
    return spend + problem.constant_dollars_per_hour <= problem.budget_dollars_per_hour + 1e-6


def _moves(before: list[int], after: list[int]) -> int:
    return sum(abs(a - b) for a, b in zip(before, after, strict=True))


def _may_add(problem: BlendProblem, counts: list[int], i: int) -> bool:
    """Whether one more node of offer ``i`` keeps its region's spot share and what can be had."""
    o = problem.offers[i]
    if o.max_nodes is not None and counts[i] + 1 > o.max_nodes:
        return False
    if o.capacity_type is CapacityType.COMMITTED:
        return counts[i] + 1 <= o.committed_nodes
    if o.capacity_type is not CapacityType.SPOT:
        return True
    in_region = [j for j, other in enumerate(problem.offers) if other.region == o.region]
    gpus = sum(counts[j] * problem.offers[j].gpus_per_node for j in in_region) + o.gpus_per_node
    spot = sum(
        counts[j] * problem.offers[j].gpus_per_node
        for j in in_region
        if problem.offers[j].capacity_type is CapacityType.SPOT
    )
    return spot + o.gpus_per_node <= problem.max_spot_fraction * gpus + 1e-9


def _price_ratio_holds(problem: BlendProblem, by_hour: Mapping[tuple[int, ...], BlockResult]) -> dict[int, int]:
    """Commitments the hourly plans use often enough to pay for: hold h if used in over p_c / p_od of hours."""
    holds = {}
    for i, o in enumerate(problem.offers):
        if o.capacity_type is not CapacityType.COMMITTED:
            continue
        on_demand = next(
            (
                other.dollars_per_gpu_hour
                for other in problem.offers
                if other.capacity_type is CapacityType.ON_DEMAND
                and (other.region, other.gpu_class) == (o.region, o.gpu_class)
            ),
            None,
        )
        used = sorted(r.committed.get(i, 0) for r in by_hour.values())
        if not used or on_demand is None or on_demand <= 0:
            holds[i] = o.committed_nodes
            continue
        share = min(o.dollars_per_gpu_hour / on_demand, 1.0)  # of hours a held node must be used in
        index = min(math.floor((1 - share) * len(used)), len(used) - 1)
        holds[i] = max(used[index], o.committed_nodes)
    return holds


def _candidates(
    problem: BlendProblem, deadline: Deadline, by_hour: Mapping[tuple[int, ...], BlockResult]
) -> tuple[_Best, float | None]:
    """Plans that keep every constraint, built from the hourly relaxation; and what holding today's costs."""
    best = _Best(problem)
    if not problem.size_commitments:
        if status_of(by_hour.values()) in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            nodes, routed = _merge(by_hour)
            best.offer(nodes, routed, {}, "the hourly plans")
        ramp = ramped(problem, by_hour)
        if ramp is not None:
            best.offer(*ramp, {}, "the hourly plans with nodes added early and removed late to keep the cap")
        for nodes, routed in _operate_plans(problem, deadline, hours_alone=False):
            best.offer(nodes, routed, {}, "each hour planned from the one before")
        return best, None
    today = {i: o.committed_nodes for i, o in enumerate(problem.offers) if o.capacity_type is CapacityType.COMMITTED}
    held_only: float | None = None
    choices = [
        ("the commitments held now", today),
        ("commitments the hourly plans use often enough to pay for", _price_ratio_holds(problem, by_hour)),
    ]
    for how, held in choices:
        if how != choices[0][0] and held == today:
            continue
        for nodes, routed in _operate_plans(_holding(problem, held), deadline, hours_alone=True):
            best.offer(nodes, routed, held, how)
            if held == today and _keeps_cap(problem, nodes):
                dollars = objective(problem, nodes, held)
                held_only = dollars if held_only is None else min(held_only, dollars)
    return best, held_only


def _operate_plans(problem: BlendProblem, deadline: Deadline, hours_alone: bool) -> list[Hours]:
    """Plans with fixed commitments: hour by hour (when nothing else couples), rolling, or constant."""
    plans = []
    if hours_alone and problem.max_node_changes_per_hour is None and problem.change_penalty_dollars_per_node == 0:
        results = hourly.solve_hours(problem, deadline.part(CANDIDATE_SHARE), ())
        if status_of(results.values()) in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            plans.append(_merge(results))
        return plans
    if hours_alone:
        results = hourly.solve_hours(problem, deadline.part(CANDIDATE_SHARE), (CHANGES,))
        if status_of(results.values()) in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            plans.append(_merge(results))
    found = rolling(problem, deadline)
    if found is not None:
        plans.append(found)
    if problem.max_node_changes_per_hour is not None:
        steady = constant(problem, deadline)
        if steady is not None:
            plans.append(steady)
    return plans


def _integers(problem: BlendProblem, hours: int) -> int:
    return len(problem.offers) * hours


def _whole(problem: BlendProblem, deadline: Deadline, best: _Best) -> tuple[SolveStatus, float | None]:
    """Solve the whole horizon as one MILP seeded with the best plan; keep what it finds. Its status and bound."""
    model = build(problem, tuple(range(problem.horizon)))
    status = solve(problem, model, deadline.remaining(), start=best.nodes, held=best.committed or None)
    if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return status, None
    result = extract(problem, model, status)
    best.offer(result.nodes, result.routed, result.committed, "the whole horizon as one MILP")
    if model.bound is None:
        return status, None
    return status, model.bound + problem.horizon * problem.constant_dollars_per_hour


def _windows(problem: BlendProblem, deadline: Deadline, best: _Best) -> None:
    """Re-plan windows of a few hours with their neighbours fixed, keeping each improvement, until the deadline."""
    assert best.nodes is not None
    operate = _holding(problem, best.committed) if best.committed else problem
    width = max(2, min(problem.horizon, WINDOW_INTEGERS // max(len(problem.offers), 1)))
    offset = 0
    improved = True
    while improved and not deadline.expired():
        improved = False
        starts = list(range(offset, problem.horizon, width))
        if offset:
            starts.insert(0, 0)
        for k, start in enumerate(starts):
            stop = min(starts[k + 1] if k + 1 < len(starts) else problem.horizon, problem.horizon)
            if deadline.expired() or stop <= start:
                break
            before = None if start == 0 else _by_key(problem, best.nodes, start - 1)
            last = min(stop + 1, problem.horizon)  # the hour after the window, fixed, so changes into it count
            window = operate.window(start, last, before)
            fixed = {(i, last - 1 - start): best.nodes.get((i, last - 1), 0) for i in range(len(problem.offers))}
            if last == stop:
                fixed = {}
            hours = tuple(range(last - start))
            seed = {(i, t - start): n for (i, t), n in best.nodes.items() if start <= t < last}
            model = build(window, hours, fixed=fixed)
            status = solve(window, model, deadline.share(len(starts) - k), start=seed)
            if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
                continue
            nodes, routed = _shifted(extract(window, model, status), start)
            candidate = {**best.nodes, **nodes}
            candidate_routes = {**best.routed, **routed}
            before_dollars = best.dollars
            best.offer(candidate, candidate_routes, best.committed, best.how + ", improved window by window")
            improved = improved or best.dollars < before_dollars - 1e-6
        offset = width // 2 if offset == 0 else 0


def monolithic(problem: BlendProblem, deadline: Deadline) -> Found:
    """The whole horizon as one MILP with nothing to start from: the benchmark's baseline."""
    hours = tuple(range(problem.horizon))
    model = build(problem, hours)
    status = solve(problem, model, deadline.remaining())
    result = extract(problem, model, status)
    if status is SolveStatus.INFEASIBLE:
        return Found(status, message="infeasible over the horizon")
    if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return Found(status)
    bound = None if model.bound is None else model.bound + problem.horizon * problem.constant_dollars_per_hour
    return Found(status, result.nodes, result.routed, result.committed, bound, model.gap, "1 block", result.binding)


def plan_horizon(problem: BlendProblem, deadline: Deadline) -> Found:
    """The best plan for a coupled horizon found before the deadline, with its proven lower bound."""
    cap = problem.max_node_changes_per_hour
    forced = forced_removals(problem)
    if cap is not None and sum(forced.values()) > cap:
        return Found(SolveStatus.INFEASIBLE, message=_forced_message(problem, forced))
    by_hour = hourly.solve_hours(problem, deadline.part(HOURLY_SHARE), (CHANGES,))
    status = status_of(by_hour.values())
    if status is SolveStatus.INFEASIBLE:
        return Found.of_blocks(problem, by_hour, None)  # the hours alone relax the whole: it is infeasible too
    bound = lower_bound(problem, by_hour.values())
    first = by_hour.get((0,))
    binding = first.binding if first is not None else ()
    if (
        status is SolveStatus.OPTIMAL
        and not problem.size_commitments
        and problem.change_penalty_dollars_per_node == 0
        and _keeps_cap(problem, _merge(by_hour)[0])
    ):
        return Found.of_blocks(problem, by_hour, bound)  # the relaxation's optimum keeps the cap: optimal
    best, held_only = _candidates(problem, deadline, by_hour)
    whole_status, whole_bound = SolveStatus.ERROR, None
    small = _integers(problem, problem.horizon) <= WHOLE_HORIZON_INTEGERS
    if small and not deadline.expired():
        whole_status, whole_bound = _whole(problem, deadline, best)
    elif best.nodes is not None:
        _windows(problem, deadline, best)
    if best.nodes is None:
        if whole_status is SolveStatus.INFEASIBLE:
            return Found(whole_status, message=_cap_message(problem))
        return Found(SolveStatus.ERROR)
    bounds = [b for b in (bound, whole_bound) if b is not None]
    proven = max(bounds) if bounds else None
    how = best.how
    if problem.size_commitments and held_only is not None and best.dollars >= held_only - 1e-6:
        how = "holding the commitments held now is cheapest: no change to them saves money"
    return Found(
        SolveStatus.FEASIBLE,
        best.nodes,
        best.routed,
        best.committed,
        proven,
        None,
        f"coupled horizon: {how}",
        binding,
        held_only,
    )


def _cap_message(problem: BlendProblem) -> str:
    return (
        f"maxNodeChangesPerHour {problem.max_node_changes_per_hour} is too low to follow demand "
        f"from the current nodes within {problem.horizon} hour(s)"
    )


def _forced_message(problem: BlendProblem, forced: Mapping[int, int]) -> str:
    """Why the first hour breaks the cap whatever the plan: the current nodes above their offers' limits."""
    reasons = []
    for i, extra in forced.items():
        o = problem.offers[i]
        running = problem.current_nodes.get(o.key, 0)
        limit = running - extra
        if o.capacity_type is CapacityType.COMMITTED and limit == o.committed_nodes:
            why = f"its commitment ({o.held_gpus} GPU{'' if o.held_gpus == 1 else 's'}) can run only {limit}"
        else:
            why = f"only {limit} can be had"
        reasons.append(f"{running} {o.capacity_type.value} {o.gpu_class} nodes run in {o.region} but {why}")
    total = sum(forced.values())
    return (
        f"maxNodeChangesPerHour {problem.max_node_changes_per_hour} is too low: {'; '.join(reasons)}; "
        f"removing the {total} node(s) above that takes {total} node change(s) in the first hour"
    )


def lower_bound(problem: BlendProblem, results: Iterable[BlockResult]) -> float | None:
    """A proven lower bound on the horizon's objective from per-hour bounds (a relaxation of any coupling)."""
    bounds = [r.bound for r in results]
    if not bounds or any(b is None for b in bounds):
        return None
    return sum(b for b in bounds if b is not None) + problem.horizon * problem.constant_dollars_per_hour
