"""Demand forecast for the planner: tokens/s per region for each hour of the horizon.

This module turns the declared daily profile into hourly demand, evaluating each hour in the
region's own IANA time zone so that daylight-saving days come out right. The time is passed in.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping

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


def declared_demand(region: spec.Region, at: dt.datetime) -> float:
    """Demand in tokens/s the declared profile gives for the hour starting at ``at``."""
    local = at.astimezone(zoneinfo.ZoneInfo(region.time_zone))
    profile = region.demand
    return profile.peak_tokens_per_second if is_busy(profile, local.hour) else profile.baseline_tokens_per_second


def declared_forecast(
    pool_spec: spec.InferencePoolSpec, hours: tuple[dt.datetime, ...]
) -> Mapping[str, tuple[float, ...]]:
    """Hourly demand per region from the declared profiles."""
    return {r.name: tuple(declared_demand(r, at) for at in hours) for r in pool_spec.regions}


def local_label(at: dt.datetime, time_zone: str) -> str:
    """``14:00 Asia/Kolkata``: how an hour reads in a region's time zone."""
    return f"{at.astimezone(zoneinfo.ZoneInfo(time_zone)):%H:%M} {time_zone}"
