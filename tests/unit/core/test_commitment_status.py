"""core.commitment_status: the advice set beside what is held, costed by hand.

As in test_commitments.py: one region, 1-GPU nodes serving 100 tokens/s each, on-demand $3 and
committed $2 per GPU-hour, so a committed GPU pays if it runs in over 2/3 of hours. Demand is
300 tokens/s, and 500 from 12:00 to 18:00 UTC, sampled every 5 minutes for two days: the advice
is to hold the floor's 3 GPUs.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from sunblend.core import commitment_status, commitments
from tests.unit import pools

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=5)
HOURS = 48
PEAK_HOURS = 12  # 6 a day
MONTH = 730 / HOURS  # dollars over the history to dollars per month
WINDOW = commitment_status.Window(START + dt.timedelta(hours=HOURS), dt.timedelta(days=14), STEP)
NOW = START + dt.timedelta(hours=HOURS, minutes=3)


def samples(floor: float = 300.0, peak: float = 500.0) -> dict[str, list[tuple[dt.datetime, float]]]:
    points = []
    for k in range(HOURS * 12):
        moment = START + k * STEP
        points.append((moment, peak if 12 <= moment.hour < 18 else floor))
    return {"r1": points}


def pool_spec(held: int = 0, committed: float | None = 2.0):
    prices = {} if committed is None else {"committed": committed}
    fields = {"gpuClasses": [pools.gpu_class(**prices)]}
    if held:
        fields["commitments"] = [{"gpuClass": "gpu", "region": "r1", "gpus": held}]
    return pools.pool_spec(**fields)


def advise(held: int = 0, **kwargs):
    return commitment_status.advise_pool(
        pool_spec(held), samples(**kwargs), WINDOW, time.perf_counter, 30, NOW, generation=4
    )


def test_what_to_buy_is_the_advice_beyond_what_is_held():
    advice = advise(held=1)
    (row,) = advice.commitments
    assert (row.gpu_class, row.region, row.advised_gpus, row.held_gpus, row.buy_gpus) == ("gpu", "r1", 3, 1, 2)
    assert row.break_even_ratio == pytest.approx(2 / 3, abs=1e-4)
    assert row.utilization_ratio == pytest.approx(1.0)
    assert advice.term == "pool"
    # Holding 3: 3 x $2 x 48 h + 2 on-demand GPUs x $3 x 12 peak hours = 360. Holding none:
    # 3 x $3 x 36 + 5 x $3 x 12 = 504. Holding the 1 held: 96 + 2 x $3 x 36 + 4 x $3 x 12 = 456.
    assert advice.saving_dollars_per_month == pytest.approx(round(144 * MONTH, 2))
    assert advice.saving_over_held_dollars_per_month == pytest.approx(round(96 * MONTH, 2))
    # 20% less demand (240 and 400 tokens/s: 3 and 4 nodes): holding 3 costs 288 + 36 = 324, none 468.
    assert advice.demand_fall_ratio == 0.2
    assert advice.demand_fall_extra_dollars_per_month == pytest.approx(round(-144 * MONTH, 2))
    assert advice.history_hours == HOURS
    assert advice.history_start == "2026-11-02T00:00:00Z"
    assert advice.history_end == "2026-11-04T00:00:00Z"
    assert advice.history_window == "14d"
    assert advice.computed_at == "2026-11-04T00:03:00Z"
    assert advice.observed_generation == 4
    assert advice.error is None


def test_the_saving_per_month_against_none_is_the_clis():
    pool = pool_spec()
    peaks = commitments.hourly_peaks(samples(), STEP)
    sizing = commitments.sizing_problem(pool, peaks)
    (term,) = commitments.advise(sizing, peaks, [commitments.pool_term(pool)], time.perf_counter, 30).terms
    advice = advise()
    assert advice.saving_dollars_per_month == round(term.per_month(term.saving_dollars, peaks.hours), 2)
    (row,) = advice.commitments
    assert (row.held_gpus, row.buy_gpus) == (0, 3)
    # Nothing held: buying the advice saves what the advice saves against holding none.
    assert advice.saving_over_held_dollars_per_month == pytest.approx(advice.saving_dollars_per_month, abs=0.01)


def test_more_held_than_advised_buys_nothing():
    advice = advise(held=4)
    (row,) = advice.commitments
    assert (row.advised_gpus, row.held_gpus, row.buy_gpus) == (3, 4, 0)
    assert advice.saving_over_held_dollars_per_month == 0.0
    assert "commit to nothing more" in commitment_status.message(advice)


def test_holding_costs_the_commitments_whether_used_or_not():
    pool = pool_spec()
    peaks = commitments.hourly_peaks(samples(), STEP)
    none = commitment_status.dollars_holding(pool, {}, peaks, time.perf_counter)
    assert none == pytest.approx(504)
    assert commitment_status.dollars_holding(pool, {("gpu", "r1"): 3}, peaks, time.perf_counter) == pytest.approx(360)
    # 6 held: 4 x $2 x 36 idle off-peak, all 6 at $2 over 48 h, nothing on-demand: 576.
    assert commitment_status.dollars_holding(pool, {("gpu", "r1"): 6}, peaks, time.perf_counter) == pytest.approx(576)


def test_a_pool_without_a_committed_price_has_nothing_to_advise_on():
    with pytest.raises(commitments.AdviceError, match="no committed price"):
        commitment_status.advise_pool(pool_spec(committed=None), samples(), WINDOW, time.perf_counter, 30, NOW, None)


def test_changed_looks_at_what_is_advised_not_at_the_money_or_the_times():
    advice = advise(held=1)
    document = advice.model_dump(by_alias=True)
    assert not commitment_status.changed(document, advice)
    assert commitment_status.changed(None, advice)
    moved = dict(document, savingDollarsPerMonth=1.0, computedAt="2026-11-05T00:00:00Z")
    assert not commitment_status.changed(moved, advice)
    assert commitment_status.changed(dict(document, commitments=[]), advice)
    failed = commitment_status.failed("Prometheus is down", WINDOW, NOW, 4)
    assert commitment_status.changed(failed.model_dump(by_alias=True), advice)


def test_the_event_message_says_what_to_buy_and_what_it_saves():
    text = commitment_status.message(advise(held=1))
    assert text.startswith("commit now to 2 gpu GPUs in r1 (term pool); saves $1,460.00/month over what is held")
    assert "$2,190.00/month against holding none" in text
    assert "still saves $2,190.00/month if demand falls 20%" in text


def test_span_text_is_what_the_cli_reads():
    assert commitment_status.span_text(dt.timedelta(days=14)) == "14d"
    assert commitment_status.span_text(dt.timedelta(hours=36)) == "36h"
    assert commitment_status.span_text(dt.timedelta(minutes=90)) == "90m"
    assert commitment_status.span_text(dt.timedelta(seconds=45)) == "45s"
