"""Reads what commitment advice needs from files: demand history (a trace CSV) and commitment terms.

Demand history is the simulator's demand trace (``sim.traces.read_demand``): every row a UTC
timestamp, a region and tokens/s, each value holding until the next row of its region. Terms
are given on the command line as ``NAME=VALUE`` (``parse_term``) or as a CSV with the columns
``term,gpu_class,region,usd_per_gpu_hour`` (``read_terms``). Bad input raises
``traces.TraceError`` naming the file and line, or the flag. Called by the CLI and the advice
benchmark; ``core.commitments`` receives plain values.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable
from pathlib import Path

from sunblend.api import spec
from sunblend.core import commitments
from sunblend.sim import traces
from sunblend.sim.traces import TraceError

TERM_COLUMNS = ("term", "gpu_class", "region", "usd_per_gpu_hour")


def read_demand_history(
    path: Path, regions: Iterable[str], tokens_per_request: float | None = None
) -> dict[str, list[tuple[dt.datetime, float]]]:
    """Demand samples per region from a demand trace; every region must be declared, and have rows."""
    _check_rows(path)
    demand = traces.read_demand(path, tokens_per_request)
    declared = list(regions)
    try:
        traces.check_against(traces.Traces(demand=demand), declared, [])
    except TraceError as error:
        raise TraceError(f"{path}: {error}") from None
    return {region: list(zip(series.times, series.values, strict=True)) for region, series in demand.items()}


def _check_rows(path: Path) -> None:
    """Every row has as many cells as the header, and every demand value is finite: or the line is named."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise TraceError(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise TraceError(f"{path}: not UTF-8 text ({error.reason})") from None
    except csv.Error as error:
        raise TraceError(f"{path}: not CSV ({error})") from None
    if not rows:
        raise TraceError(f"{path}:1: empty file; expected the header timestamp,region,tokens_per_second")
    header = [c.strip() for c in rows[0]]
    value = next((header.index(c) for c in ("tokens_per_second", "requests_per_second") if c in header), None)
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise TraceError(f"{path}:{number}: {len(row)} column(s), the header has {len(header)}")
        if value is not None:
            try:
                finite = math.isfinite(float(row[value]))
            except ValueError:
                continue  # read_demand names the line and column
            if not finite:
                raise TraceError(f"{path}:{number} {header[value]}: {row[value]!r} is not a finite number")


def _price(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value > spec.MAX_DOLLARS_PER_GPU_HOUR:
        raise TraceError(f"{where}: {text!r} must be a price from 0 to {spec.MAX_DOLLARS_PER_GPU_HOUR:g} $/GPU-hour")
    return value


def _offered(pool_spec: spec.InferencePoolSpec) -> list[tuple[str, str]]:
    return [(g.name, r.name) for g in pool_spec.gpu_classes for r in pool_spec.regions if pool_spec.offers(g, r.name)]


def read_terms(path: Path, pool_spec: spec.InferencePoolSpec) -> list[commitments.Term]:
    """Terms from a CSV with the columns ``term,gpu_class,region,usd_per_gpu_hour``, in order of first row."""
    try:
        return _read_terms(path, pool_spec)
    except UnicodeDecodeError as error:
        raise TraceError(f"{path}: not UTF-8 text ({error.reason})") from None
    except csv.Error as error:
        raise TraceError(f"{path}: not CSV ({error})") from None


def _read_terms(path: Path, pool_spec: spec.InferencePoolSpec) -> list[commitments.Term]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise TraceError(f"{path}: {error.strerror}") from None
    offered = set(_offered(pool_spec))
    prices: dict[str, dict[tuple[str, str], float]] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in TERM_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            if None in row or any(row[c] is None for c in TERM_COLUMNS):
                raise TraceError(f"{where}: expected the {len(TERM_COLUMNS)} columns {', '.join(TERM_COLUMNS)}")
            name, key = row["term"].strip(), (row["gpu_class"].strip(), row["region"].strip())
            if not name:
                raise TraceError(f"{where} term: empty term name")
            if key not in offered:
                raise TraceError(f"{where}: the pool does not offer GPU class {key[0]!r} in region {key[1]!r}")
            term = prices.setdefault(name, {})
            if key in term:
                raise TraceError(f"{where}: term {name} prices {key[0]} in {key[1]} twice")
            term[key] = _price(row["usd_per_gpu_hour"], f"{where} usd_per_gpu_hour")
    if not prices:
        raise TraceError(f"{path}: no term rows")
    return [commitments.Term(name, term) for name, term in prices.items()]


def parse_term(text: str, pool_spec: spec.InferencePoolSpec) -> list[commitments.Term]:
    """One ``--term NAME=VALUE``: a price for every class and region, ``0.55x`` of on-demand, or a CSV file.

    The CSV file has the columns ``gpu_class,region,usd_per_gpu_hour`` (a term column, if
    present, must name this term) and prices the classes and regions it lists.
    """
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    flag = f"--term {text!r}"
    if not sep or not name or not value:
        raise TraceError(f"{flag}: expected NAME=PRICE, NAME=FRACTIONx (of on-demand) or NAME=FILE.csv")
    offered = _offered(pool_spec)
    if value.lower().endswith("x"):
        fraction = _price(value[:-1], flag)
        if fraction > 1:
            raise TraceError(f"{flag}: a fraction of the on-demand price above 1x never pays")
        return [
            commitments.Term(
                name, {(g, r): fraction * pool_spec.prices(pool_spec.gpu_class(g), r).on_demand for g, r in offered}
            )
        ]
    try:
        price = float(value)
    except ValueError:
        return _term_file(Path(value), name, pool_spec)
    return [commitments.Term(name, {key: _price(str(price), flag) for key in offered})]


def _term_file(path: Path, name: str, pool_spec: spec.InferencePoolSpec) -> list[commitments.Term]:
    try:
        header = path.read_text(encoding="utf-8").splitlines()[:1]
    except OSError as error:
        raise TraceError(f"--term {name}={path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise TraceError(f"--term {name}={path}: not UTF-8 text ({error.reason})") from None
    if header and "term" in [c.strip() for c in header[0].split(",")]:
        terms = read_terms(path, pool_spec)
        if [t.name for t in terms] != [name]:
            raise TraceError(f"{path}: the term column names {[t.name for t in terms]}, not only {name!r}")
        return terms
    try:
        rows = read_terms_without_name(path, name, pool_spec)
    except csv.Error as error:
        raise TraceError(f"{path}: not CSV ({error})") from None
    return [commitments.Term(name, rows)]


def read_terms_without_name(path: Path, name: str, pool_spec: spec.InferencePoolSpec) -> dict[tuple[str, str], float]:
    """Prices of one term from a CSV with the columns ``gpu_class,region,usd_per_gpu_hour``."""
    offered = set(_offered(pool_spec))
    prices: dict[tuple[str, str], float] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in TERM_COLUMNS[1:] if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            if None in row or any(row[c] is None for c in TERM_COLUMNS[1:]):
                raise TraceError(f"{where}: expected the columns {', '.join(TERM_COLUMNS[1:])}")
            key = (row["gpu_class"].strip(), row["region"].strip())
            if key not in offered:
                raise TraceError(f"{where}: the pool does not offer GPU class {key[0]!r} in region {key[1]!r}")
            if key in prices:
                raise TraceError(f"{where}: term {name} prices {key[0]} in {key[1]} twice")
            prices[key] = _price(row["usd_per_gpu_hour"], f"{where} usd_per_gpu_hour")
    if not prices:
        raise TraceError(f"{path}: no price rows for term {name}")
    return prices
