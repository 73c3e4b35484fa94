"""The decision engine on hand-made observations: plans, commands, spot losses, surges, state."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from sunblend.api.spec import CapacityType
from sunblend.core import commands, headroom, policy, policy_state, problem, spotrisk
from tests.unit import pools

NOON = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
SPOT = ("r1", "gpu", CapacityType.SPOT)
OD = ("r1", "gpu", CapacityType.ON_DEMAND)


def _pool(**fields):
    fields.setdefault("gpuClasses", [pools.gpu_class(spot=1.0)])
    fields.setdefault("regions", [pools.region("r1", base=1000)])
    fields.setdefault(
        "policy", {"headroom": 0, "maxSpotFraction": 0.5, "spotLossServedFraction": 0, "minReplicasPerRegion": 0}
    )
    pool_spec = pools.pool_spec(**fields)
    return pool_spec, problem.from_spec(pool_spec, NOON)


def _step(pool_spec, base, state, at, **seen):
    seen.setdefault("ready", {})
    return policy.decide(pool_spec, base, policy.Observation(now=at, **seen), state)


def _nodes(decision):
    return {c.offer: c.nodes for c in decision.commands if isinstance(c, commands.SetNodes)}


def test_the_first_step_plans_the_hour_and_asks_for_its_nodes_with_reasons():
    pool_spec, base = _pool()
    decision = _step(pool_spec, base, policy.State(), NOON)
    assert decision.plan is not None and decision.plan.has_solution
    assert _nodes(decision) == {SPOT: 5, OD: 5}  # 10 nodes for 1,000 tokens/s, spot capped at half
    slices = {c.offer: c.replicas for c in decision.commands if isinstance(c, commands.ScaleSlice)}
    assert slices == {SPOT: 5, OD: 5}
    assert all("the plan for 12:00 UTC" in c.reason for c in decision.commands)
    assert decision.state.hour == NOON


def test_a_step_within_the_hour_makes_no_plan_and_no_command_once_the_nodes_are_there():
    pool_spec, base = _pool()
    first = _step(pool_spec, base, policy.State(), NOON)
    second = _step(
        pool_spec,
        base,
        first.state,
        NOON + dt.timedelta(minutes=1),
        ready={SPOT: 5, OD: 5},
        replicas={SPOT: 5, OD: 5},
        ready_replicas={SPOT: 5, OD: 5},
    )
    assert second.plan is None
    assert second.commands == ()


def test_a_spot_notice_is_covered_by_on_demand_at_once_learned_and_counted_once():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    notice = policy.Notice("spot-0", SPOT)
    seen = {"ready": {SPOT: 4, OD: 5}, "notices": (notice,)}
    decision = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=2), **seen)
    assert _nodes(decision)[OD] == 6
    assert [e.reason for e in decision.events] == ["SpotInterrupted", "FellBackToOnDemand"]
    risk = decision.state.spot_risk[SPOT]
    assert risk.cap == 4 and risk.until == NOON + dt.timedelta(minutes=2) + spotrisk.LOSS_WINDOW
    assert risk.lost == 1
    again = _step(pool_spec, base, decision.state, NOON + dt.timedelta(minutes=3), **seen)
    assert again.events == ()  # the same notice is not handled twice
    assert _nodes(again)[OD] == 6


def test_spot_lost_again_soon_after_the_retry_is_held_back_twice_as_long():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    first = _step(pool_spec, base, state, NOON, ready={SPOT: 4}, notices=(policy.Notice("a", SPOT),))
    retry = NOON + spotrisk.LOSS_WINDOW + dt.timedelta(minutes=5)  # the window ran out; spot was tried again
    second = _step(pool_spec, base, first.state, retry, ready={SPOT: 3}, notices=(policy.Notice("b", SPOT),))
    assert second.state.spot_risk[SPOT].window == 2 * spotrisk.LOSS_WINDOW


def test_spot_is_planned_again_at_the_next_plan_after_the_retry_window():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    lost = _step(
        pool_spec, base, state, NOON, ready={SPOT: 0}, notices=tuple(policy.Notice(f"n{i}", SPOT) for i in range(5))
    )
    assert lost.state.spot_risk[SPOT].cap == 0
    back = _step(pool_spec, base, lost.state, NOON + dt.timedelta(hours=1), ready={OD: 10})
    assert "ReturnedToSpot" in [e.reason for e in back.events]
    assert _nodes(back)[SPOT] == 5  # within the hour: one loss no longer holds spot back for hours


def test_a_refused_launch_is_not_a_loss_it_is_replaced_where_the_hour_needs_it():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state  # asks for 5 spot, 5 on-demand
    refused = tuple(policy.Notice(f"r{i}", SPOT, refused=True) for i in range(3))
    decision = _step(
        pool_spec, base, state, NOON + dt.timedelta(minutes=1), ready={OD: 5}, booting={SPOT: 2}, notices=refused
    )
    assert [e.reason for e in decision.events] == ["SpotUnavailable", "FellBackToOnDemand"]
    risk = decision.state.spot_risk[SPOT]
    assert risk.lost == 0 and risk.refused == 3 and risk.cap == 2
    assert risk.until == NOON + dt.timedelta(minutes=1) + spotrisk.REFUSAL_WINDOW
    assert _nodes(decision) == {OD: 8}  # 3 on-demand stand in for the 3 refused spot nodes


def test_a_refused_launch_of_the_next_hour_is_planned_again_with_the_cap():
    pool_spec, base = _pool()
    state = _step(
        pool_spec,
        base,
        policy.State(),
        NOON,
    ).state
    seen = {"ready": {SPOT: 5, OD: 5}, "replicas": {SPOT: 5, OD: 5}, "ready_replicas": {SPOT: 5, OD: 5}}
    ahead = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=52), **seen).state
    assert ahead.next_plan is not None
    grown = dataclasses.replace(ahead.next_plan, targets={SPOT: 7, OD: 7})
    state = dataclasses.replace(ahead, next_plan=grown)
    refused = tuple(policy.Notice(f"r{i}", SPOT, refused=True) for i in range(2))
    decision = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=53), notices=refused, **seen)
    assert decision.state.next_plan is not None and decision.state.next_plan.made_at == NOON + dt.timedelta(minutes=53)
    assert decision.state.next_plan.targets.get(SPOT, 0) <= 5  # planned again at what could be had
    assert "FellBackToOnDemand" not in [e.reason for e in decision.events]  # this hour did not need them


def test_live_demand_above_the_plan_adds_on_demand_at_once_and_removes_it_only_after_the_window():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    seen = {"ready": {SPOT: 5, OD: 5}, "metrics_available": True}
    surge = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=5), demand={"r1": 1500}, **seen)
    assert _nodes(surge) == {OD: 10}
    assert "above the plan" in next(c.reason for c in surge.commands if isinstance(c, commands.SetNodes))
    seen["ready"] = {SPOT: 5, OD: 10}
    state = surge.state
    for minute in range(6, 16):  # the surge's 1,500 tokens/s leave the recent window after 5 minutes
        calm = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=minute), demand={"r1": 900}, **seen)
        state = calm.state
        if minute < 15:
            assert _nodes(calm) == {}, minute  # low for less than the 300 s window: kept
    assert _nodes(calm) == {OD: 5}
    assert "stayed below the capacity for 300 s" in next(
        c.reason for c in calm.commands if isinstance(c, commands.SetNodes)
    )
    assert state.surge == {}


def test_no_surge_is_released_on_missing_data():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    seen = {"ready": {SPOT: 5, OD: 10}, "metrics_available": True}
    state = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=5), demand={"r1": 1500}, **seen).state
    for minute in range(6, 40):
        decision = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=minute), ready=seen["ready"])
        state = decision.state
    assert _nodes(decision) == {} and state.surge == {OD: 5}


def test_nothing_is_removed_while_metrics_are_unavailable():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    decision = _step(pool_spec, base, state, NOON, ready={SPOT: 5, OD: 9}, metrics_available=False)
    assert OD not in _nodes(decision)
    assert "metrics are unavailable" in next(c.reason for c in decision.commands if c.offer == OD)


def test_capacity_is_removed_only_once_its_replacement_is_ready():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    booting = _step(pool_spec, base, state, NOON, ready={OD: 9}, booting={SPOT: 5})
    assert _nodes(booting) == {}  # on-demand kept while spot boots
    ready = _step(pool_spec, base, state, NOON, ready={OD: 9, SPOT: 5})
    assert _nodes(ready) == {OD: 5}


def test_the_next_hour_is_planned_eight_minutes_early_and_booted_ahead():
    pool_spec, base = _pool(regions=[pools.region("r1", base=1000, peak=2000, busy=(13, 18))])
    state = _step(pool_spec, base, policy.State(), NOON).state
    early = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=52), ready={SPOT: 5, OD: 5})
    assert early.state.next_plan is not None and early.state.next_plan.hour == NOON + dt.timedelta(hours=1)
    assert _nodes(early) == {SPOT: 10, OD: 10}
    at_one = _step(pool_spec, base, early.state, NOON + dt.timedelta(hours=1), ready={SPOT: 10, OD: 10})
    assert at_one.plan is None  # the plan made ahead is used


def test_the_state_survives_a_round_trip_through_the_status_and_decides_the_same():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    state = _step(
        pool_spec,
        base,
        state,
        NOON + dt.timedelta(minutes=53),
        ready={SPOT: 4, OD: 5},
        demand={"r1": 1234.5},
        notices=(policy.Notice("x", SPOT),),
        metrics_available=True,
    ).state
    stored = json.loads(json.dumps(policy_state.to_document(state)))
    restored = policy_state.from_document(stored)
    assert restored == dataclasses.replace(state)
    at = NOON + dt.timedelta(hours=1, minutes=1)
    seen = {"ready": {SPOT: 4, OD: 6}, "demand": {"r1": 1300.0}, "metrics_available": True}
    assert _step(pool_spec, base, restored, at, **seen).commands == _step(pool_spec, base, state, at, **seen).commands


def test_an_unreadable_state_says_why():
    try:
        policy_state.from_document({"version": 99})
    except policy_state.UnreadableState as error:
        assert "version 99" in str(error)
    else:
        raise AssertionError("expected UnreadableState")


def test_measured_throughput_is_learned_while_busy_and_warned_when_far_from_declared():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    seen = {"ready": {SPOT: 5, OD: 5}, "ready_replicas": {SPOT: 5, OD: 5}, "metrics_available": True}
    busy = _step(pool_spec, base, state, NOON, demand={"r1": 600}, utilisation={"r1": 0.95}, **seen)
    assert busy.state.throughput == {"r1": 60.0}
    [warning] = policy.throughput_warnings(pool_spec, busy.state)
    assert "60 tokens/s measured, 100 declared" in warning
    idle = _step(pool_spec, base, state, NOON, demand={"r1": 300}, utilisation={"r1": 0.3}, **seen)
    assert idle.state.throughput == {}


def test_a_saturated_model_server_gets_more_replicas_even_when_measured_demand_fits():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    seen = {"ready": {SPOT: 5, OD: 5}, "metrics_available": True, "demand": {"r1": 950}}
    calm = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=1), **seen)
    assert _nodes(calm) == {}
    full = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=1), kv_cache={"r1": 0.97}, **seen)
    queued = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=1), waiting={"r1": 12}, **seen)
    assert _nodes(full) == _nodes(queued) == {OD: 6}  # 10% above what runs, on-demand


def test_capacity_that_never_becomes_ready_holds_removals_back_for_ten_minutes_at_most():
    pool_spec, base = _pool()
    state = _step(pool_spec, base, policy.State(), NOON).state
    stuck = {"ready": {OD: 9, SPOT: 5}, "replicas": {SPOT: 5}, "ready_replicas": {SPOT: 0}}
    held = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=1), **stuck)
    assert _nodes(held) == {}  # spot pods are starting on ready nodes: on-demand is kept
    later = _step(pool_spec, base, held.state, NOON + dt.timedelta(minutes=11), **stuck)
    assert _nodes(later) == {OD: 5}


def _errors_at(multiplier: float) -> headroom.ErrorBook:
    """Ten hours of minutes alternating between ``multiplier`` and 0.7 times the forecast."""
    book = headroom.ErrorBook()
    for minute in range(600):
        book = book.add(1000 * (multiplier if minute % 2 else 0.7), 1000, 60)
    return book


def test_a_service_target_sizes_the_plan_to_the_forecast_error_quantile_above_the_headroom_floor():
    policy_fields = {"headroom": 0.1, "maxSpotFraction": 0.5, "spotLossServedFraction": 0, "minReplicasPerRegion": 0}
    plain_spec, plain = _pool(policy=policy_fields)
    target_spec, target = _pool(policy={**policy_fields, "serviceTarget": 0.999})
    state = policy.State(errors={"r1": _errors_at(1.3)})
    assert headroom.multiplier(state.errors["r1"], 0.999, 0.1) == pytest.approx(1.3)
    assert sum(_nodes(_step(plain_spec, plain, state, NOON)).values()) == 11  # 1,000 tokens/s x 1.1
    sized = _step(target_spec, target, state, NOON)
    assert sum(_nodes(sized).values()) == 13  # x 1.3: the quantile, above the 10% floor
    assert sized.state.expected == {"r1": 1000}  # the forecast itself is kept, to learn its error
    calm = policy.State(errors={"r1": _errors_at(1.05)})
    assert sum(_nodes(_step(target_spec, target, calm, NOON)).values()) == 11  # the floor holds


def test_the_error_book_learns_each_minute_against_the_hours_forecast_and_survives_a_restart():
    pool_spec, base = _pool(
        policy={"headroom": 0, "maxSpotFraction": 0.5, "spotLossServedFraction": 0, "serviceTarget": 0.99}
    )
    state = _step(pool_spec, base, policy.State(), NOON).state
    for minute in range(1, 4):
        state = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=minute), demand={"r1": 1200}).state
    book = state.errors["r1"]
    assert book.hours == pytest.approx(2 / 60)  # the first measurement has nothing before it to stand for
    assert book.unserved_share(headroom.GRID.index(1.0)) == pytest.approx(200 / 1200)
    restored = policy_state.from_document(json.loads(json.dumps(policy_state.to_document(state))))
    assert restored.errors == state.errors and restored.spot_risk == state.spot_risk


def test_with_nothing_new_the_stored_state_stays_the_same_from_step_to_step():
    pool_spec, base = _pool()
    seen = {"ready": {SPOT: 5, OD: 5}, "replicas": {SPOT: 5, OD: 5}, "ready_replicas": {SPOT: 5, OD: 5}}
    state = _step(pool_spec, base, policy.State(), NOON, **seen).state
    documents = []
    for minute in range(1, 4):  # spot runs: its risk learns only hourly, so nothing is written each step
        state = _step(pool_spec, base, state, NOON + dt.timedelta(minutes=minute), **seen).state
        documents.append(policy_state.to_document(state))
    assert documents[0] == documents[1] == documents[2]
    assert SPOT in state.spot_risk
