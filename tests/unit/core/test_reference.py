"""The planner against an independent reference MILP written from the README's formulation.

The reference (``reference`` below) reads only the pool spec (``sunblend.api``) and the declared
forecast (``core.forecast``: inputs, not the optimiser). It never touches ``core.problem``,
``core.blend``, ``core.greedy`` or ``core.assemble``, so a mistake shared by the planner's modules
cannot hide in it. It is one plain PuLP model over the whole horizon, solved by HiGHS to proven
optimality (relative and absolute gap 0), with no tie-break.

What it models, rule by rule (hour ``t``, region ``r``; nodes are non-negative integers):
- Offers: a GPU class listed in a region (no ``regions`` list: every region) offers on-demand,
  spot where a spot price is given, and committed nodes where commitments are held (or, in
  ``SizeCommitments``, where a committed price is given). A ``regionPrices`` entry overrides the
  class's prices field by field; a missing field falls back to the class's.
- Routing: each user region's demand is routed in full; self-routes always; ``u -> s`` when the
  entry ``(u, s)`` is within ``maxLatencyMs``, or when there is no ``(u, s)`` entry and ``(s, u)``
  is within it (symmetric unless the reverse is listed); ``maxLatencyMs: 0`` is local only.
- Capacity: nodes x replicas per node x tokens/s per replica >= (1 + headroom) x demand routed to r.
- Spot share: spot GPUs <= maxSpotFraction x all GPUs in r. Spot loss: non-spot capacity >=
  spotLossServedFraction x demand routed to r (no headroom). Min replicas in every region
  where some class is listed.
- Commitments: G GPUs of class c (n GPUs a node, committed price p, on-demand price o) in r cost
  G x p every hour, used or not; up to ceil(G / n) nodes are usable; a partial node (beyond
  floor(G / n)) costs (n - G mod n) x o more while it runs. A commitment in a region the class
  does not list is paid and gives no nodes. (The loader requires a held commitment's price;
  were one missing, the reference would count it $0.)
- SizeCommitments: per (region, class) with a committed price, an integer ``held`` >= ceil(G / n)
  (the property test draws whole-node commitments only, where floor and ceil agree), costing
  held x n x p every hour; committed nodes <= held.
- Budget: every dollar of the hour (sunk, held, spot, on-demand, uncovered GPUs) <= budget.
- Changes: |nodes_t - nodes_{t-1}| summed over offers; hour 0 against the current nodes only when
  they are given. The cap bounds each hour's sum; the penalty prices every change. Current nodes
  above what their offer can run (two committed nodes on a one-node commitment) are no exception:
  hour 0 runs at most the limit, so removing the rest is a change, and a cap below it leaves no plan.
- Objective: the horizon cost plus penalty x changes.

The planner is compared through ``plan.total_dollars`` (the horizon cost) plus the penalty on
the changes its allocations make; its tie-break (1e-4 per node-hour) is allowed for.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sunblend.api import spec
from sunblend.api.spec import CapacityType
from sunblend.core import forecast
from tests.unit import pools

# --------------------------------------------------------------------------------------------
# The reference: sunblend.api and core.forecast only.
# --------------------------------------------------------------------------------------------

Key = tuple[str, str, CapacityType]  # (region, GPU class, capacity type)


@dataclass(frozen=True)
class Reference:
    """The reference optimum, or no plan."""

    feasible: bool
    cost_dollars: float = 0.0  # over the horizon: everything paid
    changes: int = 0  # nodes added plus removed over the horizon, as the penalty counts them
    node_hours: int = 0
    penalty: float = 0.0
    nodes: Mapping[tuple[int, Key], int] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        """Horizon cost plus the change penalty."""
        return self.cost_dollars + self.penalty * self.changes


@dataclass(frozen=True)
class _Node:
    gpus: int
    replicas: int
    tokens_per_second: float
    dollars_per_hour: float  # at the margin: 0 for committed nodes


def price(gpu_class: spec.GpuClass, region: str, name: str) -> float | None:
    """A price field of ``gpu_class`` in ``region``: the region's override, else the class's."""
    override = next((p for p in gpu_class.region_prices if p.region == region), None)
    value = getattr(override, name) if override is not None else None
    return value if value is not None else getattr(gpu_class.prices, name)  # type: ignore[no-any-return]


def listed(gpu_class: spec.GpuClass, region: str) -> bool:
    """Whether the class can run in ``region``."""
    return not gpu_class.regions or region in gpu_class.regions


def allowed_routes(pool: spec.InferencePoolSpec) -> set[tuple[str, str]]:
    """(user region, serving region) pairs demand may take."""
    names = [r.name for r in pool.regions]
    routing = pool.policy.routing
    allowed = {(r, r) for r in names}
    if routing.max_latency_ms == 0:
        return allowed
    entries = {(e.from_region, e.to_region): e.milliseconds for e in routing.latencies}
    for user in names:
        for server in names:
            ms = entries.get((user, server), entries.get((server, user)))
            if user != server and ms is not None and ms <= routing.max_latency_ms:
                allowed.add((user, server))
    return allowed


def _row(lp: pulp.LpProblem, expression: pulp.LpAffineExpression, sense: str, rhs: float) -> None:
    """``expression (sense) rhs``; a row with no variable is checked here (a violated one: x >= 1 on a fixed 0)."""
    holds = {"<=": expression.constant <= rhs + 1e-9, ">=": expression.constant >= rhs - 1e-9}
    if len(expression) == 0:
        if not holds[sense]:
            lp += lp.add_variable(f"never_{len(lp.constraints)}", 0, 0) >= 1
        return
    lp += (expression <= rhs) if sense == "<=" else (expression >= rhs)


def reference(
    pool: spec.InferencePoolSpec, now: dt.datetime, current_nodes: Mapping[Key, int] | None = None
) -> Reference:
    """Solve the pool's whole horizon as one MILP, to proven optimality."""
    starts = forecast.hour_starts(now, pool.planning.horizon_hours)
    demand = forecast.declared_forecast(pool, starts)
    hours = range(len(starts))
    names = [r.name for r in pool.regions]
    policy = pool.policy
    sizing = pool.planning.mode is spec.PlanningMode.SIZE_COMMITMENTS
    per_replica = pool.model_server.gpus_per_replica
    bought: dict[tuple[str, str], int] = {}
    for c in pool.commitments:
        bought[(c.region, c.gpu_class)] = bought.get((c.region, c.gpu_class), 0) + c.gpus

    lp = pulp.LpProblem("reference", pulp.LpMinimize)
    offers: dict[Key, _Node] = {}
    max_nodes: dict[Key, int] = {}  # committed nodes usable, operating on what is held
    held: dict[Key, pulp.LpVariable] = {}  # sizing: committed nodes to hold
    partial: dict[Key, tuple[int, float]] = {}  # committed: (whole nodes, $/h for the uncovered GPUs)
    hourly = pulp.LpAffineExpression()  # paid every hour whatever runs
    for region in names:
        for gpu_class in pool.gpu_classes:
            gpus = bought.get((region, gpu_class.name), 0)
            committed = price(gpu_class, region, "committed")
            if not listed(gpu_class, region):
                hourly += gpus * (committed or 0.0)
                continue
            n = gpu_class.gpus_per_node
            replicas = n // per_replica
            tps = replicas * (
                gpu_class.tokens_per_second_per_replica or pool.model_server.tokens_per_second_per_replica
            )
            on_demand = price(gpu_class, region, "on_demand")
            spot = price(gpu_class, region, "spot")
            assert on_demand is not None
            offers[(region, gpu_class.name, CapacityType.ON_DEMAND)] = _Node(n, replicas, tps, n * on_demand)
            if spot is not None:
                offers[(region, gpu_class.name, CapacityType.SPOT)] = _Node(n, replicas, tps, n * spot)
            key = (region, gpu_class.name, CapacityType.COMMITTED)
            if sizing and committed is not None:
                offers[key] = _Node(n, replicas, tps, 0.0)
                held[key] = lp.add_variable(f"held_{region}_{gpu_class.name}", math.ceil(gpus / n), cat="Integer")
                hourly += n * committed * held[key]
            elif gpus > 0:
                offers[key] = _Node(n, replicas, tps, 0.0)
                hourly += gpus * (committed or 0.0)
                max_nodes[key] = math.ceil(gpus / n)
                if gpus % n:
                    partial[key] = (gpus // n, (n - gpus % n) * on_demand)

    x = {
        (t, key): lp.add_variable(f"x_{t}_{'_'.join(key)}", 0, max_nodes.get(key), cat="Integer")
        for t in hours
        for key in offers
    }
    routes = allowed_routes(pool)
    y = {
        (t, u, s): lp.add_variable(f"y_{t}_{u}_{s}", 0) for t in hours for (u, s) in sorted(routes) if demand[u][t] > 0
    }
    costs = []
    for t in hours:
        cost = pulp.LpAffineExpression(hourly)
        for key, node in offers.items():
            cost += node.dollars_per_hour * x[(t, key)]
            if key in held:
                lp += x[(t, key)] <= held[key]
            if key in partial:
                whole, surcharge = partial[key]
                extra = lp.add_variable(f"partial_{t}_{'_'.join(key)}", 0)
                lp += extra >= x[(t, key)] - whole
                cost += surcharge * extra
        costs.append(cost)
        for u in names:
            if demand[u][t] > 0:
                lp += pulp.lpSum(v for (h, user, _), v in y.items() if h == t and user == u) == demand[u][t]
        for r in names:
            here = [key for key in offers if key[0] == r]
            served = pulp.lpSum(v for (h, _, s), v in y.items() if h == t and s == r)
            capacity = pulp.lpSum(offers[k].tokens_per_second * x[(t, k)] for k in here)
            _row(lp, capacity - (1 + policy.headroom) * served, ">=", 0.0)
            spot_gpus = pulp.lpSum(offers[k].gpus * x[(t, k)] for k in here if k[2] is CapacityType.SPOT)
            all_gpus = pulp.lpSum(offers[k].gpus * x[(t, k)] for k in here)
            _row(lp, spot_gpus - policy.max_spot_fraction * all_gpus, "<=", 0.0)
            surviving = pulp.lpSum(
                offers[k].tokens_per_second * x[(t, k)] for k in here if k[2] is not CapacityType.SPOT
            )
            _row(lp, surviving - policy.spot_loss_served_fraction * served, ">=", 0.0)
            if any(listed(g, r) for g in pool.gpu_classes):
                replicas = pulp.lpSum(offers[k].replicas * x[(t, k)] for k in here)
                _row(lp, replicas, ">=", policy.min_replicas_per_region)
        if policy.budget_dollars_per_hour is not None:
            _row(lp, cost, "<=", policy.budget_dollars_per_hour)

    penalty = policy.change_penalty_dollars_per_node
    objective = pulp.lpSum(costs)
    counted = [t for t in hours if t > 0 or current_nodes is not None]
    if policy.max_node_changes_per_hour is not None or penalty > 0:
        for t in counted:
            moves = pulp.LpAffineExpression()
            for key in offers:
                before = x[(t - 1, key)] if t > 0 else (current_nodes or {}).get(key, 0)
                d = lp.add_variable(f"d_{t}_{'_'.join(key)}", 0)
                lp += d >= x[(t, key)] - before
                lp += d >= before - x[(t, key)]
                moves += d
            if policy.max_node_changes_per_hour is not None:
                _row(lp, moves, "<=", policy.max_node_changes_per_hour)
            objective += penalty * moves
    lp += objective
    lp.solve(pulp.HiGHS(msg=False, gapRel=0.0, gapAbs=0.0, threads=1, timeLimit=60))
    if lp.status == pulp.LpStatusInfeasible:
        return Reference(False)
    assert lp.sol_status == pulp.LpSolutionOptimal, f"reference not solved to optimality: {lp.status}/{lp.sol_status}"
    nodes = {k: round(v.varValue or 0.0) for k, v in x.items()}
    changes = 0
    if policy.max_node_changes_per_hour is not None or penalty > 0:
        for t in counted:
            for key in offers:
                before = nodes[(t - 1, key)] if t > 0 else (current_nodes or {}).get(key, 0)
                changes += abs(nodes[(t, key)] - before)
    return Reference(
        True,
        cost_dollars=sum(pulp.value(c) for c in costs),
        changes=changes,
        node_hours=sum(nodes.values()),
        penalty=penalty,
        nodes=nodes,
    )


# --------------------------------------------------------------------------------------------
# The planner under test, and the comparison.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """The planner's verdict and figures, measured the reference's way."""

    status: str
    cost_dollars: float
    changes: int
    objective: float
    message: str


def planned(pool: spec.InferencePoolSpec, now: dt.datetime, current_nodes: Mapping[Key, int] | None = None) -> Planned:
    """Plan with sunblend: ``problem.from_spec`` then ``blend.plan``."""
    from sunblend.core import blend, problem  # the planner under test, never the reference

    plan = blend.plan(problem.from_spec(pool, now, current_nodes=current_nodes))
    nodes: dict[tuple[int, Key], int] = {}
    for a in plan.allocations:
        at = (a.hour, (a.region, a.gpu_class, a.capacity_type))
        nodes[at] = nodes.get(at, 0) + a.nodes
    penalty = pool.policy.change_penalty_dollars_per_node
    changes = 0
    if plan.has_solution and (penalty > 0 or pool.policy.max_node_changes_per_hour is not None):
        keys = {k for _, k in nodes} | set(current_nodes or {})
        for t in range(len(plan.hours)):
            if t == 0 and current_nodes is None:
                continue
            for key in keys:
                before = nodes.get((t - 1, key), 0) if t > 0 else (current_nodes or {}).get(key, 0)
                changes += abs(nodes.get((t, key), 0) - before)
    cost = plan.total_dollars if plan.has_solution else 0.0
    return Planned(plan.status.value, cost, changes, cost + penalty * changes, plan.message)


def assert_agrees(pool: spec.InferencePoolSpec, now: dt.datetime, current_nodes: Mapping[Key, int] | None) -> Reference:
    """Same verdict; for a feasible pool, an Optimal plan at the reference's horizon objective."""
    expected = reference(pool, now, current_nodes)
    got = planned(pool, now, current_nodes)
    if not expected.feasible:
        assert got.status == "Infeasible", f"the reference finds no plan; the planner says {got.status}: {got.message}"
        return expected
    assert got.status == "Optimal", f"the reference plans {expected.objective:.6f}; the planner: {got.message}"
    # The planner's tie-break (1e-4 per node-hour) may trade at most that much cost for fewer nodes.
    tolerance = 1e-6 * max(1.0, abs(expected.objective)) + 1e-4 * expected.node_hours + 1e-6
    assert got.objective == pytest.approx(expected.objective, rel=0, abs=tolerance), (
        f"planner {got.objective:.6f} (cost {got.cost_dollars:.6f} + {got.changes} changes) against reference "
        f"{expected.objective:.6f} (cost {expected.cost_dollars:.6f} + {expected.changes} changes)"
    )
    return expected


# --------------------------------------------------------------------------------------------
# Random small pools.
# --------------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/London", "Asia/Kolkata", "America/New_York"]
KINDS = ("uncoupled", "cap", "penalty", "sizing")
PERCENT = st.integers(15, 95)
STARTS = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 12, 31), timezones=st.just(dt.UTC))


def _share(percent: int | None, dollars: float) -> float | None:
    return None if percent is None else round(dollars * percent / 100, 3)


@st.composite
def cases(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], dt.datetime, dict[Key, int] | None]:
    """A small pool (spec fields), the time it is planned at, and the current nodes (or None)."""
    per_replica = draw(st.sampled_from([1, 1, 2]))
    names = ["r0", "r1"][: draw(st.integers(1, 2))]
    regions = []
    for name in names:
        base = 100 * draw(st.integers(0, 40))
        peak = base + 100 * draw(st.integers(0, 60))
        start = draw(st.integers(0, 23))
        end = (start + draw(st.integers(1, 23))) % 24 or 24
        regions.append(pools.region(name, tz=draw(st.sampled_from(ZONES)), base=base, peak=peak, busy=(start, end)))
    classes: list[dict[str, Any]] = []
    for k in range(draw(st.integers(1, 2))):
        n = draw(st.sampled_from([g for g in (1, 2, 4, 8) if g >= per_replica]))
        on_demand = draw(st.integers(50, 1000)) / 100
        spot = _share(draw(st.one_of(st.none(), PERCENT, PERCENT, PERCENT)), on_demand)
        if kind == "sizing":  # sometimes dearer than on-demand: then holding more does not pay
            committed = _share(draw(st.integers(30, 120)), on_demand)
        else:
            committed = _share(draw(PERCENT), on_demand) if draw(st.booleans()) else None
        gpu_class = pools.gpu_class(f"g{k}", gpus_per_node=n, onDemand=on_demand, spot=spot, committed=committed)
        tps = draw(st.sampled_from([None, 150, 400, 900]))
        if tps is not None:
            gpu_class["tokensPerSecondPerReplica"] = tps
        if len(names) > 1 and draw(st.booleans()):
            gpu_class["regions"] = [draw(st.sampled_from(names))]
        if draw(st.integers(0, 3)) == 0:
            override: dict[str, Any] = {
                "region": draw(st.sampled_from(names)),
                "onDemand": draw(st.integers(50, 1000)) / 100,
            }
            for field_name, base_price in (("spot", spot), ("committed", committed)):
                if base_price is not None and draw(st.booleans()):
                    override[field_name] = _share(draw(PERCENT), override["onDemand"])
            gpu_class["regionPrices"] = [override]
        classes.append(gpu_class)
    commitments = []
    for gpu_class in classes:
        if gpu_class["prices"].get("committed") is None:
            continue  # a held commitment needs its price
        for _ in range(draw(st.integers(0, 2))):
            n = gpu_class["gpusPerNode"]
            gpus = n * draw(st.integers(1, 3)) if kind == "sizing" else draw(st.integers(1, 20))
            commitments.append({"gpuClass": gpu_class["name"], "region": draw(st.sampled_from(names)), "gpus": gpus})
    latencies = []
    for a in names:
        for b in names:
            if a != b and draw(st.booleans()):
                latencies.append({"from": a, "to": b, "milliseconds": draw(st.sampled_from([0, 40, 100, 200]))})
    policy: dict[str, Any] = {
        "headroom": draw(st.sampled_from([0.0, 0.1, 0.25, 0.5])),
        "maxSpotFraction": draw(st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0])),
        "spotLossServedFraction": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        "minReplicasPerRegion": draw(st.integers(0, 3)),
        "routing": {"maxLatencyMs": draw(st.sampled_from([0, 50, 150])), "latencies": latencies},
    }
    if draw(st.integers(0, 2)) == 0:
        policy["budgetDollarsPerHour"] = 10.0 * draw(st.integers(0, 60))
    if kind == "cap":
        policy["maxNodeChangesPerHour"] = draw(st.integers(0, 6))
    if kind == "penalty":
        policy["changePenaltyDollarsPerNode"] = draw(st.sampled_from([0.5, 5.0, 25.0, 100.0]))
    planning: dict[str, Any] = {"horizonHours": draw(st.integers(1, 4)), "relativeGap": 0}
    if kind == "sizing":
        planning["mode"] = "SizeCommitments"
    document = {
        "modelServer": {"gpusPerReplica": per_replica, "tokensPerSecondPerReplica": 500},
        "regions": regions,
        "gpuClasses": classes,
        "commitments": commitments,
        "policy": policy,
        "planning": planning,
    }
    current: dict[Key, int] | None = None
    if kind in ("cap", "penalty") and draw(st.booleans()):
        held = {(c["region"], c["gpuClass"]) for c in commitments}
        keys = []
        for gpu_class in classes:
            for region in names:
                if gpu_class.get("regions") and region not in gpu_class["regions"]:
                    continue
                keys.append((region, gpu_class["name"], CapacityType.ON_DEMAND))
                if _spot_priced(gpu_class, region):
                    keys.append((region, gpu_class["name"], CapacityType.SPOT))
                if (region, gpu_class["name"]) in held:
                    keys.append((region, gpu_class["name"], CapacityType.COMMITTED))
        chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
        current = {key: draw(st.integers(0, 4)) for key in chosen}
    return document, draw(STARTS), current


def _spot_priced(gpu_class: dict[str, Any], region: str) -> bool:
    override: dict[str, Any] = next((p for p in gpu_class.get("regionPrices", []) if p["region"] == region), {})
    return override.get("spot", gpu_class["prices"].get("spot")) is not None


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_the_planner_matches_the_reference(kind: str, data: st.DataObject) -> None:
    document, now, current = data.draw(cases(kind), label="case")
    expected = assert_agrees(pools.pool_spec(**document), now, current)
    if expected.feasible:
        bought = {key[2].value for (_, key), n in expected.nodes.items() if n > 0}
        event("optimal, buys " + (", ".join(sorted(bought)) or "nothing"))
    else:
        event("infeasible")


# --------------------------------------------------------------------------------------------
# Each rule on a pool small enough to solve by hand: the reference, then the planner.
# --------------------------------------------------------------------------------------------

LOOSE = {"headroom": 0, "maxSpotFraction": 1, "spotLossServedFraction": 0, "minReplicasPerRegion": 0}
NOON = pools.MONDAY_NOON


def _both(expected: float | None, current: Mapping[Key, int] | None = None, **fields: Any) -> None:
    fields.setdefault("planning", {"horizonHours": 1, "relativeGap": 0})
    pool = pools.pool_spec(**fields)
    ref = reference(pool, NOON, current)
    if expected is None:
        assert not ref.feasible
    else:
        assert ref.feasible and ref.objective == pytest.approx(expected)
    assert_agrees(pool, NOON, current)


def test_a_partial_committed_node_runs_with_its_uncovered_gpus_on_demand() -> None:
    # 12 committed GPUs on 8-GPU nodes: 1 whole node and 1 partial (4 GPUs covered). 1600 tok/s
    # needs 2 nodes: 12 x $2 sunk, plus the partial node's 4 uncovered GPUs at $3 = $36 (an
    # on-demand node instead would cost $24 more than the sunk $24: $48).
    _both(
        36.0,
        regions=[pools.region("r1", base=1600)],
        gpuClasses=[pools.gpu_class(gpus_per_node=8, committed=2.0, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 12}],
        policy=LOOSE,
    )


def test_a_commitment_where_its_class_is_not_offered_is_still_paid() -> None:
    # r2 does not list the class: its 4 committed GPUs ($2 each) give no node but cost $8 an hour.
    _both(
        8.0 + 3.0,
        regions=[pools.region("r1", base=100), pools.region("r2", base=0)],
        gpuClasses=[{**pools.gpu_class(committed=2.0, onDemand=3.0), "regions": ["r1"]}],
        commitments=[{"gpuClass": "gpu", "region": "r2", "gpus": 4}],
        policy=LOOSE,
    )


def test_region_prices_override_field_by_field() -> None:
    # r1 overrides only the on-demand price: spot still comes from the class, $1 a GPU: 2 spot GPUs.
    _both(
        2.0,
        regions=[pools.region("r1", base=200)],
        gpuClasses=[{**pools.gpu_class(spot=1.0, onDemand=3.0), "regionPrices": [{"region": "r1", "onDemand": 4.0}]}],
        policy=LOOSE,
    )


def test_max_latency_zero_is_local_only_even_over_a_zero_ms_route() -> None:
    # Only r2 has GPUs; r1's users cannot reach it with maxLatencyMs 0.
    _both(
        None,
        regions=[pools.region("r1", base=100), pools.region("r2", base=0)],
        gpuClasses=[{**pools.gpu_class(onDemand=3.0), "regions": ["r2"]}],
        policy={**LOOSE, "routing": {"maxLatencyMs": 0, "latencies": [{"from": "r1", "to": "r2", "milliseconds": 0}]}},
    )


def test_an_explicit_reverse_latency_over_the_limit_closes_that_direction() -> None:
    routing = {
        "maxLatencyMs": 100,
        "latencies": [{"from": "r1", "to": "r2", "milliseconds": 50}, {"from": "r2", "to": "r1", "milliseconds": 200}],
    }
    # r1's users may be served in r2 ...
    _both(
        3.0,
        regions=[pools.region("r1", base=100), pools.region("r2", base=0)],
        gpuClasses=[{**pools.gpu_class(onDemand=3.0), "regions": ["r2"]}],
        policy={**LOOSE, "routing": routing},
    )
    # ... but r2's users may not be served in r1.
    _both(
        None,
        regions=[pools.region("r1", base=0), pools.region("r2", base=100)],
        gpuClasses=[{**pools.gpu_class(onDemand=3.0), "regions": ["r1"]}],
        policy={**LOOSE, "routing": routing},
    )


def test_the_change_penalty_counts_from_the_current_nodes_only_when_they_are_given() -> None:
    fields: dict[str, Any] = {
        "regions": [pools.region("r1", base=300)],
        "gpuClasses": [pools.gpu_class(onDemand=3.0)],
        "policy": {**LOOSE, "changePenaltyDollarsPerNode": 10.0},
        "planning": {"horizonHours": 2, "relativeGap": 0},
    }
    # 3 on-demand nodes for 2 hours: $18; nothing known of now: hour 0 is free.
    _both(18.0, **fields)
    # 1 on-demand node runs now: 2 added going into hour 0, $20 of penalty.
    _both(38.0, current={("r1", "gpu", CapacityType.ON_DEMAND): 1}, **fields)


def test_sizing_holds_at_least_what_is_held_at_the_committed_price() -> None:
    # 500 tok/s all day: 5 one-GPU nodes. Committed at $1 beats spot at $2 (at most 50% spot):
    # hold 5 (>= the 2 held), $5 an hour for 3 hours.
    _both(
        15.0,
        regions=[pools.region("r1", base=500)],
        gpuClasses=[pools.gpu_class(committed=1.0, spot=2.0, onDemand=3.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 2}],
        policy={**LOOSE, "maxSpotFraction": 0.5},
        planning={"horizonHours": 3, "mode": "SizeCommitments", "relativeGap": 0},
    )
