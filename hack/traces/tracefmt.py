"""The simulator's three trace CSV formats: names, writers, readers and a checker.

``sunblend simulate`` reads a demand CSV, a spot-availability CSV and, optionally, a prices CSV
(docs/traces.md describes them). The synthetic generator and the converter of public data in this
folder both write through this module, so the two always agree on the format; the readers validate
a file (header, UTC timestamps, sort order, value ranges) and are what the tests round-trip through.

Run it to check a trace folder and print its row counts and value ranges::

    python hack/traces/tracefmt.py out/traces/real
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEMAND_UNITS = ("tokens_per_second", "requests_per_second")
SPOT_COLUMNS = ("timestamp", "region", "gpu_class", "available_gpus")
PRICE_COLUMNS = ("timestamp", "region", "gpu_class", "capacity_type", "usd_per_gpu_hour")
CAPACITY_TYPES = ("committed", "spot", "on-demand")
DEMAND_FILE = "demand.csv"
SPOT_FILE = "spot.csv"
PRICES_FILE = "prices.csv"


class TraceError(ValueError):
    """A trace file or an argument that breaks the format."""


class DemandRow(NamedTuple):
    """Demand of one region over the step that starts at ``timestamp``."""

    timestamp: dt.datetime
    region: str
    value: float


class SpotRow(NamedTuple):
    """Spot GPUs obtainable from ``timestamp`` until the key's next row."""

    timestamp: dt.datetime
    region: str
    gpu_class: str
    available_gpus: int


class PriceRow(NamedTuple):
    """Price per GPU-hour from ``timestamp`` until the key's next row."""

    timestamp: dt.datetime
    region: str
    gpu_class: str
    capacity_type: str
    usd_per_gpu_hour: float


@dataclass(frozen=True)
class DemandSeries:
    """Demand on a regular time grid: one array per region, aligned with ``times``."""

    times: tuple[dt.datetime, ...]
    values: dict[str, np.ndarray]


@dataclass(frozen=True)
class SpotSeries:
    """Spot availability on a regular time grid: one integer array per (region, gpu_class)."""

    times: tuple[dt.datetime, ...]
    values: dict[tuple[str, str], np.ndarray]


def format_timestamp(at: dt.datetime) -> str:
    """``2024-05-12T00:00:00Z``: ISO 8601 in UTC, whole seconds."""
    if at.tzinfo is None:
        raise TraceError(f"timestamp {at} has no time zone")
    return at.astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> dt.datetime:
    """Parse an ISO 8601 UTC timestamp (``Z`` or ``+00:00``); other offsets are rejected."""
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise TraceError(f"bad timestamp {text!r}: expected e.g. 2024-05-12T00:00:00Z") from error
    if at.tzinfo is None or at.utcoffset() != dt.timedelta(0):
        raise TraceError(f"timestamp {text!r} is not in UTC (end it with Z)")
    return at.astimezone(dt.UTC)


def time_grid(start: dt.datetime, steps: int, step_seconds: int) -> tuple[dt.datetime, ...]:
    """``steps`` UTC times ``step_seconds`` apart from ``start``."""
    if start.tzinfo is None:
        raise TraceError("start must be timezone-aware")
    first = start.astimezone(dt.UTC)
    return tuple(first + dt.timedelta(seconds=i * step_seconds) for i in range(steps))


def steps_in(days: float, step_seconds: int) -> int:
    """How many steps of ``step_seconds`` make ``days``; the two must divide evenly."""
    if step_seconds <= 0 or days <= 0:
        raise TraceError("days and step seconds must be positive")
    total = days * 86400
    if abs(total - round(total)) > 1e-6 or round(total) % step_seconds:
        raise TraceError(f"{days} days is not a whole number of {step_seconds}-second steps")
    return round(total) // step_seconds


def demand_rows(series: DemandSeries) -> list[DemandRow]:
    """Rows sorted by timestamp, regions in the series' order within a timestamp."""
    return [
        DemandRow(at, region, float(values[i]))
        for i, at in enumerate(series.times)
        for region, values in series.values.items()
    ]


def spot_rows(series: SpotSeries, every_step: bool = False) -> list[SpotRow]:
    """Rows sorted by timestamp: each key's first step, then only its changes unless ``every_step``."""
    rows = []
    for i, at in enumerate(series.times):
        for (region, gpu_class), values in series.values.items():
            if every_step or i == 0 or values[i] != values[i - 1]:
                rows.append(SpotRow(at, region, gpu_class, int(values[i])))
    return rows


def _number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_demand(path: Path, rows: Sequence[DemandRow], unit: str = "tokens_per_second", decimals: int = 3) -> None:
    """Write a demand CSV whose value column is ``unit``."""
    if unit not in DEMAND_UNITS:
        raise TraceError(f"demand unit must be one of {DEMAND_UNITS}, not {unit!r}")
    lines = ((format_timestamp(r.timestamp), r.region, _number(r.value, decimals)) for r in rows)
    _write(path, ("timestamp", "region", unit), lines)


def write_spot(path: Path, rows: Sequence[SpotRow]) -> None:
    """Write a spot-availability CSV."""
    lines = ((format_timestamp(r.timestamp), r.region, r.gpu_class, str(r.available_gpus)) for r in rows)
    _write(path, SPOT_COLUMNS, lines)


def write_prices(path: Path, rows: Sequence[PriceRow]) -> None:
    """Write a prices CSV (USD per GPU-hour, six decimals at most)."""
    lines = (
        (format_timestamp(r.timestamp), r.region, r.gpu_class, r.capacity_type, _number(r.usd_per_gpu_hour, 6))
        for r in rows
    )
    _write(path, PRICE_COLUMNS, lines)


def _read(path: Path, expected: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) not in {tuple(e) for e in expected}:
            options = " or ".join(",".join(e) for e in expected)
            raise TraceError(f"{path.name}: header must be {options}, got {header}")
        rows = [row for row in reader if row]
    previous: dt.datetime | None = None
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise TraceError(f"{path.name}:{number}: expected {len(header)} fields, got {len(row)}")
        at = parse_timestamp(row[0])
        if previous is not None and at < previous:
            raise TraceError(f"{path.name}:{number}: rows are not sorted by timestamp")
        previous = at
    return header, rows


def _float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise TraceError(f"{where}: {text!r} is not a number") from error
    if not np.isfinite(value) or value < 0:
        raise TraceError(f"{where}: {text!r} must be a finite number >= 0")
    return value


def read_demand(path: Path) -> tuple[str, list[DemandRow]]:
    """Read a demand CSV; returns its unit (the value column's name) and its rows."""
    header, rows = _read(path, [("timestamp", "region", unit) for unit in DEMAND_UNITS])
    parsed = [DemandRow(parse_timestamp(t), r, _float(v, f"{path.name}:{i}")) for i, (t, r, v) in enumerate(rows, 2)]
    return header[2], parsed


def read_spot(path: Path) -> list[SpotRow]:
    """Read a spot-availability CSV; ``available_gpus`` must be a non-negative integer."""
    _, rows = _read(path, [SPOT_COLUMNS])
    parsed = []
    for i, (t, region, gpu_class, value) in enumerate(rows, 2):
        if not value.isdigit():
            raise TraceError(f"{path.name}:{i}: available_gpus {value!r} is not a non-negative integer")
        parsed.append(SpotRow(parse_timestamp(t), region, gpu_class, int(value)))
    return parsed


def read_prices(path: Path) -> list[PriceRow]:
    """Read a prices CSV; ``capacity_type`` must be committed, spot or on-demand."""
    _, rows = _read(path, [PRICE_COLUMNS])
    parsed = []
    for i, (t, region, gpu_class, capacity_type, price) in enumerate(rows, 2):
        if capacity_type not in CAPACITY_TYPES:
            raise TraceError(f"{path.name}:{i}: capacity_type must be one of {CAPACITY_TYPES}, not {capacity_type!r}")
        parsed.append(PriceRow(parse_timestamp(t), region, gpu_class, capacity_type, _float(price, f"{path.name}:{i}")))
    return parsed


def _range(values: Sequence[float]) -> str:
    return f"min {min(values):,.6g}, mean {sum(values) / len(values):,.6g}, max {max(values):,.6g}"


def summarize(folder: Path) -> list[str]:
    """Read and check every trace file in ``folder``; one line per file and key with counts and ranges."""
    lines = []
    unit, demand = read_demand(folder / DEMAND_FILE)
    span = f"{format_timestamp(demand[0].timestamp)} .. {format_timestamp(demand[-1].timestamp)}" if demand else "empty"
    lines.append(f"{DEMAND_FILE}: {len(demand)} rows, {unit}, {span}")
    by_region: dict[str, list[float]] = {}
    for row in demand:
        by_region.setdefault(row.region, []).append(row.value)
    lines += [f"  {region}: {len(v)} rows, {_range(v)}" for region, v in by_region.items()]
    spot = read_spot(folder / SPOT_FILE)
    lines.append(f"{SPOT_FILE}: {len(spot)} rows; per key over the demand's steps:")
    grid = sorted({row.timestamp for row in demand})
    for (region, gpu_class), held in spot_on_grid(spot, grid).items():
        rows = sum(1 for s in spot if (s.region, s.gpu_class) == (region, gpu_class))
        zero = float(np.mean(held == 0)) if len(held) else 0.0
        lines.append(f"  {region}/{gpu_class}: {rows} rows, {_range(held.tolist())}, 0 GPUs {zero:.1%} of steps")
    if (folder / PRICES_FILE).exists():
        prices = read_prices(folder / PRICES_FILE)
        lines.append(f"{PRICES_FILE}: {len(prices)} rows (USD per GPU-hour)")
        lines += [
            f"  {format_timestamp(p.timestamp)} {p.region}/{p.gpu_class} {p.capacity_type}: {p.usd_per_gpu_hour:g}"
            for p in prices
        ]
    return lines


def spot_on_grid(rows: Sequence[SpotRow], times: Sequence[dt.datetime]) -> dict[tuple[str, str], np.ndarray]:
    """Available GPUs per (region, gpu_class) at each of ``times``: the key's last row at or before it, else 0."""
    grouped: dict[tuple[str, str], list[SpotRow]] = {}
    for row in rows:
        grouped.setdefault((row.region, row.gpu_class), []).append(row)
    seconds = np.array([t.timestamp() for t in times])
    held = {}
    for key, key_rows in grouped.items():
        starts = np.array([r.timestamp.timestamp() for r in key_rows])
        values = np.array([0] + [r.available_gpus for r in key_rows], dtype=np.int64)
        held[key] = values[np.searchsorted(starts, seconds, side="right")]
    return held


def main(argv: Sequence[str] | None = None) -> int:
    """Check a trace folder and print what it holds; exit 1 if a file breaks the format."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder holding demand.csv, spot.csv and optionally prices.csv")
    args = parser.parse_args(argv)
    try:
        print("\n".join(summarize(args.folder)))
    except (TraceError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
