"""Serving along the routes: a maximum flow of demand to capacity, home first, deterministic.

The hand-made cases show what own-users-first gets wrong; the property tests check every
assignment against two independent references: the minimum cut (enumerated over the user
regions) for the total served, and an LP solved by HiGHS for the demand served away from home.
"""

from __future__ import annotations

import itertools
import math

import pulp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sunblend.core import serving
from tests.unit import pools

CHAIN = {"A": ("A", "B"), "B": ("A", "B", "C"), "C": ("B", "C")}  # A may not use C


def _own_users_first(demand, capacity, routes):
    """What the simulator did before: each region serves its own users, then overflow greedily."""
    served = {r: min(demand[r], capacity.get(r, 0.0)) for r in demand}
    spare = {r: capacity.get(r, 0.0) - served.get(r, 0.0) for r in capacity}
    for user in demand:
        for server in routes.get(user, ()):
            moved = min(demand[user] - served[user], spare.get(server, 0.0))
            if moved > 0:
                served[user] += moved
                spare[server] -= moved
    return served


def test_a_chain_is_served_in_full_where_own_users_first_leaves_demand_unserved():
    # A's users may only use B; B's users may also use C. B's capacity is planned for A.
    demand = {"A": 100.0, "B": 100.0, "C": 0.0}
    capacity = {"A": 0.0, "B": 100.0, "C": 100.0}
    assert sum(_own_users_first(demand, capacity, CHAIN).values()) == 100.0  # A gets nothing
    assignment = serving.assign(demand, capacity, CHAIN)
    assert assignment.served == {"A": 100.0, "B": 100.0, "C": 0.0}
    assert assignment.unserved == {"A": 0.0, "B": 0.0, "C": 0.0}
    assert assignment.flows == (serving.Flow("A", "B", 100.0), serving.Flow("B", "C", 100.0))
    assert assignment.spare == {"A": 0.0, "B": 0.0, "C": 0.0}
    assert assignment.routed("B") == {"C": 100.0}


def test_a_longer_chain_moves_every_link_along():
    # Four regions in a line, each short at home by one link's worth: only moving everyone serves all.
    routes = {"A": ("A", "B"), "B": ("A", "B", "C"), "C": ("B", "C", "D"), "D": ("C", "D")}
    demand = {"A": 30.0, "B": 30.0, "C": 30.0, "D": 0.0}
    capacity = {"A": 10.0, "B": 30.0, "C": 30.0, "D": 20.0}
    assignment = serving.assign(demand, capacity, routes)
    assert assignment.total_served == pytest.approx(90.0)
    assert assignment.total_unserved == 0.0
    assert assignment.spare == {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}


def test_users_are_served_at_home_when_that_costs_nothing_in_total():
    demand = {"A": 50.0, "B": 20.0, "C": 0.0}
    capacity = {"A": 80.0, "B": 80.0, "C": 80.0}
    assignment = serving.assign(demand, capacity, CHAIN)
    assert assignment.flows == (serving.Flow("A", "A", 50.0), serving.Flow("B", "B", 20.0))
    assert assignment.spare == {"A": 30.0, "B": 60.0, "C": 80.0}


def test_overflow_takes_the_route_that_moves_no_one_else_even_when_another_comes_first():
    # A overflows into B, which still has room; moving B's own users on to C (first in the
    # capacity order) would serve the same in total but send twice as much away from home.
    routes = {"A": ("A", "B"), "B": ("B", "C")}
    assignment = serving.assign({"A": 10.0, "B": 10.0}, {"C": 100.0, "B": 20.0}, routes)
    assert assignment.flows == (serving.Flow("A", "B", 10.0), serving.Flow("B", "B", 10.0))


def test_short_capacity_goes_to_its_own_users_first():
    # Only B has capacity, and not enough for both: B's own users keep it, A's go unserved.
    assignment = serving.assign({"A": 100.0, "B": 100.0}, {"B": 100.0}, {"A": ("A", "B"), "B": ("A", "B")})
    assert assignment.served == {"A": 0.0, "B": 100.0}
    assert assignment.unserved == {"A": 100.0, "B": 0.0}


def test_only_allowed_routes_carry_demand():
    # A may not use C at all, so C's room stays spare however short A is.
    assignment = serving.assign({"A": 100.0}, {"A": 10.0, "C": 500.0}, {"A": ("A", "B")})
    assert assignment.served == {"A": 10.0}
    assert assignment.unserved == {"A": 90.0}
    assert assignment.spare == {"A": 0.0, "C": 500.0}
    nowhere = serving.assign({"X": 40.0}, {"X": 100.0}, {})  # no route, not even home
    assert nowhere.served == {"X": 0.0} and nowhere.spare == {"X": 100.0}


def test_ties_go_to_the_order_of_the_inputs():
    routes = {"A": ("B", "C")}
    first = serving.assign({"A": 10.0}, {"B": 100.0, "C": 100.0}, routes)
    second = serving.assign({"A": 10.0}, {"C": 100.0, "B": 100.0}, routes)
    assert first.flows == (serving.Flow("A", "B", 10.0),)
    assert second.flows == (serving.Flow("A", "C", 10.0),)


@pytest.mark.parametrize(
    ("demand", "capacity", "message"),
    [
        ({"A": -1.0}, {"A": 1.0}, "demand of A is -1.0"),
        ({"A": 1.0}, {"A": math.nan}, "capacity of A is nan"),
        ({"A": math.inf}, {"A": 1.0}, "demand of A is inf"),
    ],
)
def test_bad_figures_are_refused_naming_the_region(demand, capacity, message):
    with pytest.raises(serving.ServingError, match=message):
        serving.assign(demand, capacity, {"A": ("A",)})


def test_the_routes_of_a_pool_are_its_serving_regions():
    blend_problem = pools.blend_problem(
        regions=[pools.region("a"), pools.region("b"), pools.region("c")],
        policy={
            "headroom": 0,
            "maxSpotFraction": 1,
            "spotLossServedFraction": 0,
            "minReplicasPerRegion": 0,
            "routing": {
                "maxLatencyMs": 100,
                "latencies": [
                    {"from": "a", "to": "b", "milliseconds": 50},
                    {"from": "b", "to": "c", "milliseconds": 50},
                    {"from": "a", "to": "c", "milliseconds": 200},
                ],
            },
        },
    )
    assert serving.routes_of(blend_problem) == {"a": ("a", "b"), "b": ("a", "b", "c"), "c": ("b", "c")}
    assert serving.routes_of(blend_problem) == {r: blend_problem.serving_regions(r) for r in blend_problem.regions}


# -- properties against independent references ------------------------------------------------

REGIONS = ("A", "B", "C", "D", "E")
amounts = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e5, allow_nan=False, allow_infinity=False))


@st.composite
def cases(draw):
    count = draw(st.integers(min_value=1, max_value=len(REGIONS)))
    regions = REGIONS[:count]
    users = draw(st.lists(st.sampled_from(regions), min_size=1, max_size=count, unique=True))
    servers = draw(st.lists(st.sampled_from(regions), min_size=0, max_size=count, unique=True))
    demand = {u: draw(amounts) for u in users}
    capacity = {s: draw(amounts) for s in servers}
    routes = {u: tuple(draw(st.lists(st.sampled_from(regions), max_size=count, unique=True))) for u in users}
    return demand, capacity, routes


def _min_cut(demand, capacity, routes):
    """The least demand left out plus capacity reachable, over every set of user regions kept."""
    users = list(demand)
    best = math.inf
    for size in range(len(users) + 1):
        for kept in itertools.combinations(users, size):
            reached = {s for u in kept for s in routes.get(u, ()) if s in capacity}
            cut = sum(demand[u] for u in users if u not in kept) + sum(capacity[s] for s in reached)
            best = min(best, cut)
    return best


def _least_remote(demand, capacity, routes, total):
    """The least demand served away from home among assignments serving ``total`` (an LP)."""
    lp = pulp.LpProblem("remote", pulp.LpMinimize)
    edges = [(u, s) for u in demand for s in routes.get(u, ()) if s in capacity]
    flow = {(u, s): lp.add_variable(f"f_{u}_{s}", 0) for u, s in edges}
    lp += pulp.lpSum(flow[(u, s)] for u, s in edges if u != s) + 0.0
    for user in demand:
        lp += pulp.lpSum(flow[(u, s)] for u, s in edges if u == user) <= demand[user]
    for server in capacity:
        lp += pulp.lpSum(flow[(u, s)] for u, s in edges if s == server) <= capacity[server]
    lp += pulp.lpSum(flow.values()) >= total * (1 - 1e-9) - 1e-9
    lp.solve(pulp.HiGHS(msg=False, threads=1))
    assert lp.status == pulp.LpStatusOptimal
    return pulp.value(lp.objective) or 0.0


def _check_consistent(assignment, demand, capacity, routes):
    scale = 1e-9 * (1 + sum(demand.values()) + sum(capacity.values()))
    for user, wanted in demand.items():
        assert 0.0 <= assignment.served[user] <= wanted + scale
        assert assignment.served[user] + assignment.unserved[user] == pytest.approx(wanted, abs=scale)
        assert sum(f.tokens_per_second for f in assignment.flows if f.user == user) == pytest.approx(
            assignment.served[user], abs=scale
        )
    for server, room in capacity.items():
        assert assignment.spare[server] >= 0.0
        used = sum(f.tokens_per_second for f in assignment.flows if f.server == server)
        assert used + assignment.spare[server] == pytest.approx(room, abs=scale)
    assert set(assignment.spare) == set(capacity)
    for flow in assignment.flows:
        assert flow.tokens_per_second > 0
        assert flow.server in routes.get(flow.user, ()) and flow.server in capacity


@settings(max_examples=150, deadline=None)
@given(cases())
def test_every_assignment_conserves_flow_and_is_a_maximum_flow(case):
    demand, capacity, routes = case
    assignment = serving.assign(demand, capacity, routes)
    _check_consistent(assignment, demand, capacity, routes)
    scale = 1e-9 * (1 + sum(demand.values()) + sum(capacity.values()))
    assert assignment.total_served <= min(sum(demand.values()), sum(capacity.values())) + scale
    assert assignment.total_served == pytest.approx(_min_cut(demand, capacity, routes), abs=scale)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_every_assignment_serves_the_least_demand_away_from_home(case):
    demand, capacity, routes = case
    assignment = serving.assign(demand, capacity, routes)
    remote = sum(f.tokens_per_second for f in assignment.flows if f.user != f.server)
    scale = 1e-6 * (1 + sum(demand.values()) + sum(capacity.values()))
    assert remote == pytest.approx(_least_remote(demand, capacity, routes, assignment.total_served), abs=scale)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_the_same_inputs_give_the_same_assignment(case):
    demand, capacity, routes = case
    first = serving.assign(demand, capacity, routes)
    again = serving.assign(dict(demand), dict(capacity), {u: list(r) for u, r in routes.items()})
    assert first == again


@settings(max_examples=100, deadline=None)
@given(cases(), st.sampled_from(REGIONS), st.floats(min_value=0.0, max_value=1e5))
def test_more_capacity_never_serves_less(case, region, extra):
    demand, capacity, routes = case
    before = serving.assign(demand, capacity, routes).total_served
    grown = {**capacity, region: capacity.get(region, 0.0) + extra}
    scale = 1e-9 * (1 + sum(demand.values()) + sum(grown.values()))
    assert serving.assign(demand, grown, routes).total_served >= before - scale
