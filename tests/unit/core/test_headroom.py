"""Headroom from the forecast's own error: the quantile that meets a service target on known noise."""

from __future__ import annotations

import random
import statistics

import pytest

from sunblend.core import headroom

FORECAST = 1000.0


def _book(noise: float, minutes: int, seed: int) -> headroom.ErrorBook:
    rng = random.Random(seed)
    book = headroom.ErrorBook()
    for _ in range(minutes):
        book = book.add(FORECAST * (1 + rng.gauss(0, noise)), FORECAST, 60)
    return book


def test_the_multiplier_matches_the_normal_quantile_and_meets_the_target_on_fresh_noise():
    noise, target = 0.1, 0.999
    book = _book(noise, minutes=20_000, seed=1)
    chosen = headroom.multiplier(book, target, floor=0.0)
    # Independent minutes: excursions last one minute, so the surge never comes in time and the
    # unserved share is E[max(0, e - k)] for e ~ N(0, noise). Solve for k by bisection.
    normal = statistics.NormalDist(0, noise)

    def shortfall(k: float) -> float:
        z = k / noise
        return noise * (statistics.NormalDist().pdf(z) - z * (1 - statistics.NormalDist().cdf(z)))

    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if shortfall(mid) > 1 - target else (low, mid)
    assert normal.stdev == noise
    exact = 1 + high  # about 1.193
    assert exact <= chosen <= exact + 0.03  # the grid's next step up, with sampling noise
    fresh = random.Random(2)
    served = demanded = 0.0
    for _ in range(20_000):
        demand = FORECAST * (1 + fresh.gauss(0, noise))
        served += min(demand, chosen * FORECAST)
        demanded += demand
    assert served / demanded >= target


def test_excursions_the_surge_covers_count_only_until_it_can_serve():
    book = headroom.ErrorBook()
    for _ in range(60):  # an hour at 1.5 x the forecast: the surge serves after SURGE_REACTION
        book = book.add(1.5 * FORECAST, FORECAST, 60)
    index = headroom.GRID.index(1.0)
    assert book.unserved_share(index) == pytest.approx(0.5 * headroom.SURGE_REACTION / (1.5 * 3600))


def test_the_floor_holds_and_too_little_data_gives_the_floor():
    assert headroom.multiplier(None, 0.999, floor=0.05) == 1.05
    short = _book(0.3, minutes=60, seed=3)  # an hour of data: not trusted yet
    assert headroom.multiplier(short, 0.999, floor=0.05) == 1.05
    calm = _book(0.0, minutes=600, seed=4)  # a perfect forecast: the floor
    assert headroom.multiplier(calm, 0.999, floor=0.05) == 1.05


def test_old_errors_weigh_less_after_the_half_life():
    book = _book(0.3, minutes=600, seed=5).decayed(headroom.HALF_LIFE)
    fresh = _book(0.3, minutes=600, seed=5)
    assert book.demand == pytest.approx(fresh.demand / 2)
    assert book.unserved_share(10) == pytest.approx(fresh.unserved_share(10))


def test_a_target_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="service target"):
        headroom.multiplier(None, 1.5, floor=0.0)
