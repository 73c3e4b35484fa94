"""core.commitments: hourly peaks from samples, and advice whose optimum is worked out by hand.

The pools here have one region and 1-GPU nodes that each serve 100 tokens/s, no headroom and
no minimum replicas, so a demand of N x 100 tokens/s needs exactly N nodes, and every cost can
be counted on one's fingers.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from sunblend.core import commitments
from tests.unit import pools

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
DAYS = 2
HOURS = 24 * DAYS
PEAK_HOURS = range(12, 18)  # 6 busy hours a day


def history(floor: float, peak: float, days: int = DAYS) -> commitments.History:
    """A floor of demand every hour, and a peak for six hours a day."""
    demand = tuple(peak if h % 24 in PEAK_HOURS else floor for h in range(24 * days))
    return commitments.History(start=START, demand={"r1": demand}, hours_without_data={"r1": 0})


def spec(committed: float | None = 2.0, spot: float | None = None, **policy: float):
    prices: dict[str, float | None] = {"committed": committed, "spot": spot}
    return pools.pool_spec(
        gpuClasses=[pools.gpu_class(**{k: v for k, v in prices.items() if v is not None})],
        policy={"headroom": 0, "maxSpotFraction": 1, "spotLossServedFraction": 0, "minReplicasPerRegion": 0, **policy},
    )


def advise(pool_spec, past: commitments.History, terms=None, fall: float = 0.2) -> commitments.Advice:
    sizing = commitments.sizing_problem(pool_spec, past)
    offered = terms if terms is not None else [commitments.pool_term(pool_spec)]
    return commitments.advise(sizing, past, offered, time.perf_counter, 30, fall)


def test_a_floor_is_committed_and_a_short_peak_is_not():
    # On-demand $3, committed $2 per GPU-hour: a committed GPU pays if it runs in over 2/3 of
    # hours. The floor's 3 nodes run every hour; the peak's 2 more run 6 h in 24 (25%): commit 3.
    advice = advise(spec(), history(300, 500))
    (term,) = advice.terms
    (row,) = term.commitments
    assert (row.gpu_class, row.region, row.gpus) == ("gpu", "r1", 3)
    assert row.break_even_ratio == pytest.approx(2 / 3)
    assert row.utilisation_ratio == pytest.approx(1.0)
    peak_hours = len(PEAK_HOURS) * DAYS
    # Holding 3: 3 GPUs x $2 x 48 h, plus 2 on-demand GPUs x $3 in the 12 peak hours.
    assert term.dollars == pytest.approx(3 * 2 * HOURS + 2 * 3 * peak_hours)  # 360
    # Holding none: 3 on-demand GPUs off-peak, 5 at the peak.
    assert term.none_dollars == pytest.approx(3 * 3 * (HOURS - peak_hours) + 5 * 3 * peak_hours)  # 504
    assert term.saving_dollars == pytest.approx(144)
    assert row.saving_dollars == pytest.approx(144)  # the only row: without it, nothing is held
    # The bound lets each hour commit to its own need at $2: 3 x 2 x 36 + 5 x 2 x 12 = 336.
    assert term.lower_bound_dollars == pytest.approx(3 * 2 * (HOURS - peak_hours) + 5 * 2 * peak_hours, rel=1e-3)
    assert term.gap == pytest.approx((360 - 336) / 360, abs=1e-3)
    # Commit 4 instead: 4 x $2 x 48 + 1 x $3 x 12 = 420 > 360; commit 2: 2 x 2 x 48 + 3 x 3 x 12 ... = 372.
    assert term.dollars < 4 * 2 * HOURS + 1 * 3 * peak_hours
    assert term.dollars < 2 * 2 * HOURS + 1 * 3 * (HOURS - peak_hours) + 3 * 3 * peak_hours


def test_a_fall_in_demand_is_costed_against_the_best_plan_holding_none():
    # At 0.8x: the floor 240 still needs 3 nodes, the peak 400 needs 4.
    (term,) = advise(spec(), history(300, 500)).terms
    peak_hours = len(PEAK_HOURS) * DAYS
    assert term.fall_dollars == pytest.approx(3 * 2 * HOURS + 1 * 3 * peak_hours)  # 324
    assert term.fall_none_dollars == pytest.approx(3 * 3 * (HOURS - peak_hours) + 4 * 3 * peak_hours)  # 468
    assert term.fall_extra_dollars == pytest.approx(-144)  # the commitment still saves


def test_a_thin_margin_turns_into_a_loss_when_demand_falls():
    # A flat 500 tokens/s and a committed price just under on-demand ($2.9 vs $3): commit all 5.
    # At 0.8x only 4 nodes are needed: 5 x 2.9 = 14.5 $/h held against 4 x 3 = 12 $/h with none.
    (term,) = advise(spec(committed=2.9), history(500, 500)).terms
    (row,) = term.commitments
    assert row.gpus == 5
    assert row.break_even_ratio == pytest.approx(2.9 / 3)
    assert term.saving_dollars == pytest.approx((3 - 2.9) * 5 * HOURS)
    assert term.fall_extra_dollars == pytest.approx((14.5 - 12) * HOURS)


def test_each_term_is_advised_on_its_own_at_its_price():
    # A deep discount ($0.60, 20% of on-demand) pays even for the 25%-of-hours peak: commit 5.
    cheap = commitments.Term("3y", {("gpu", "r1"): 0.6})
    advice = advise(spec(), history(300, 500), [commitments.pool_term(spec()), cheap])
    by_term = {t.term: t for t in advice.terms}
    assert [c.gpus for c in by_term["pool"].commitments] == [3]
    assert [c.gpus for c in by_term["3y"].commitments] == [5]
    assert by_term["3y"].dollars == pytest.approx(5 * 0.6 * HOURS)
    assert by_term["3y"].none_dollars == by_term["pool"].none_dollars


def test_the_spot_loss_rule_decides_how_much_stays_off_spot():
    # Spot at $1 beats committed at $2, but half the demand must survive losing all spot:
    # 2 non-spot nodes every hour (150 -> 2), 3 at the peak (250 -> 3, 25% of hours): commit 2.
    pool_spec = spec(spot=1.0, spotLossServedFraction=0.5)
    (term,) = advise(pool_spec, history(300, 500)).terms
    (row,) = term.commitments
    assert row.gpus == 2
    peak_hours = len(PEAK_HOURS) * DAYS
    # Off-peak: 2 committed + 1 spot; peak: 2 committed + 1 on-demand + 2 spot.
    expected = 2 * 2 * HOURS + 1 * 1 * (HOURS - peak_hours) + (1 * 3 + 2 * 1) * peak_hours
    assert term.dollars == pytest.approx(expected)


def test_nothing_is_committed_when_nothing_pays():
    # Spot covers everything at $1 with no spot-loss rule: a $2 commitment never pays.
    (term,) = advise(spec(spot=1.0), history(300, 500)).terms
    assert term.commitments == ()
    assert term.saving_dollars == pytest.approx(0)


def test_a_pool_without_committed_prices_needs_a_term():
    pool_spec = spec(committed=None)
    assert commitments.pool_term(pool_spec) is None
    with pytest.raises(commitments.AdviceError, match="no commitment term"):
        advise(pool_spec, history(300, 500), terms=[])
    (term,) = advise(pool_spec, history(300, 500), [commitments.Term("1y", {("gpu", "r1"): 2.0})]).terms
    assert [c.gpus for c in term.commitments] == [3]


def test_a_term_for_a_class_the_pool_lacks_is_refused():
    with pytest.raises(commitments.AdviceError, match="'a100'"):
        advise(spec(), history(300, 500), [commitments.Term("1y", {("a100", "r1"): 2.0})])


def test_hourly_peaks_take_the_highest_value_in_force_each_hour():
    t = START
    samples = {
        "r1": [(t, 10.0), (t + dt.timedelta(minutes=20), 50.0), (t + dt.timedelta(minutes=40), 20.0)],
        # r2's first value holds into hour 1 until its next sample; its last is at 02:30.
        "r2": [(t, 5.0), (t + dt.timedelta(hours=1, minutes=30), 7.0), (t + dt.timedelta(hours=2, minutes=30), 1.0)],
    }
    past = commitments.hourly_peaks(samples)
    assert past.start == START and past.hours == 3
    assert past.demand["r1"] == (50.0, 20.0, 20.0)  # 20 holds until r1's next sample: none, so to the end
    assert past.demand["r2"] == (5.0, 7.0, 7.0)


def test_hourly_peaks_with_a_hold_leave_gaps_empty_and_count_them():
    t = START + dt.timedelta(minutes=5)
    samples = {"r1": [(t, 10.0), (t + dt.timedelta(hours=3), 30.0)]}
    past = commitments.hourly_peaks(samples, hold=dt.timedelta(minutes=5))
    assert past.demand["r1"] == (10.0, 0.0, 0.0, 30.0)
    assert past.hours_without_data == {"r1": 2}


def test_hourly_peaks_refuse_no_samples_and_a_history_too_long():
    with pytest.raises(commitments.AdviceError, match="no demand samples"):
        commitments.hourly_peaks({"r1": []})
    far = START + dt.timedelta(hours=commitments.MAX_HOURS + 5)
    with pytest.raises(commitments.AdviceError, match="spans"):
        commitments.hourly_peaks({"r1": [(START, 1.0), (far, 1.0)]})


def test_a_search_cut_short_says_so_and_still_reports_exact_costs():
    pool_spec, past = spec(), history(300, 500)
    sizing = commitments.sizing_problem(pool_spec, past)
    (term,) = commitments.advise(sizing, past, [commitments.pool_term(pool_spec)], time.perf_counter, 1e-9).terms
    assert not term.finished
    assert term.none_dollars == pytest.approx(504)  # costed exactly whatever the search did
    (done,) = advise(pool_spec, past).terms
    assert done.finished
