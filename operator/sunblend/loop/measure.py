"""Measurements for a reconcile: utilisation and demand per region, and demand history, from Prometheus.

Wraps ``observe.prometheus`` for the handlers: maps nodes to regions, caches answers briefly (so
1,000 pools do not mean 1,000 queries a minute), and turns an outage into an unavailable
``Measurements`` with the reason, never into made-up numbers. Synchronous: kopf runs the
handlers that call it in its thread pool.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sunblend.observe import prometheus

HISTORY = dt.timedelta(days=7)
HISTORY_STEP = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Measurements:
    """What Prometheus said, or why it could not say."""

    available: bool
    reason: str = ""
    utilisation: Mapping[str, float] = field(default_factory=dict)
    demand: Mapping[str, float] = field(default_factory=dict)
    history: Mapping[str, Sequence[tuple[dt.datetime, float]]] = field(default_factory=dict)
    waiting: Mapping[str, float] = field(default_factory=dict)  # model-server requests waiting
    kv_cache: Mapping[str, float] = field(default_factory=dict)  # model-server KV-cache usage, 0-1


class MetricsReader:
    """Reads and briefly caches Measurements per set of nodes."""

    def __init__(
        self,
        source: prometheus.PrometheusSource,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[tuple[tuple[str, str], ...], tuple[float, Measurements]] = {}
        self._lock = threading.Lock()

    def measure(self, regions: Sequence[str], node_regions: Mapping[str, str], now: dt.datetime) -> Measurements:
        """Utilisation, demand and hourly demand history for ``regions``' nodes."""
        key = tuple(sorted(node_regions.items()))
        started = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and started - hit[0] < self._ttl:
                return hit[1]
        try:
            utilisation = self._source.utilisation(node_regions)
            demand = self._source.demand(node_regions)
            history = {
                region: self._source.demand_history(region, node_regions, now - HISTORY, now, HISTORY_STEP)
                for region in regions
            }
        except prometheus.MetricsUnavailable as error:
            measured = Measurements(available=False, reason=str(error))
        else:
            measured = Measurements(
                available=True,
                utilisation={r: u.ratio for r, u in utilisation.items()},
                demand={r: d.tokens_per_second for r, d in demand.items()},
                history=history,
                waiting={r: d.requests_waiting for r, d in demand.items() if d.requests_waiting is not None},
                kv_cache={r: d.kv_cache_usage_ratio for r, d in demand.items() if d.kv_cache_usage_ratio is not None},
            )
        with self._lock:
            self._cache[key] = (started, measured)
        return measured
