"""Reads demand history for commitment advice from Prometheus: tokens/s per region over days. Read-only.

One range query per region over ``history`` up to ``end``, at ``step`` (5 minutes by default;
each point is the mean rate over its step, see ``observe.prometheus``). The series must carry
their region in a label (``region`` by default): the default PromQL sums vLLM's generated
tokens by that label. ``core.commitments.hourly_peaks`` then takes each hour's peak. A Prometheus
that cannot be reached, or that has no samples for a region, raises ``HistoryUnavailable`` with
a one-line reason. Called by the CLI (``sunblend advise commitments --prometheus-url``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from sunblend.observe import prometheus

DEFAULT_STEP = dt.timedelta(minutes=5)
REGION_LABEL = "region"


def default_query(region_label: str = REGION_LABEL) -> str:
    """PromQL for generated tokens/s by region; ``$window`` becomes the range query's step."""
    return f'sum by ({region_label}) (rate({{__name__=~"vllm[:_]generation_tokens_total"}}[$window]))'


class HistoryUnavailable(Exception):
    """Prometheus gave no usable demand history; the message says why, in one line."""


def read(
    config: prometheus.PrometheusConfig,
    regions: Iterable[str],
    end: dt.datetime,
    history: dt.timedelta,
    step: dt.timedelta = DEFAULT_STEP,
    region_label: str = REGION_LABEL,
    query: str | None = None,
) -> dict[str, list[tuple[dt.datetime, float]]]:
    """Tokens/s samples per region from ``end - history`` to ``end``, oldest first."""
    demand = dataclasses.replace(
        config.demand, tokens_per_second_history=query or default_query(region_label), region_label=region_label
    )
    source = prometheus.PrometheusSource(dataclasses.replace(config, demand=demand))
    samples: dict[str, list[tuple[dt.datetime, float]]] = {}
    try:
        for region in regions:
            samples[region] = source.demand_history(region, {}, end - history, end, step)
    except prometheus.MetricsUnavailable as error:
        raise HistoryUnavailable(str(error)) from error
    except ValueError as error:  # too many points for one range query
        raise HistoryUnavailable(f"--history {history} at a {step} step: {error}") from error
    finally:
        source.close()
    empty = [r for r, points in samples.items() if not points]
    if empty:
        raise HistoryUnavailable(
            f"Prometheus at {config.url} has no demand samples for region(s) {', '.join(empty)} "
            f"from {(end - history).isoformat()} to {end.isoformat()} (query: {demand.tokens_per_second_history}, "
            f"region label: {region_label})"
        )
    return samples
