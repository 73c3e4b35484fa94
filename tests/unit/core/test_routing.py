"""Traffic weights from the plan's flows, with answers worked out by hand."""

from __future__ import annotations

import datetime as dt

import pytest

from sunblend.api.spec import CapacityType
from sunblend.core import routing
from sunblend.core.plan import Allocation, Flow, Plan, SolveStatus

START = dt.datetime(2026, 11, 22, 17, tzinfo=dt.UTC)
HOURS = (START, START + dt.timedelta(hours=1))
MUMBAI = "ap-south-1"
LONDON = "eu-west-2"


def _plan(*flows: Flow, allocations: tuple[Allocation, ...] = ()) -> Plan:
    return Plan(SolveStatus.OPTIMAL, "test", "", HOURS, allocations=allocations, flows=flows)


def test_mumbai_served_partly_from_london_rounds_to_53_and_47() -> None:
    # 16000 / 30000 = 53.33 -> 53; 14000 / 30000 = 46.67 -> 46 + the one unit left (larger remainder) = 47.
    plan = _plan(
        Flow(0, MUMBAI, MUMBAI, 16000.0),
        Flow(0, MUMBAI, LONDON, 14000.0),
        Flow(0, LONDON, LONDON, 24000.0),
    )
    assert routing.weights(plan) == {MUMBAI: [(MUMBAI, 53), (LONDON, 47)], LONDON: [(LONDON, 100)]}


def test_each_hour_has_its_own_weights() -> None:
    plan = _plan(
        Flow(0, MUMBAI, MUMBAI, 16000.0),
        Flow(0, MUMBAI, LONDON, 14000.0),
        Flow(1, MUMBAI, MUMBAI, 6000.0),
        Flow(1, LONDON, MUMBAI, 10000.0),
        Flow(1, LONDON, LONDON, 14000.0),
    )
    assert routing.weights(plan, hour=0) == {MUMBAI: [(MUMBAI, 53), (LONDON, 47)], LONDON: [(LONDON, 100)]}
    # London: 10000 / 24000 = 41.67 -> 42, 14000 / 24000 = 58.33 -> 58.
    assert routing.weights(plan, hour=1) == {MUMBAI: [(MUMBAI, 100)], LONDON: [(MUMBAI, 42), (LONDON, 58)]}


def test_three_equal_shares_give_the_spare_unit_to_the_first_region_by_name() -> None:
    # 100 / 3 = 33.33 each: floors sum to 99; the remainders tie, so "a" gets the 100th unit.
    plan = _plan(Flow(0, "a", "c", 1.0), Flow(0, "a", "b", 1.0), Flow(0, "a", "a", 1.0))
    assert routing.weights(plan)["a"] == [("a", 34), ("b", 33), ("c", 33)]


def test_seven_equal_shares_give_two_spare_units() -> None:
    # 100 / 7 = 14.29 each: floors sum to 98; "a" and "b" (first by name among equal remainders) get one more.
    targets = "gfedcba"
    plan = _plan(*(Flow(0, "a", t, 5.0) for t in targets))
    assert routing.weights(plan)["a"] == [("a", 15), ("b", 15), ("c", 14), ("d", 14), ("e", 14), ("f", 14), ("g", 14)]


def test_a_larger_remainder_wins_over_a_larger_share() -> None:
    # 1 : 1 : 2 of 100 -> 25, 25, 50 exactly; 2 : 3 : 4 of 100 -> 22.22, 33.33, 44.44:
    # floors 22 + 33 + 44 = 99, the remainders .22 .33 .44: the last unit goes to "z" (0.44).
    assert routing.largest_remainder({"x": 1, "y": 1, "z": 2}) == [("x", 25), ("y", 25), ("z", 50)]
    assert routing.largest_remainder({"x": 2, "y": 3, "z": 4}) == [("x", 22), ("y", 33), ("z", 45)]
    # 1 : 1 : 1 : 3 of 100 -> 16.67, 16.67, 16.67, 50: floors 98; "a" and "b" get the two units.
    assert routing.largest_remainder({"c": 1, "a": 1, "b": 1, "d": 3}) == [("a", 17), ("b", 17), ("c", 16), ("d", 50)]


def test_a_share_that_rounds_to_zero_is_left_out_and_the_rest_still_sum_to_100() -> None:
    # 0.4 % and 99.6 %: floors 0 and 99; the unit left goes to the larger remainder (0.6), so 100.
    plan = _plan(Flow(0, MUMBAI, LONDON, 4.0), Flow(0, MUMBAI, MUMBAI, 996.0))
    assert routing.weights(plan)[MUMBAI] == [(MUMBAI, 100)]


def test_flows_of_the_same_pair_add_up_and_empty_flows_are_ignored() -> None:
    plan = _plan(
        Flow(0, MUMBAI, MUMBAI, 100.0),
        Flow(0, MUMBAI, MUMBAI, 200.0),
        Flow(0, MUMBAI, LONDON, 100.0),
        Flow(0, LONDON, MUMBAI, 0.0),
    )
    # 300 : 100 -> 75 : 25; London has only an empty flow, so it serves itself.
    assert routing.weights(plan) == {MUMBAI: [(MUMBAI, 75), (LONDON, 25)], LONDON: [(LONDON, 100)]}


def test_a_region_without_flows_serves_itself() -> None:
    allocation = Allocation(0, "us-east-1", "h100", CapacityType.SPOT, 1, 8, 4, 18.0)
    plan = _plan(Flow(1, MUMBAI, LONDON, 10.0), allocations=(allocation,))
    assert routing.weights(plan, hour=0, regions=["sa-east-1"]) == {
        MUMBAI: [(MUMBAI, 100)],
        LONDON: [(LONDON, 100)],
        "sa-east-1": [("sa-east-1", 100)],
        "us-east-1": [("us-east-1", 100)],
    }


def test_a_plan_without_a_solution_lets_every_region_serve_itself() -> None:
    plan = Plan(SolveStatus.INFEASIBLE, "test", "no room", HOURS)
    assert routing.weights(plan, regions=[LONDON, MUMBAI]) == {MUMBAI: [(MUMBAI, 100)], LONDON: [(LONDON, 100)]}
    assert routing.weights(Plan(SolveStatus.ERROR, "test", "broken", ()), regions=[MUMBAI]) == {MUMBAI: [(MUMBAI, 100)]}


@pytest.mark.parametrize("hour", [-1, 2])
def test_an_hour_outside_the_plan_is_refused(hour: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        routing.weights(_plan(), hour=hour)


def test_nothing_to_divide_is_refused() -> None:
    with pytest.raises(ValueError):
        routing.largest_remainder({"a": 0.0})
