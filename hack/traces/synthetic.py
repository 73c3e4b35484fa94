"""Deterministic synthetic traces for the simulator's tests: diurnal demand, spot outages, prices.

Every number comes from a seeded generator, so the same arguments always give the same bytes. Each
(seed, region[, gpu class], stream) pair has its own random stream, so adding a region does not
change the traces of the others.

Demand (``generate_demand``): each region follows a daily curve on its *local* wall clock (its IANA
time zone, daylight saving included)::

    demand = base + (peak - base) * shape(local hour) * day factor, then x (1 + noise)

``shape`` is 0 outside the busy hours, rises over a raised-cosine ramp centred on the busy start,
falls over one centred on the busy end, and inside is a gentle hump (0.9 to 1.0) whose maximum,
1, is at the middle of the busy hours: with busy hours 9-21 the peak is at 15:00 local. The day
factor is 1 on local weekdays and ``weekend_factor`` on local Saturdays and Sundays (it scales
only the part above the baseline). The noise is a slow AR(1) process (10-minute correlation time)
with standard deviation ``noise`` (3 % by default), so it wiggles rather than jitters.

Spot (``generate_spot``): each region/GPU class has ``normal_gpus`` spot GPUs, except in outage
windows. The number of outages is Poisson with mean ``outages_per_day * days`` (at least one), their
starts are uniform over the trace and their lengths uniform between ``outage_minutes``; outages
alternate between a total outage (0 GPUs, always the first) and a partial one (``low_gpus``).

Prices (``generate_prices``): constant committed / spot / on-demand prices per GPU-hour, scaled per
region by a seeded factor within +/- ``jitter``; the spot price changes once per region/class, by
``spot_change``, at the step nearest the middle of the trace.

CLI (writes DIR/demand.csv, DIR/spot.csv, DIR/prices.csv and prints a summary)::

    python hack/traces/synthetic.py --out DIR --days 3 --step-seconds 60 \\
        --regions ap-south-1:Asia/Kolkata,eu-west-2:Europe/London --gpu-class h100 --seed 7 \\
        --base 6000 --peak 30000

A region may carry its own busy hours as a third field, ``name:Zone:START-END`` (local hours,
END may be past midnight, e.g. ``18-2``); the others use ``--busy-hours`` (default 9-21).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import zlib
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tracefmt
from tracefmt import DemandSeries, PriceRow, SpotSeries, TraceError

DEFAULT_START = "2024-05-12T00:00:00Z"
DEFAULT_BUSY_HOURS = (9.0, 21.0)
RAMP_HOURS = 2.0
HUMP_FLOOR = 0.9
NOISE_CORRELATION_SECONDS = 600.0
_DEMAND, _SPOT, _PRICES = 1, 2, 3


@dataclass(frozen=True)
class Region:
    """A region, its IANA time zone and its local busy hours (end may be past midnight)."""

    name: str
    time_zone: str
    busy_start: float = DEFAULT_BUSY_HOURS[0]
    busy_end: float = DEFAULT_BUSY_HOURS[1]


def parse_busy_hours(text: str) -> tuple[float, float]:
    """``9-21`` -> (9.0, 21.0): local start and end hours, each in [0, 24)."""
    start, sep, end = text.partition("-")
    try:
        hours = (float(start), float(end))
    except ValueError as error:
        raise TraceError(f"busy hours {text!r} must look like 9-21") from error
    if not sep or not all(0 <= h < 24 for h in hours) or hours[0] == hours[1]:
        raise TraceError(f"busy hours {text!r} must be two different hours in [0, 24), e.g. 9-21")
    if (hours[1] - hours[0]) % 24 > 24 - 2 * RAMP_HOURS:
        raise TraceError(f"busy hours {text!r} leave too short a night for the {RAMP_HOURS:g}-hour ramps")
    return hours


def parse_regions(text: str, default_busy: tuple[float, float] = DEFAULT_BUSY_HOURS) -> list[Region]:
    """``ap-south-1:Asia/Kolkata,eu-west-2:Europe/London:8-19`` -> regions (zones are checked)."""
    regions = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) not in (2, 3) or not all(fields):
            raise TraceError(f"region {item!r} must be name:IANA_zone or name:IANA_zone:START-END")
        try:
            zoneinfo.ZoneInfo(fields[1])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise TraceError(f"region {fields[0]}: unknown time zone {fields[1]!r}") from error
        busy = parse_busy_hours(fields[2]) if len(fields) == 3 else default_busy
        regions.append(Region(fields[0], fields[1], *busy))
    names = [r.name for r in regions]
    if not regions or len(set(names)) != len(names):
        raise TraceError("give at least one region, each name once")
    return regions


def _stream(seed: int, *keys: str | int) -> np.random.Generator:
    """A random stream that depends only on the seed and the keys (strings hashed stably, not by hash())."""
    entropy = [seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(entropy)


def _ramp(x: np.ndarray) -> np.ndarray:
    """Raised cosine from 0 (x <= -RAMP/2) to 1 (x >= RAMP/2)."""
    u = np.clip(x / RAMP_HOURS + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def daily_shape(local_hours: np.ndarray, busy_start: float, busy_end: float) -> np.ndarray:
    """Demand shape in [0, 1] at local clock hours (floats in [0, 24)); 1 at the middle of the busy hours."""
    length = (busy_end - busy_start) % 24
    night = 24 - length
    # Hours since the busy start, on the circle cut in the middle of the night: in [-night/2, 24 - night/2).
    x = (np.asarray(local_hours, dtype=float) - busy_start + night / 2) % 24 - night / 2
    hump = HUMP_FLOOR + (1 - HUMP_FLOOR) * np.sin(np.pi * np.clip(x / length, 0.0, 1.0))
    shape: np.ndarray = _ramp(x) * _ramp(length - x) * hump
    return shape


def local_clock(times: Sequence[dt.datetime], time_zone: str) -> tuple[np.ndarray, np.ndarray]:
    """Local wall-clock hours (floats) and ISO weekdays (1 = Monday) of UTC ``times`` in ``time_zone``."""
    zone = zoneinfo.ZoneInfo(time_zone)
    local = [t.astimezone(zone) for t in times]
    hours = np.array([t.hour + t.minute / 60 + t.second / 3600 for t in local])
    return hours, np.array([t.isoweekday() for t in local])


def _ar1_noise(rng: np.random.Generator, steps: int, step_seconds: int, sigma: float) -> np.ndarray:
    """Stationary AR(1) noise with standard deviation ``sigma`` and a 10-minute correlation time."""
    phi = math.exp(-step_seconds / NOISE_CORRELATION_SECONDS)
    shocks = rng.standard_normal(steps) * sigma * math.sqrt(1 - phi * phi)
    noise = np.empty(steps)
    previous = rng.standard_normal() * sigma
    for i in range(steps):
        previous = phi * previous + shocks[i]
        noise[i] = previous
    return noise


def _start(start: dt.datetime | str) -> dt.datetime:
    return tracefmt.parse_timestamp(start) if isinstance(start, str) else start.astimezone(dt.UTC)


def generate_demand(
    regions: Sequence[Region],
    *,
    start: dt.datetime | str = DEFAULT_START,
    days: float = 3,
    step_seconds: int = 60,
    seed: int = 7,
    base: float = 6000.0,
    peak: float = 30000.0,
    weekend_factor: float = 0.6,
    noise: float = 0.03,
) -> DemandSeries:
    """Demand in tokens/s per region at each step (see the module docstring for the curve)."""
    if not 0 <= base <= peak:
        raise TraceError("need 0 <= base <= peak")
    times = tracefmt.time_grid(_start(start), tracefmt.steps_in(days, step_seconds), step_seconds)
    values = {}
    for region in regions:
        hours, weekday = local_clock(times, region.time_zone)
        day_factor = np.where(weekday >= 6, weekend_factor, 1.0)
        clean = base + (peak - base) * daily_shape(hours, region.busy_start, region.busy_end) * day_factor
        wiggle = _ar1_noise(_stream(seed, region.name, _DEMAND), len(times), step_seconds, noise) if noise else 0.0
        values[region.name] = np.maximum(clean * (1 + wiggle), 0.0)
    return DemandSeries(times, values)


def generate_spot(
    regions: Sequence[str],
    gpu_classes: Sequence[str],
    *,
    start: dt.datetime | str = DEFAULT_START,
    days: float = 3,
    step_seconds: int = 60,
    seed: int = 7,
    normal_gpus: int = 64,
    low_gpus: int = 8,
    outages_per_day: float = 1.0,
    outage_minutes: tuple[float, float] = (30.0, 180.0),
) -> SpotSeries:
    """Spot GPUs per region/class at each step: ``normal_gpus`` except in outage windows (0 or ``low_gpus``)."""
    if not 0 <= low_gpus <= normal_gpus or not 0 < outage_minutes[0] <= outage_minutes[1]:
        raise TraceError("need 0 <= low_gpus <= normal_gpus and 0 < shortest <= longest outage")
    times = tracefmt.time_grid(_start(start), tracefmt.steps_in(days, step_seconds), step_seconds)
    steps = len(times)
    shortest = max(1, math.ceil(outage_minutes[0] * 60 / step_seconds))
    longest = max(shortest, math.floor(outage_minutes[1] * 60 / step_seconds))
    values = {}
    for region in regions:
        for gpu_class in gpu_classes:
            rng = _stream(seed, region, gpu_class, _SPOT)
            count = max(1, int(rng.poisson(outages_per_day * days)))
            starts = np.sort(rng.integers(0, steps, count))
            lengths = rng.integers(shortest, longest + 1, count)
            available = np.full(steps, normal_gpus, dtype=np.int64)
            for k, (first, length) in enumerate(zip(starts, lengths, strict=True)):
                available[first : first + length] = 0 if k % 2 == 0 else low_gpus
            values[(region, gpu_class)] = available
    return SpotSeries(times, values)


def generate_prices(
    regions: Sequence[str],
    gpu_classes: Sequence[str],
    *,
    start: dt.datetime | str = DEFAULT_START,
    days: float = 3,
    step_seconds: int = 60,
    seed: int = 7,
    committed: float = 6.5,
    spot: float = 3.0,
    on_demand: float = 8.5,
    jitter: float = 0.1,
    spot_change: float = 1.5,
) -> list[PriceRow]:
    """Price rows: all three capacity types per region/class at the start, one spot change mid-trace."""
    times = tracefmt.time_grid(_start(start), tracefmt.steps_in(days, step_seconds), step_seconds)
    middle = times[len(times) // 2]
    first, changes = [], []
    for region in regions:
        factor = 1 + jitter * float(_stream(seed, region, _PRICES).uniform(-1, 1))
        for gpu_class in gpu_classes:
            for capacity_type, price in zip(tracefmt.CAPACITY_TYPES, (committed, spot, on_demand), strict=True):
                first.append(PriceRow(times[0], region, gpu_class, capacity_type, round(price * factor, 4)))
            changes.append(PriceRow(middle, region, gpu_class, "spot", round(spot * factor * spot_change, 4)))
    return first + (changes if len(times) > 1 else [])


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise TraceError("give at least one GPU class")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Write demand.csv, spot.csv and prices.csv into ``--out``; exit 2 on a bad argument."""
    parser = argparse.ArgumentParser(description="Write deterministic synthetic simulator traces.")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the three CSVs into")
    parser.add_argument("--days", type=float, default=3, help="trace length in days (default 3)")
    parser.add_argument("--step-seconds", type=int, default=60, help="time step in seconds (default 60)")
    parser.add_argument("--regions", required=True, help="name:IANA_zone[:START-END],... e.g. eu-west-2:Europe/London")
    parser.add_argument("--gpu-class", default="h100", help="GPU class name(s), comma-separated (default h100)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--start", default=DEFAULT_START, help=f"first timestamp, UTC (default {DEFAULT_START})")
    parser.add_argument("--base", type=float, default=6000.0, help="baseline demand, tokens/s (default 6000)")
    parser.add_argument("--peak", type=float, default=30000.0, help="weekday peak demand, tokens/s (default 30000)")
    parser.add_argument("--busy-hours", default="9-21", help="local busy hours START-END for regions without their own")
    parser.add_argument("--weekend-factor", type=float, default=0.6, help="weekend share of the above-baseline part")
    parser.add_argument("--noise", type=float, default=0.03, help="relative noise standard deviation (default 0.03)")
    parser.add_argument("--spot-gpus", type=int, default=64, help="spot GPUs outside outages (default 64)")
    parser.add_argument("--spot-low-gpus", type=int, default=8, help="spot GPUs in a partial outage (default 8)")
    parser.add_argument("--outages-per-day", type=float, default=1.0, help="mean outages per region/class per day")
    parser.add_argument("--outage-minutes", default="30-180", help="outage length range in minutes (default 30-180)")
    parser.add_argument("--spot-every-step", action="store_true", help="write a spot row every step, not on change")
    parser.add_argument("--committed-price", type=float, default=6.5, help="USD per GPU-hour (default 6.5)")
    parser.add_argument("--spot-price", type=float, default=3.0, help="USD per GPU-hour (default 3.0)")
    parser.add_argument("--on-demand-price", type=float, default=8.5, help="USD per GPU-hour (default 8.5)")
    parser.add_argument("--spot-price-change", type=float, default=1.5, help="mid-trace spot price factor (1.5)")
    args = parser.parse_args(argv)
    try:
        regions = parse_regions(args.regions, parse_busy_hours(args.busy_hours))
        classes = _names(args.gpu_class)
        low, _, high = args.outage_minutes.partition("-")
        common = {"start": args.start, "days": args.days, "step_seconds": args.step_seconds, "seed": args.seed}
        demand = generate_demand(
            regions, base=args.base, peak=args.peak, weekend_factor=args.weekend_factor, noise=args.noise, **common
        )
        names = [r.name for r in regions]
        spot = generate_spot(
            names,
            classes,
            normal_gpus=args.spot_gpus,
            low_gpus=args.spot_low_gpus,
            outages_per_day=args.outages_per_day,
            outage_minutes=(float(low), float(high or low)),
            **common,
        )
        prices = generate_prices(
            names,
            classes,
            committed=args.committed_price,
            spot=args.spot_price,
            on_demand=args.on_demand_price,
            spot_change=args.spot_price_change,
            **common,
        )
    except (TraceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tracefmt.write_demand(args.out / tracefmt.DEMAND_FILE, tracefmt.demand_rows(demand), decimals=1)
    tracefmt.write_spot(args.out / tracefmt.SPOT_FILE, tracefmt.spot_rows(spot, every_step=args.spot_every_step))
    tracefmt.write_prices(args.out / tracefmt.PRICES_FILE, prices)
    print("\n".join(tracefmt.summarize(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
