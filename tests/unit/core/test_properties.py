"""Property tests: every plan the planner returns keeps every constraint, checked without the solver."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sunblend.core import blend, check, greedy
from sunblend.core.plan import SolveStatus
from tests.unit import pools

ZONES = ["UTC", "Europe/London", "Asia/Kolkata", "America/New_York", "Asia/Tokyo"]


@st.composite
def pool_documents(draw):
    n_regions = draw(st.integers(1, 3))
    names = [f"r{i}" for i in range(n_regions)]
    regions = []
    for name in names:
        base = draw(st.floats(0, 3000, allow_nan=False))
        peak = base + draw(st.floats(0, 5000, allow_nan=False))
        start = draw(st.integers(0, 23))
        end = draw(st.integers(0, 24).filter(lambda e, s=start: e != s))
        regions.append(pools.region(name, tz=draw(st.sampled_from(ZONES)), base=base, peak=peak, busy=(start, end)))
    classes = []
    for k in range(draw(st.integers(1, 2))):
        on_demand = draw(st.floats(0.5, 10))
        spot = draw(st.one_of(st.none(), st.floats(0.1, 1.0).map(lambda f, od=on_demand: round(f * od, 3))))
        committed = draw(st.one_of(st.none(), st.floats(0.1, 1.0).map(lambda f, od=on_demand: round(f * od, 3))))
        classes.append(
            {
                **pools.gpu_class(
                    f"g{k}",
                    gpus_per_node=draw(st.sampled_from([1, 2, 4, 8])),
                    onDemand=on_demand,
                    spot=spot,
                    committed=committed,
                ),
                "tokensPerSecondPerReplica": draw(st.floats(100, 2000)),
            }
        )
    commitments = [
        {"gpuClass": c["name"], "region": draw(st.sampled_from(names)), "gpus": draw(st.integers(1, 32))}
        for c in classes
        if draw(st.booleans()) and c["prices"]["committed"] is not None
    ]
    latencies = [
        {"from": a, "to": b, "milliseconds": draw(st.integers(10, 300))}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    policy = {
        "headroom": draw(st.floats(0, 0.5)),
        "maxSpotFraction": draw(st.floats(0, 1)),
        "spotLossServedFraction": draw(st.floats(0, 1)),
        "minReplicasPerRegion": draw(st.integers(0, 3)),
        "routing": {"maxLatencyMs": draw(st.integers(0, 200)), "latencies": latencies},
    }
    if draw(st.booleans()):
        policy["budgetDollarsPerHour"] = draw(st.floats(0, 500))
    if draw(st.booleans()):
        policy["maxNodeChangesPerHour"] = draw(st.integers(0, 20))
    planning = {"horizonHours": draw(st.integers(1, 12)), "relativeGap": 0}
    return {
        "modelServer": {"gpusPerReplica": 1, "tokensPerSecondPerReplica": 500},
        "regions": regions,
        "gpuClasses": classes,
        "commitments": commitments,
        "policy": policy,
        "planning": planning,
    }


STARTS = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 12, 31), timezones=st.just(dt.UTC))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_documents(), STARTS)
def test_every_plan_keeps_every_constraint(document, now):
    problem = pools.blend_problem(now=now, **document)
    plan = blend.plan(problem)
    assert plan.status is not SolveStatus.ERROR
    if plan.has_solution:
        assert check.violations(problem, plan) == []
        # Never dearer than the greedy plan when the greedy plan is itself within every limit.
        fallback = greedy.plan(problem)
        if not check.violations(problem, fallback):
            assert plan.total_dollars <= fallback.total_dollars * (1 + 1e-6) + 1e-6
    else:
        assert plan.message  # an infeasible pool is always explained


@settings(max_examples=60, deadline=None)
@given(pool_documents(), STARTS)
def test_the_greedy_fallback_keeps_every_constraint_but_budget_and_churn(document, now):
    document["policy"].pop("maxNodeChangesPerHour", None)
    problem = pools.blend_problem(now=now, **document)
    if blend.validate(problem):
        return  # unreachable demand: no plan exists at all
    assert check.violations(problem, greedy.plan(problem), check_budget=False) == []
