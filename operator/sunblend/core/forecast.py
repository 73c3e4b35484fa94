"""Demand forecast for the planner: tokens/s per region for each hour of the horizon.

This module turns the declared daily profile into hourly demand, evaluating each hour in the
region's own IANA time zone so that daylight-saving days come out right. The time is passed in.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence

from sunblend.api import spec

HOUR = dt.timedelta(hours=1)


def hour_starts(now: dt.datetime, hours: int) -> tuple[dt.datetime, ...]:
    """UTC starts of ``hours`` consecutive hours, the first being the hour that contains ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    first = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return tuple(first + i * HOUR for i in range(hours))


def is_busy(profile: spec.DemandProfile, local_hour: int) -> bool:
    """Whether ``local_hour`` falls in the profile's busy hours (which may wrap past midnight)."""
    start, end = profile.busy_hours.start, profile.busy_hours.end
    if start < end:
        return start <= local_hour < end
    return local_hour >= start or local_hour < end


QUARTERS = tuple(dt.timedelta(minutes=m) for m in (0, 15, 30, 45))


def declared_demand(region: spec.Region, at: dt.datetime) -> float:
    """Demand in tokens/s the declared profile gives for the hour starting at ``at``.

    The hour is as busy as its busiest quarter: in zones offset by half or three quarters of an
    hour (Asia/Kolkata, Asia/Kathmandu), busy hours start in the middle of a UTC hour.
    """
    zone = zoneinfo.ZoneInfo(region.time_zone)
    profile = region.demand
    busy = any(is_busy(profile, (at + quarter).astimezone(zone).hour) for quarter in QUARTERS)
    return profile.peak_tokens_per_second if busy else profile.baseline_tokens_per_second


def declared_forecast(
    pool_spec: spec.InferencePoolSpec, hours: tuple[dt.datetime, ...]
) -> Mapping[str, tuple[float, ...]]:
    """Hourly demand per region from the declared profiles."""
    return {r.name: tuple(declared_demand(r, at) for at in hours) for r in pool_spec.regions}


def local_label(at: dt.datetime, time_zone: str) -> str:
    """``14:00 Asia/Kolkata``: how an hour reads in a region's time zone."""
    return f"{at.astimezone(zoneinfo.ZoneInfo(time_zone)):%H:%M} {time_zone}"


HOURS_PER_WEEK = 168
# Samples an hour-of-week bucket needs before history fully replaces the declared profile.
FULL_HISTORY_SAMPLES = 3


def hour_of_week(at: dt.datetime, time_zone: str) -> int:
    """0..167: Monday 00:00 local is 0. Computed in the region's zone, so DST days come out right."""
    local = at.astimezone(zoneinfo.ZoneInfo(time_zone))
    return local.weekday() * 24 + local.hour


class HourOfWeekProfile:
    """Demand learned per local hour of the week, from samples added as they are observed.

    Until an hour of the week has been seen, the same local hour of any day stands in for it, so
    a few days of history already shape the forecast. Incremental (running sums): the simulator
    feeds it every hour, the operator a Prometheus range query. Pure: no clock, no I/O.
    """

    def __init__(self, time_zone: str) -> None:
        self.time_zone = time_zone
        self._sums = [0.0] * HOURS_PER_WEEK
        self._counts = [0] * HOURS_PER_WEEK
        self._day_sums = [0.0] * 24
        self._day_counts = [0] * 24

    def add(self, at: dt.datetime, tokens_per_second: float, weight: int = 1) -> None:
        """Record demand observed at ``at`` (``weight`` samples' worth)."""
        bucket = hour_of_week(at, self.time_zone)
        self._sums[bucket] += tokens_per_second * weight
        self._counts[bucket] += weight
        self._day_sums[bucket % 24] += tokens_per_second * weight
        self._day_counts[bucket % 24] += weight

    def mean(self, bucket: int) -> float | None:
        """Mean demand for an hour of the week (or, unseen, for that hour of the day); None with no samples."""
        if self._counts[bucket]:
            return self._sums[bucket] / self._counts[bucket]
        count = self._day_counts[bucket % 24]
        return self._day_sums[bucket % 24] / count if count else None

    def samples(self, bucket: int) -> int:
        """How many samples stand behind ``mean(bucket)``."""
        return self._counts[bucket] or self._day_counts[bucket % 24]


def blend(declared: float, learned: float | None, samples: int, full_at: int) -> float:
    """Declared and learned demand, weighted by how much history there is (all history at ``full_at``)."""
    if learned is None or samples <= 0:
        return declared
    weight = min(1.0, samples / full_at)
    return weight * learned + (1 - weight) * declared


def update_correction(ratio: float, actual: float, forecast: float, alpha: float = 0.3) -> float:
    """EWMA of actual / forecast demand: the live correction applied to the next hours."""
    if forecast <= 0:
        return ratio
    return alpha * (actual / forecast) + (1 - alpha) * ratio


def regional_forecast(
    region: spec.Region,
    hours: tuple[dt.datetime, ...],
    profile: HourOfWeekProfile | None = None,
    correction: float = 1.0,
    full_at: int = FULL_HISTORY_SAMPLES,
    decay: float = 0.7,
) -> tuple[float, ...]:
    """Demand for ``hours``: declared profile blended with learned history, corrected live.

    ``profile`` holds samples as counted by its caller: with hourly samples ``full_at`` is a
    number of weeks. The correction (actual / forecast, an EWMA) applies fully to the first
    hour and fades by ``decay`` each hour after.
    """
    values = []
    for i, at in enumerate(hours):
        declared = declared_demand(region, at)
        if profile is None:
            base = declared
        else:
            bucket = hour_of_week(at, region.time_zone)
            base = blend(declared, profile.mean(bucket), profile.samples(bucket), full_at)
        factor = 1 + (correction - 1) * decay**i
        values.append(max(0.0, base * factor))
    return tuple(values)


def live_forecast(
    region: spec.Region,
    hours: tuple[dt.datetime, ...],
    history: Sequence[tuple[dt.datetime, float]] = (),
    current: float | None = None,
    floor: float | None = None,
    alpha: float = 0.3,
) -> tuple[float, ...]:
    """The operator's forecast for one region: declared profile, learned history, live correction.

    ``history`` is measured demand (e.g. hourly samples from Prometheus); ``current`` is demand
    measured now, which corrects the next hours through the EWMA; ``floor`` (the last measured
    demand, when measurements are missing) keeps the first hour from planning below it: no
    scale-down on missing data.
    """
    profile: HourOfWeekProfile | None = None
    if history:
        profile = HourOfWeekProfile(region.time_zone)
        for at, value in history:
            profile.add(at, value)
    base = regional_forecast(region, hours, profile)
    correction = 1.0
    if current is not None and base and base[0] > 0:
        correction = update_correction(1.0, current, base[0], alpha)
    values = list(regional_forecast(region, hours, profile, correction))
    if floor is not None and values:
        values[0] = max(values[0], floor)
    return tuple(values)
