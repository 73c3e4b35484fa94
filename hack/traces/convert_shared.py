"""Convert the real public reference data in ``../shared/data`` into the simulator's trace formats.

Reads three third-party data sets (``../shared/data/README.md`` describes them; docs/traces.md
lists every assumption made here, with the sources' licenses and citations):

* Demand, from ``azure_llm2024_conversation_10s_counts.csv`` (Azure LLM inference trace 2024,
  conversation service: requests per 10-second bin, 2024-05-12 to 2024-05-19 UTC). The trace is a
  single service; each requested region gets a copy shifted in time by the difference between its
  UTC offset and the reference zone's (``--reference-zone``, default UTC), so the trace's
  reference-local time-of-day and weekday pattern falls on the region's own local clock. The week
  is treated as periodic (its first and last half-bins are folded into one bin), so the shifted copy
  wraps around, and ``--days`` beyond 7 replays the week. Counts become requests/s (count / 10 s),
  times ``--tokens-per-request`` (default 250 generated tokens, the README's rough figure) for
  tokens/s, or kept as requests/s with ``--tokens-per-request 0``; each region may be scaled
  (``--scale``); then averaged over ``--step-seconds`` (default 60). The output starts at the
  trace's own start, 2024-05-12T00:00:00Z.
* Spot, from ``spot_availability_aws_2023-02-15/<zone>_*.json`` (SkyPilot spot traces: 0/1
  availability of one p3.2xlarge, one probe every ``gap_seconds`` = 195 s). Each region is given
  availability zones (``--spot-zones``); available GPUs = sum over its zones of availability x
  ``--gpus-per-zone`` (default 16). The probes are replayed from their own start (or
  ``--spot-offset-days`` later), re-timed so that probe 0 falls on the demand start, and put on
  the demand's step grid: a zone counts in a step only if every probe overlapping the step saw it
  available (the minimum).
* Prices, from ``aws_gpu_prices_by_region_2025-11-30.csv`` for one ``--instance-type``, per GPU-hour
  (instance price / ``gpu_count``): on-demand = ``ondemand_usd_hr``; spot = ``spot_avg_usd_hr``
  (else the midpoint of spot min/max; else no spot price row); committed = the first non-blank of
  ``COMMITTED_COLUMNS`` (1-year standard no-upfront first). One row per region/class/type at the
  trace start. ``--region-map`` names the AWS region behind a region when the names differ.

Example (writes demand.csv, spot.csv, prices.csv and prints row counts and value ranges)::

    python hack/traces/convert_shared.py --shared ../shared/data --out out/traces/real \\
        --regions us-east-1:America/New_York,eu-west-2:Europe/London,ap-south-1:Asia/Kolkata \\
        --gpu-class h100 --instance-type p5.48xlarge \\
        --spot-zones us-east-1:us-east-1a+us-east-1c,eu-west-2:us-east-2a+us-east-2b,ap-south-1:us-west-2a+us-west-2b \\
        --days 7
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import math
import sys
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import tracefmt
from tracefmt import DemandSeries, PriceRow, SpotSeries, TraceError

AZURE_FILE = "azure_llm2024_conversation_10s_counts.csv"
SPOT_FOLDER = "spot_availability_aws_2023-02-15"
PRICES_FILE = "aws_gpu_prices_by_region_2025-11-30.csv"
AZURE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_TOKENS_PER_REQUEST = 250.0
DEFAULT_GPUS_PER_ZONE = 16
T = TypeVar("T")
# Committed price: the first of these that is not blank, as an effective hourly price per instance.
COMMITTED_COLUMNS = tuple(
    f"reserved_yrTerm{term}{kind}_{payment}Upfront_usd_hr"
    for term in (1, 3)
    for kind in ("Standard", "Convertible")
    for payment in ("no", "partial", "all")
)


# --- Parsing arguments -------------------------------------------------------------------------


def parse_pairs(text: str, value: Callable[[str], T], what: str) -> dict[str, T]:
    """``a:x,b:y`` -> {"a": value("x"), "b": value("y")}; the value is everything after the first colon."""
    pairs: dict[str, T] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition(":")
        if not sep or not key or not raw:
            raise TraceError(f"{what} {item!r} must look like name:value")
        if key in pairs:
            raise TraceError(f"{what}: {key} given twice")
        try:
            pairs[key] = value(raw)
        except ValueError as error:
            raise TraceError(f"{what} {item!r}: {error}") from error
    return pairs


def _zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error
    return name


def _zones(text: str) -> list[str]:
    return [z for z in text.split("+") if z]


# --- Demand ------------------------------------------------------------------------------------


def load_azure_counts(path: Path) -> tuple[dt.datetime, int, np.ndarray]:
    """Read the 10-second counts file: (first bin centre in UTC, bin seconds, counts); gaps are errors."""
    times, counts = [], []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["Time", "TIMESTAMP"]:
            raise TraceError(f"{path.name}: header must be Time,TIMESTAMP, got {header}")
        for row in reader:
            if row:
                times.append(dt.datetime.strptime(row[0], AZURE_TIME_FORMAT).replace(tzinfo=dt.UTC))
                counts.append(float(row[1]))
    if len(times) < 2:
        raise TraceError(f"{path.name}: needs at least two bins")
    gaps = {round((b - a).total_seconds()) for a, b in itertools.pairwise(times)}
    if len(gaps) != 1 or min(gaps) <= 0:
        raise TraceError(f"{path.name}: bins must be evenly spaced without gaps (spacings {sorted(gaps)[:5]} s)")
    return times[0], gaps.pop(), np.array(counts)


def fold_half_bins(counts: np.ndarray, bin_seconds: int) -> np.ndarray:
    """One period of bins from a trace whose first and last bins are half-bins of whole days apart.

    The Azure file runs from 00:00:00 to 00:00:00 seven days later, with bins centred on those
    times, so its first and last bins each hold half a bin. Treating the week as periodic, they
    are the two halves of one bin: add the last into the first and drop it. A trace that does not
    span whole days is returned unchanged.
    """
    if len(counts) > 1 and ((len(counts) - 1) * bin_seconds) % 86400 == 0:
        folded = counts[:-1].copy()
        folded[0] += counts[-1]
        return folded
    return counts


def zone_offset_seconds(time_zone: str, at: dt.datetime) -> int:
    """UTC offset of ``time_zone`` at the instant ``at``, in seconds (daylight saving included)."""
    offset = at.astimezone(zoneinfo.ZoneInfo(time_zone)).utcoffset()
    return round(offset.total_seconds()) if offset is not None else 0


def shift_to_zone(
    values: np.ndarray, start: dt.datetime, sample_seconds: int, time_zone: str, reference_zone: str
) -> np.ndarray:
    """Copy of a periodic series, moved so that its reference-local pattern falls on ``time_zone``'s clock.

    Output sample ``i`` (UTC time ``t``) takes the input at ``t + offset(zone, t) - offset(reference, t)``,
    wrapped modulo the series length: a region 5.5 h ahead of the reference sees at 09:00 local what
    the reference saw at 09:00 its own local time. Shifts are rounded to whole samples.
    """
    n = len(values)
    # Offsets change at most at the top of an hour: evaluate them once per hour, not per sample.
    hour_cache: dict[int, int] = {}
    index = np.empty(n, dtype=np.int64)
    for i in range(n):
        seconds = i * sample_seconds
        hour = seconds // 3600
        if hour not in hour_cache:
            at = start + dt.timedelta(seconds=hour * 3600)
            shift = zone_offset_seconds(time_zone, at) - zone_offset_seconds(reference_zone, at)
            hour_cache[hour] = round(shift / sample_seconds)
        index[i] = (i + hour_cache[hour]) % n
    return values[index]


def resample_mean(values: np.ndarray, sample_seconds: int, step_seconds: int) -> np.ndarray:
    """Average consecutive samples into steps of ``step_seconds`` (a multiple of the sample); drop a partial tail."""
    if step_seconds % sample_seconds:
        raise TraceError(f"step {step_seconds} s must be a multiple of the trace's {sample_seconds} s samples")
    per_step = step_seconds // sample_seconds
    whole = len(values) // per_step
    if whole == 0:
        raise TraceError(f"the trace is shorter than one {step_seconds}-second step")
    means: np.ndarray = values[: whole * per_step].reshape(whole, per_step).mean(axis=1)
    return means


def repeat_to(values: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` values of the series repeated end to end (the series is one period)."""
    return np.resize(values, length)


def convert_demand(
    counts: np.ndarray,
    start: dt.datetime,
    bin_seconds: int,
    *,
    regions: Mapping[str, str],
    reference_zone: str = "UTC",
    scale: Mapping[str, float] | None = None,
    tokens_per_request: float = DEFAULT_TOKENS_PER_REQUEST,
    step_seconds: int = 60,
    days: float = 7,
) -> DemandSeries:
    """Per-region demand (tokens/s, or requests/s when ``tokens_per_request`` is 0) from one periodic count trace."""
    rates = counts / bin_seconds * (tokens_per_request or 1.0)
    steps = tracefmt.steps_in(days, step_seconds)
    values = {}
    for region, time_zone in regions.items():
        shifted = shift_to_zone(rates, start, bin_seconds, time_zone, reference_zone)
        stepped = repeat_to(resample_mean(shifted, bin_seconds, step_seconds), steps)
        values[region] = stepped * (scale or {}).get(region, 1.0)
    return DemandSeries(tracefmt.time_grid(start, steps, step_seconds), values)


# --- Spot --------------------------------------------------------------------------------------


def load_spot_zone(folder: Path, zone: str) -> tuple[int, np.ndarray]:
    """(probe spacing in seconds, 0/1 availability) of one zone's file, ``<zone>_*.json`` or ``<zone>.json``."""
    matches = sorted(folder.glob(f"{zone}_*.json")) + sorted(folder.glob(f"{zone}.json"))
    if len(matches) != 1:
        found = ", ".join(sorted(p.name.split("_")[0] for p in folder.glob("*.json")))
        raise TraceError(f"zone {zone}: expected one file in {folder.name}, found {len(matches)} (zones: {found})")
    document = json.loads(matches[0].read_text())
    data = np.array(document["data"], dtype=np.int64)
    if not np.isin(data, (0, 1)).all():
        raise TraceError(f"{matches[0].name}: availability must be 0 or 1")
    return int(document["metadata"]["gap_seconds"]), data


def hold_min_resample(
    values: np.ndarray, sample_seconds: int, step_seconds: int, steps: int, offset_seconds: int = 0
) -> np.ndarray:
    """Step ``k`` gets the minimum of the held samples overlapping ``[offset + k*step, offset + (k+1)*step)``.

    Sample ``i`` holds from ``i * sample_seconds`` until the next sample; the last one holds for one
    sample length. Asking for time past that is an error.
    """
    end = offset_seconds + steps * step_seconds
    if offset_seconds < 0 or end > len(values) * sample_seconds:
        covered = len(values) * sample_seconds / 86400
        raise TraceError(f"the spot trace covers {covered:.2f} days; asked for up to {end / 86400:.2f} days")
    starts = offset_seconds + np.arange(steps, dtype=np.int64) * step_seconds
    first = starts // sample_seconds
    last = (starts + step_seconds - 1) // sample_seconds
    result = values[first].copy()
    for extra in range(1, math.ceil(step_seconds / sample_seconds) + 1):
        result = np.minimum(result, values[np.minimum(first + extra, last)])
    return result


def region_availability(zone_values: Sequence[np.ndarray], gpus_per_zone: int) -> np.ndarray:
    """Available GPUs in a region: sum over its zones of availability (0/1) x ``gpus_per_zone``."""
    zones_up: np.ndarray = np.sum(np.stack(zone_values), axis=0).astype(np.int64)
    return zones_up * gpus_per_zone


def convert_spot(
    folder: Path,
    *,
    spot_zones: Mapping[str, Sequence[str]],
    gpu_class: str,
    times: Sequence[dt.datetime],
    step_seconds: int,
    gpus_per_zone: int = DEFAULT_GPUS_PER_ZONE,
    offset_days: float = 0.0,
) -> SpotSeries:
    """Spot GPUs per region on the demand grid ``times`` (the spot trace's probe 0 aligned to ``times[0]``)."""
    values = {}
    for region, zones in spot_zones.items():
        sampled = []
        for zone in zones:
            gap, data = load_spot_zone(folder, zone)
            sampled.append(hold_min_resample(data, gap, step_seconds, len(times), round(offset_days * 86400)))
        values[(region, gpu_class)] = region_availability(sampled, gpus_per_zone)
    return SpotSeries(tuple(times), values)


# --- Prices ------------------------------------------------------------------------------------


def load_instance_prices(path: Path, instance_type: str) -> dict[str, dict[str, str]]:
    """Rows of the AWS price snapshot for ``instance_type``, by AWS region."""
    with path.open(newline="") as handle:
        rows = {row["region"]: row for row in csv.DictReader(handle) if row["instance_type"] == instance_type}
    if not rows:
        raise TraceError(f"{path.name}: no rows for instance type {instance_type!r}")
    return rows


def _price(row: Mapping[str, str], column: str) -> float | None:
    text = (row.get(column) or "").strip()
    return float(text) if text else None


def per_gpu_prices(row: Mapping[str, str]) -> tuple[dict[str, float], list[str]]:
    """USD per GPU-hour by capacity type from one price-snapshot row, and notes on every fallback used."""
    gpus = int(row["gpu_count"])
    notes: list[str] = []
    on_demand = _price(row, "ondemand_usd_hr")
    if on_demand is None:
        raise TraceError(f"{row['instance_type']} in {row['region']}: no on-demand price")
    prices = {"on-demand": on_demand / gpus}
    committed = next(((c, p) for c in COMMITTED_COLUMNS if (p := _price(row, c)) is not None), None)
    if committed is None:
        notes.append("no committed price in any reserved column: no committed row")
    else:
        if committed[0] != COMMITTED_COLUMNS[0]:
            notes.append(f"committed from {committed[0]} ({COMMITTED_COLUMNS[0]} is blank)")
        prices["committed"] = committed[1] / gpus
    spot = _price(row, "spot_avg_usd_hr")
    if spot is None:
        bounds = [p for p in (_price(row, "spot_min_usd_hr"), _price(row, "spot_max_usd_hr")) if p is not None]
        if bounds:
            spot = sum(bounds) / len(bounds)
            notes.append("spot from the spot min/max midpoint (spot_avg_usd_hr is blank)")
        else:
            notes.append("no spot price: no spot row")
    if spot is not None:
        prices["spot"] = spot / gpus
    return {t: prices[t] for t in tracefmt.CAPACITY_TYPES if t in prices}, notes


def convert_prices(
    path: Path,
    *,
    instance_type: str,
    regions: Sequence[str],
    gpu_class: str,
    at: dt.datetime,
    region_map: Mapping[str, str] | None = None,
) -> tuple[list[PriceRow], list[str]]:
    """One price row per region/class/type at ``at``, and notes on fallbacks."""
    rows = load_instance_prices(path, instance_type)
    result, notes = [], []
    for region in regions:
        aws_region = (region_map or {}).get(region, region)
        if aws_region not in rows:
            raise TraceError(f"{instance_type} has no price row for AWS region {aws_region!r} (see --region-map)")
        prices, fallbacks = per_gpu_prices(rows[aws_region])
        notes += [f"{region}: {note}" for note in fallbacks]
        result += [PriceRow(at, region, gpu_class, t, round(p, 6)) for t, p in prices.items()]
    return result, notes


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Convert the shared data into ``--out``; exit 2 on a bad argument or a missing input."""
    parser = argparse.ArgumentParser(description="Convert ../shared/data into simulator traces (docs/traces.md).")
    parser.add_argument("--shared", type=Path, required=True, help="the shared data folder, e.g. ../shared/data")
    parser.add_argument("--out", type=Path, required=True, help="folder to write demand.csv, spot.csv, prices.csv")
    parser.add_argument("--regions", required=True, help="name:IANA_zone,... one demand copy per region")
    parser.add_argument("--reference-zone", default="UTC", help="zone whose local clock the trace is read in (UTC)")
    parser.add_argument("--scale", default="", help="name:factor,... demand multiplier per region (default 1)")
    parser.add_argument(
        "--tokens-per-request",
        type=float,
        default=DEFAULT_TOKENS_PER_REQUEST,
        help="generated tokens per request (default 250); 0 writes requests_per_second instead",
    )
    parser.add_argument("--step-seconds", type=int, default=60, help="output step, a multiple of 10 s (default 60)")
    parser.add_argument("--days", type=float, default=7, help="output days (default 7; more replays the week)")
    parser.add_argument("--gpu-class", default="h100", help="GPU class name for spot and price rows (default h100)")
    parser.add_argument("--spot-zones", required=True, help="region:zoneA+zoneB,... spot zones behind each region")
    parser.add_argument("--gpus-per-zone", type=int, default=DEFAULT_GPUS_PER_ZONE, help="GPUs an available zone adds")
    parser.add_argument("--spot-offset-days", type=float, default=0.0, help="start this far into the spot trace (0)")
    parser.add_argument("--spot-every-step", action="store_true", help="write a spot row every step, not on change")
    parser.add_argument("--instance-type", required=True, help="AWS instance type for prices, e.g. p5.48xlarge")
    parser.add_argument("--region-map", default="", help="our_region:aws_region,... where the names differ")
    args = parser.parse_args(argv)
    try:
        regions = parse_pairs(args.regions, _zone, "--regions")
        _zone(args.reference_zone)
        scale = parse_pairs(args.scale, float, "--scale")
        spot_zones = parse_pairs(args.spot_zones, _zones, "--spot-zones")
        region_map = parse_pairs(args.region_map, str, "--region-map")
        for flag, names in (("--scale", scale), ("--spot-zones", spot_zones), ("--region-map", region_map)):
            if unknown := sorted(set(names) - set(regions)):
                raise TraceError(f"{flag} names regions not in --regions: {', '.join(unknown)}")
        if missing := sorted(set(regions) - set(spot_zones)):
            raise TraceError(f"--spot-zones has no zones for: {', '.join(missing)}")
        if args.tokens_per_request < 0 or args.gpus_per_zone < 0 or any(f < 0 for f in scale.values()):
            raise TraceError("--tokens-per-request, --gpus-per-zone and --scale must not be negative")
        start, bin_seconds, counts = load_azure_counts(args.shared / AZURE_FILE)
        demand = convert_demand(
            fold_half_bins(counts, bin_seconds),
            start,
            bin_seconds,
            regions=regions,
            reference_zone=args.reference_zone,
            scale=scale,
            tokens_per_request=args.tokens_per_request,
            step_seconds=args.step_seconds,
            days=args.days,
        )
        spot = convert_spot(
            args.shared / SPOT_FOLDER,
            spot_zones={r: spot_zones[r] for r in regions},
            gpu_class=args.gpu_class,
            times=demand.times,
            step_seconds=args.step_seconds,
            gpus_per_zone=args.gpus_per_zone,
            offset_days=args.spot_offset_days,
        )
        prices, notes = convert_prices(
            args.shared / PRICES_FILE,
            instance_type=args.instance_type,
            regions=list(regions),
            gpu_class=args.gpu_class,
            at=demand.times[0],
            region_map=region_map,
        )
    except (TraceError, OSError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    unit = "tokens_per_second" if args.tokens_per_request else "requests_per_second"
    tracefmt.write_demand(args.out / tracefmt.DEMAND_FILE, tracefmt.demand_rows(demand), unit=unit)
    tracefmt.write_spot(args.out / tracefmt.SPOT_FILE, tracefmt.spot_rows(spot, every_step=args.spot_every_step))
    tracefmt.write_prices(args.out / tracefmt.PRICES_FILE, prices)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print("\n".join(tracefmt.summarize(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
