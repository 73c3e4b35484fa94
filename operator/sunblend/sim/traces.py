"""Reads the simulator's input traces: demand, spot availability and prices, as CSV.

Formats (documented in docs/traces.md): every timestamp is ISO 8601 UTC, and a value holds
until the next row for the same key. Bad rows raise ``TraceError`` naming file, line and column.
Called by the CLI and the benchmark; the engine receives ``Traces`` already on its step grid.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sunblend.api.spec import CapacityType


class TraceError(Exception):
    """A trace file is missing, malformed, or inconsistent with the pool."""


@dataclass(frozen=True)
class Series:
    """A step function of time: ``values[i]`` holds from ``times[i]`` until ``times[i + 1]``."""

    times: tuple[dt.datetime, ...]
    values: tuple[float, ...]

    def at(self, moment: dt.datetime) -> float | None:
        """The value in force at ``moment`` (None before the first row)."""
        i = bisect.bisect_right(self.times, moment) - 1
        return None if i < 0 else self.values[i]


@dataclass(frozen=True)
class Traces:
    """Everything a run replays, keyed by region (and GPU class, capacity type)."""

    demand: Mapping[str, Series]
    spot: Mapping[tuple[str, str], Series] = field(default_factory=dict)
    prices: Mapping[tuple[str, str, CapacityType], Series] = field(default_factory=dict)

    @property
    def start(self) -> dt.datetime:
        """First demand timestamp."""
        return min(s.times[0] for s in self.demand.values())

    @property
    def end(self) -> dt.datetime:
        """Last demand timestamp."""
        return max(s.times[-1] for s in self.demand.values())


def _time(text: str | None, where: str) -> dt.datetime:
    if text is None:
        raise TraceError(f"{where}: missing (the row is short)")
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise TraceError(f"{where}: timestamp {text!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise TraceError(f"{where}: timestamp {text!r} has no time zone; use UTC, e.g. 2024-05-12T00:00:00Z")
    return moment.astimezone(dt.UTC)


def _text(row: Mapping[str, str | None], column: str, where: str) -> str:
    value = row.get(column)
    if value is None or not value.strip():
        raise TraceError(f"{where} {column}: missing (the row is short or the cell empty)")
    return value.strip()


def _number(text: str | None, where: str) -> float:
    if text is None:
        raise TraceError(f"{where}: missing (the row is short)")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: {text!r} must be a finite, non-negative number")
    return value


def _rows(path: Path, required: Iterable[str]) -> Iterable[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise TraceError(f"{path}: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        yield from enumerate(reader, start=2)


def _series(points: Mapping[object, list[tuple[dt.datetime, float]]]) -> dict[object, Series]:
    out = {}
    for key, values in points.items():
        values.sort(key=lambda p: p[0])
        out[key] = Series(tuple(t for t, _ in values), tuple(v for _, v in values))
    return out


def read_demand(path: Path, tokens_per_request: float | None = None) -> dict[str, Series]:
    """Demand per region in tokens/s; ``requests_per_second`` needs ``tokens_per_request``."""
    points: dict[object, list[tuple[dt.datetime, float]]] = defaultdict(list)
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    by_requests = "tokens_per_second" not in header and "requests_per_second" in header
    column = "requests_per_second" if by_requests else "tokens_per_second"
    if by_requests and not tokens_per_request:
        raise TraceError(f"{path}: demand is in requests_per_second; give --tokens-per-request")
    for number, row in _rows(path, ("timestamp", "region", column)):
        where = f"{path}:{number}"
        value = _number(row[column], f"{where} {column}")
        points[_text(row, "region", where)].append(
            (_time(row["timestamp"], f"{where} timestamp"), value * (tokens_per_request or 1.0))
        )
    if not points:
        raise TraceError(f"{path}: no demand rows")
    return {str(k): v for k, v in _series(points).items()}


def read_spot(path: Path) -> dict[tuple[str, str], Series]:
    """Spot GPUs obtainable per (region, GPU class)."""
    points: dict[object, list[tuple[dt.datetime, float]]] = defaultdict(list)
    for number, row in _rows(path, ("timestamp", "region", "gpu_class", "available_gpus")):
        where = f"{path}:{number}"
        value = _number(row["available_gpus"], f"{where} available_gpus")
        points[(_text(row, "region", where), _text(row, "gpu_class", where))].append(
            (_time(row["timestamp"], f"{where} timestamp"), value)
        )
    return {k: v for k, v in _series(points).items()}  # type: ignore[misc]


def read_prices(path: Path) -> dict[tuple[str, str, CapacityType], Series]:
    """Prices per (region, GPU class, capacity type), dollars per GPU-hour."""
    points: dict[object, list[tuple[dt.datetime, float]]] = defaultdict(list)
    for number, row in _rows(path, ("timestamp", "region", "gpu_class", "capacity_type", "usd_per_gpu_hour")):
        where = f"{path}:{number}"
        try:
            capacity_type = CapacityType(_text(row, "capacity_type", where))
        except ValueError:
            raise TraceError(
                f"{where} capacity_type: {row['capacity_type']!r} is not one of committed, spot, on-demand"
            ) from None
        value = _number(row["usd_per_gpu_hour"], f"{where} usd_per_gpu_hour")
        points[(_text(row, "region", where), _text(row, "gpu_class", where), capacity_type)].append(
            (_time(row["timestamp"], f"{where} timestamp"), value)
        )
    return {k: v for k, v in _series(points).items()}  # type: ignore[misc]


def check_against(traces: Traces, regions: Iterable[str], gpu_classes: Iterable[str]) -> None:
    """Every trace key must name a declared region (and GPU class)."""
    regions, gpu_classes = set(regions), set(gpu_classes)
    unknown = sorted(set(traces.demand) - regions)
    if unknown:
        raise TraceError(f"demand names regions the pool does not declare: {', '.join(unknown)}")
    missing = sorted(regions - set(traces.demand))
    if missing:
        raise TraceError(f"demand has no rows for declared region(s): {', '.join(missing)}")
    for key in list(traces.spot) + [k[:2] for k in traces.prices]:
        if key[0] not in regions or key[1] not in gpu_classes:
            raise TraceError(f"spot or price rows name an undeclared region or GPU class: {key[0]}/{key[1]}")
