"""The follow-the-sun forecast: declared profiles, learned hour-of-week history, live correction."""

from __future__ import annotations

import datetime as dt

import pytest

from sunblend.core import forecast
from tests.unit import pools

UTC = dt.UTC


def _region(tz="Asia/Kolkata", base=100.0, peak=1000.0, busy=(9, 18)):
    return pools.pool_spec(regions=[pools.region("r", tz=tz, base=base, peak=peak, busy=busy)]).regions[0]


def test_busy_hours_wrap_past_midnight():
    profile = _region(busy=(22, 2)).demand
    assert [h for h in range(24) if forecast.is_busy(profile, h)] == [0, 1, 22, 23]


def test_the_declared_profile_is_in_local_time():
    region = _region(tz="Asia/Kolkata", busy=(9, 18))
    hours = forecast.hour_starts(dt.datetime(2026, 11, 23, 0, tzinfo=UTC), 24)
    peak = [h.hour for h, d in zip(hours, forecast.regional_forecast(region, hours), strict=True) if d == 1000]
    # 09:00-18:00 IST is 03:30-12:30 UTC: the UTC hours 03:00..12:00 each hold busy minutes.
    assert peak == list(range(3, 13))


def test_a_learned_profile_recovers_a_planted_daily_pattern_in_the_right_zone():
    # Planted: 5000 tok/s from 20:00 to 23:00 local Tokyo time, 500 otherwise, for two weeks.
    region = _region(tz="Asia/Tokyo", base=100, peak=100)
    profile = forecast.HourOfWeekProfile("Asia/Tokyo")
    start = dt.datetime(2026, 11, 2, 0, tzinfo=UTC)
    for h in range(14 * 24):
        at = start + dt.timedelta(hours=h)
        local_hour = at.astimezone(forecast.zoneinfo.ZoneInfo("Asia/Tokyo")).hour
        profile.add(at, 5000.0 if 20 <= local_hour < 23 else 500.0)
    hours = forecast.hour_starts(dt.datetime(2026, 11, 16, 0, tzinfo=UTC), 24)
    values = forecast.regional_forecast(region, hours, profile, full_at=2)
    high = [h.hour for h, v in zip(hours, values, strict=True) if v == pytest.approx(5000.0)]
    assert high == [11, 12, 13]  # 20:00-23:00 JST is 11:00-14:00 UTC
    assert all(v == pytest.approx(500.0) for h, v in zip(hours, values, strict=True) if h.hour not in (11, 12, 13))


def test_short_history_is_blended_with_the_declared_profile():
    assert forecast.blend(declared=100, learned=300, samples=1, full_at=4) == pytest.approx(150)
    assert forecast.blend(declared=100, learned=300, samples=4, full_at=4) == pytest.approx(300)
    assert forecast.blend(declared=100, learned=None, samples=0, full_at=4) == 100


def test_hour_of_week_follows_london_across_the_clock_change():
    # 2026-03-29 01:00 UTC: London goes from GMT to BST. 08:00 UTC is 08:00 before, 09:00 after.
    assert forecast.hour_of_week(dt.datetime(2026, 3, 28, 8, tzinfo=UTC), "Europe/London") == 5 * 24 + 8
    assert forecast.hour_of_week(dt.datetime(2026, 3, 29, 8, tzinfo=UTC), "Europe/London") == 6 * 24 + 9


def test_the_live_correction_moves_towards_actual_and_fades_over_the_hours():
    ratio = 1.0
    for _ in range(20):
        ratio = forecast.update_correction(ratio, actual=150, forecast=100)
    assert ratio == pytest.approx(1.5, rel=1e-3)
    region = _region(base=100, peak=100)
    hours = forecast.hour_starts(dt.datetime(2026, 11, 23, 0, tzinfo=UTC), 4)
    values = forecast.regional_forecast(region, hours, correction=1.5, decay=0.5)
    assert values == pytest.approx((150.0, 125.0, 112.5, 106.25))


def test_a_few_days_of_history_shape_the_forecast_before_a_full_week():
    profile = forecast.HourOfWeekProfile("Europe/London")
    start = dt.datetime(2026, 11, 23, 0, tzinfo=UTC)  # a Monday
    for h in range(2 * 24):  # Monday and Tuesday: 800 at 14:00, 200 otherwise
        at = start + dt.timedelta(hours=h)
        profile.add(at, 800.0 if at.hour == 14 else 200.0)
    thursday_14 = forecast.hour_of_week(dt.datetime(2026, 11, 26, 14, tzinfo=UTC), "Europe/London")
    assert profile.mean(thursday_14) == 800.0 and profile.samples(thursday_14) == 2


def test_the_live_forecast_floors_the_first_hour_at_the_last_measured_demand():
    region = _region(base=100, peak=100)
    hours = forecast.hour_starts(dt.datetime(2026, 11, 23, 0, tzinfo=UTC), 3)
    assert forecast.live_forecast(region, hours, floor=450.0)[0] == 450.0
    corrected = forecast.live_forecast(region, hours, current=200.0)
    assert corrected[0] == pytest.approx(130.0)  # EWMA (alpha 0.3) of 200 against a forecast of 100
