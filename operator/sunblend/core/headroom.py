"""Headroom from the forecast's own error: size capacity to the quantile that meets a service target.

For each region the policy keeps an ``ErrorBook``: while an hour runs, every measured demand
``d`` is compared with the hour's forecast ``f``, and for each candidate multiplier ``c`` of
``GRID`` the book adds what capacity of ``c * f`` would have left unserved, ``max(0, d - c * f)``,
weighted by the time the measurement stands for. Demand that stays above ``c * f`` is covered by
the surge rule once it has seen it and an on-demand node has booted (``SURGE_REACTION``), so
only the first ``SURGE_REACTION`` of each excursion counts. So the book knows, for each ``c``,
the share of recent demand that capacity of ``c`` times the forecast, with the surge rule, would
not have served: forecast error and the swings within the hour together. ``multiplier`` returns
the smallest ``c`` whose share meets ``1 - serviceTarget``; the pool's ``headroom`` stays a floor.

The sums decay with a half-life of ``HALF_LIFE`` hours of data, so the book follows a forecast
that gets better (or worse). The region's hours are pooled: a pool needs weeks of history
before every hour of the week has samples of its own, and the forecast's hour-of-week profile
and live correction already follow the shape of the week. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GRID: tuple[float, ...] = tuple(round(0.8 + 0.02 * i, 2) for i in range(61))  # 0.80 .. 2.00
HALF_LIFE = 24.0  # hours of data
MIN_HOURS = 6.0  # data the book needs before it is trusted
MAX_WEIGHT = 300.0  # seconds one measurement may stand for (a gap in the data counts no more)
SURGE_REACTION = 300.0  # seconds until the surge rule's on-demand serves: seeing the excess, then a boot


@dataclass(frozen=True)
class ErrorBook:
    """Recent demand (token-seconds) and, per ``GRID`` multiplier, what it would have left unserved."""

    demand: float = 0.0
    shortfall: tuple[float, ...] = (0.0,) * len(GRID)
    hours: float = 0.0  # hours of data (decaying)
    excursion: tuple[float, ...] = (0.0,) * len(GRID)  # seconds demand has stayed above each c * f

    def add(self, demand: float, forecast: float, seconds: float) -> ErrorBook:
        """Fold in demand ``demand`` measured against the hour's ``forecast``, standing for ``seconds``."""
        if forecast <= 0 or seconds <= 0 or demand < 0:
            return self
        weight = min(seconds, MAX_WEIGHT)
        shortfall, excursion = list(self.shortfall), list(self.excursion)
        for i, c in enumerate(GRID):
            excess = demand - c * forecast
            if excess <= 0:
                excursion[i] = 0.0
                continue
            uncovered = min(weight, max(0.0, SURGE_REACTION - excursion[i]))
            shortfall[i] += uncovered * excess
            excursion[i] += weight
        return ErrorBook(self.demand + weight * demand, tuple(shortfall), self.hours + weight / 3600, tuple(excursion))

    def decayed(self, hours: float = 1.0) -> ErrorBook:
        """The book after ``hours`` more hours have passed: old data weighs less."""
        factor = 0.5 ** (hours / HALF_LIFE)
        return ErrorBook(
            self.demand * factor, tuple(s * factor for s in self.shortfall), self.hours * factor, self.excursion
        )

    def unserved_share(self, index: int) -> float:
        """Share of recent demand capacity of ``GRID[index]`` times the forecast would have left unserved."""
        return 0.0 if self.demand <= 0 else self.shortfall[index] / self.demand


def multiplier(book: ErrorBook | None, service_target: float, floor: float) -> float:
    """The smallest capacity-to-forecast multiplier that meets ``service_target`` by the book.

    ``floor`` is the pool's headroom: the result is never below ``1 + floor``. With too little
    data, and where even the largest multiplier of the grid falls short, the result is the floor
    or the grid's largest multiplier respectively (the surge rule covers the rest). Raises
    ``ValueError`` for a target outside (0, 1]."""
    if not 0 < service_target <= 1:
        raise ValueError(f"service target {service_target} is outside (0, 1]")
    lowest = 1 + floor
    if book is None or book.hours < MIN_HOURS or book.demand <= 0:
        return lowest
    allowed = 1 - service_target
    for index, candidate in enumerate(GRID):
        if book.unserved_share(index) <= allowed + 1e-12:
            return max(lowest, candidate)
    return max(lowest, GRID[-1])


def from_values(demand: float, shortfall: Sequence[float], hours: float, excursion: Sequence[float]) -> ErrorBook:
    """A book read back from stored values; raises ``ValueError`` when they do not fit the grid."""
    if len(shortfall) != len(GRID) or len(excursion) != len(GRID):
        raise ValueError(f"an error book needs {len(GRID)} shortfall and excursion values")
    return ErrorBook(
        float(demand), tuple(float(s) for s in shortfall), float(hours), tuple(float(e) for e in excursion)
    )
