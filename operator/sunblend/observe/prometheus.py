"""Reads GPU utilisation and model-server demand from Prometheus, per region. Read-only.

The operator calls it from a worker thread (prometheus-api-client is synchronous: it uses
requests), and the forecast reads demand history through it. Nodes map to regions through a
``{node: region}`` dict the caller passes in, built from the nodes' ``topology.kubernetes.io/region``
label.

- **Utilisation** comes, per GPU, from the first source that has it: the sunblend agent's
  ``sunblend_gpu_utilization_ratio`` (0-1), DCGM's ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (0-1, also per
  MIG device), or DCGM's ``DCGM_FI_DEV_GPU_UTIL`` (a percentage, and not reported under MIG). The
  node comes from the ``node`` label, or DCGM's ``Hostname`` (older) or ``hostname`` (newer).
- **Demand** comes from the model server's own metrics, vLLM's by default: generation tokens/s,
  requests waiting and KV-cache usage. GPU utilisation saturates under continuous batching, so it
  cannot stand for demand. Every PromQL expression is configurable.

It never makes a value up: when Prometheus is down, slow, or answers with an error, every call
raises ``MetricsUnavailable`` with the reason; a region without series is absent from the answer,
not zero.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

MAX_RANGE_POINTS = 11_000
"""Prometheus refuses a range query with more points than this per series."""


class MetricsUnavailable(Exception):
    """Prometheus could not answer (down, slow, refusing, or an error status); the message says why."""


class QueryRejected(MetricsUnavailable):
    """Prometheus rejected a query as invalid (HTTP 400 or 422): the configured PromQL is wrong."""


@dataclass(frozen=True)
class UtilisationQueries:
    """PromQL for GPU utilisation, one per source, tried in this order for each GPU."""

    agent: str = "avg_over_time(sunblend_gpu_utilization_ratio[2m])"
    """The sunblend agent: a 0-1 ratio per GPU, with ``node`` and ``gpu`` labels."""
    dcgm_ratio: str = "avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[2m])"
    """DCGM's graphics-engine activity: a 0-1 ratio per GPU, or per MIG device under MIG."""
    dcgm_percent: str = "avg_over_time(DCGM_FI_DEV_GPU_UTIL[2m])"
    """DCGM's GPU utilisation: a percentage per GPU; not reported for MIG."""
    node_labels: tuple[str, ...] = ("node", "Hostname", "hostname")
    """Labels that name a series' node, in the order they are looked for."""


@dataclass(frozen=True)
class DemandQueries:
    """PromQL for the model server's demand signals; each returns one series per node (or region).

    vLLM names its metrics ``vllm:...``. A Prometheus that negotiates OpenMetrics with a recent
    Python client stores them as ``vllm_...`` (the client escapes the colon), so the defaults
    match both spellings.
    """

    tokens_per_second: str = 'sum by (node) (rate({__name__=~"vllm[:_]generation_tokens_total"}[2m]))'
    """Generated tokens per second now: the demand the planner sizes for."""
    tokens_per_second_history: str = 'sum by (node) (rate({__name__=~"vllm[:_]generation_tokens_total"}[$window]))'
    """The same for history. ``$window`` becomes the range query's step (at least ``min_history_window``),
    so each point is the mean over its step, not a sample of the moment at its end."""
    min_history_window: dt.timedelta = dt.timedelta(minutes=2)
    """The shortest ``$window``: rate() needs two scrapes in it."""
    requests_waiting: str = 'sum by (node) ({__name__=~"vllm[:_]num_requests_waiting"})'
    """Requests queued for lack of capacity (demand the tokens/s above does not show yet)."""
    kv_cache_usage: str = 'avg by (node) ({__name__=~"vllm[:_](gpu|kv)_cache_usage_perc"})'
    """KV-cache usage, 0-1 despite the name (``gpu_cache_usage_perc`` in older vLLM, ``kv_...`` in newer)."""
    node_label: str = "node"
    """The label that names the node a series comes from (set by relabelling in the scrape config)."""
    region_label: str | None = None
    """When the series carry their region in this label, it is used instead of the node's region."""


@dataclass(frozen=True)
class PrometheusConfig:
    """Where Prometheus is and how to reach it."""

    url: str
    bearer_token_file: Path | None = None
    """A file holding a bearer token (e.g. a mounted Secret); read at every request, so it may rotate."""
    verify_tls: bool = True
    ca_file: Path | None = None
    """A CA bundle to verify Prometheus's certificate with, instead of the system's."""
    timeout_seconds: float = 5.0
    """For each request; Prometheus is also asked to give up on the query after this long."""
    retries: int = 1
    """Retries after a failed connection or a 502/503/504, each within the timeout."""
    utilisation: UtilisationQueries = field(default_factory=UtilisationQueries)
    demand: DemandQueries = field(default_factory=DemandQueries)


@dataclass(frozen=True)
class RegionUtilisation:
    """The mean GPU utilisation of one region's GPUs, and how many GPUs it is the mean of."""

    region: str
    ratio: float
    gpus: int
    sources: tuple[str, ...]
    """Which sources answered for the region's GPUs: ``agent``, ``dcgm_ratio``, ``dcgm_percent``."""


@dataclass(frozen=True)
class RegionDemand:
    """What one region's model servers are serving now."""

    region: str
    tokens_per_second: float
    requests_waiting: float | None
    kv_cache_usage_ratio: float | None


class _BearerTokenFile(requests.auth.AuthBase):
    """Adds ``Authorization: Bearer <token>`` from a file, read at each request."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.path.read_text(encoding='utf-8').strip()}"
        return request


class _TimeoutSession(requests.Session):
    """A session that applies ``timeout_seconds`` to every request made without a timeout."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__()
        self.timeout_seconds = timeout_seconds

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_seconds
        return super().request(*args, **kwargs)


def _finite(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class PrometheusSource:
    """Utilisation, demand and demand history per region, from one Prometheus server."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.config = config
        session = _TimeoutSession(config.timeout_seconds)
        session.verify = str(config.ca_file) if config.ca_file is not None and config.verify_tls else config.verify_tls
        if config.bearer_token_file is not None:
            session.auth = _BearerTokenFile(config.bearer_token_file)
        retry = Retry(
            total=config.retries,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            raise_on_status=False,
        )
        self._client = PrometheusConnect(url=config.url.rstrip("/"), session=session, retry=retry)
        self._session = session

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def utilisation(self, node_regions: Mapping[str, str]) -> dict[str, RegionUtilisation]:
        """Mean GPU utilisation (0-1) per region, over the GPUs of the nodes in ``node_regions``."""
        queries = self.config.utilisation
        per_gpu: dict[tuple[str, str], tuple[str, list[float]]] = {}
        for source, promql, scale in (
            ("agent", queries.agent, 1.0),
            ("dcgm_ratio", queries.dcgm_ratio, 1.0),
            ("dcgm_percent", queries.dcgm_percent, 0.01),
        ):
            found: dict[tuple[str, str], list[float]] = {}
            for labels, value in self._instant(promql):
                node = next((labels[name] for name in queries.node_labels if labels.get(name)), None)
                if node is None or node not in node_regions:
                    continue
                key = (node, labels.get("gpu", ""))
                if key not in per_gpu:
                    found.setdefault(key, []).append(value * scale)
            per_gpu.update({key: (source, values) for key, values in found.items()})
            if {node for node, _gpu in per_gpu} >= set(node_regions):
                break  # every node is covered: the next sources would not be used
        totals: dict[str, tuple[float, int, set[str]]] = {}
        for (node, _gpu), (source, values) in per_gpu.items():
            region = node_regions[node]
            total, gpus, sources = totals.get(region, (0.0, 0, set()))
            # MIG devices of one GPU (DCGM) count as one GPU, at their mean activity.
            totals[region] = (total + sum(values) / len(values), gpus + 1, sources | {source})
        return {
            region: RegionUtilisation(region, total / gpus, gpus, tuple(sorted(sources)))
            for region, (total, gpus, sources) in sorted(totals.items())
        }

    def demand(self, node_regions: Mapping[str, str]) -> dict[str, RegionDemand]:
        """Tokens/s, requests waiting and KV-cache usage per region, now."""
        queries = self.config.demand
        tokens = self._by_region(self._instant(queries.tokens_per_second), node_regions)
        waiting = self._by_region(self._instant(queries.requests_waiting), node_regions)
        kv_cache = self._by_region(self._instant(queries.kv_cache_usage), node_regions)
        return {
            region: RegionDemand(
                region=region,
                tokens_per_second=sum(values),
                requests_waiting=sum(waiting[region]) if region in waiting else None,
                kv_cache_usage_ratio=sum(kv_cache[region]) / len(kv_cache[region]) if region in kv_cache else None,
            )
            for region, values in sorted(tokens.items())
        }

    def demand_history(
        self,
        region: str,
        node_regions: Mapping[str, str],
        start: dt.datetime,
        end: dt.datetime,
        step: dt.timedelta = dt.timedelta(minutes=5),
    ) -> list[tuple[dt.datetime, float]]:
        """Tokens/s served in ``region`` from ``start`` to ``end``, one point per ``step``, oldest first.

        Each point is the mean rate over the ``step`` that ends at it (see ``tokens_per_second_history``).
        Times are UTC, on whole seconds within ``start``..``end``. A time at which no series of the
        region has a value is left out.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        seconds = step.total_seconds()
        if seconds <= 0 or end <= start:
            raise ValueError("need start < end and a positive step")
        if (end - start).total_seconds() / seconds > MAX_RANGE_POINTS:
            raise ValueError(f"{start} to {end} at {step} is more than {MAX_RANGE_POINTS} points; use a longer step")
        # The client rounds both ends to whole seconds; rounding ``end`` up would ask for a moment
        # still to come, whose rate() reads low. So: start up, end down, here.
        first = dt.datetime.fromtimestamp(math.ceil(start.timestamp()), dt.UTC)
        last = dt.datetime.fromtimestamp(math.floor(end.timestamp()), dt.UTC)
        if last < first:
            return []
        window = max(step, self.config.demand.min_history_window).total_seconds()
        promql = self.config.demand.tokens_per_second_history.replace("$window", f"{window:.0f}s")
        series = self._request(
            promql, lambda: self._client.custom_query_range(promql, first, last, f"{seconds:g}", params=self._params())
        )
        totals: dict[float, float] = {}
        for item in series:
            if self._region_of(item.get("metric", {}), node_regions) != region:
                continue
            for timestamp, text in item.get("values", []):
                value = _finite(text)
                if value is not None:
                    totals[float(timestamp)] = totals.get(float(timestamp), 0.0) + value
        return [(dt.datetime.fromtimestamp(t, dt.UTC), value) for t, value in sorted(totals.items())]

    def _params(self) -> dict[str, str]:
        return {"timeout": f"{self.config.timeout_seconds:g}s"}

    def _instant(self, promql: str) -> list[tuple[dict[str, str], float]]:
        series = self._request(promql, lambda: self._client.custom_query(promql, params=self._params()))
        found: list[tuple[dict[str, str], float]] = []
        for item in series:
            value = _finite(item.get("value", [None, None])[1])
            if value is not None:
                found.append((dict(item.get("metric", {})), value))
        return found

    def _region_of(self, labels: Mapping[str, str], node_regions: Mapping[str, str]) -> str | None:
        queries = self.config.demand
        if queries.region_label is not None and labels.get(queries.region_label):
            return labels[queries.region_label]
        return node_regions.get(labels.get(queries.node_label, ""))

    def _by_region(
        self, series: Iterable[tuple[dict[str, str], float]], node_regions: Mapping[str, str]
    ) -> dict[str, list[float]]:
        regions: dict[str, list[float]] = {}
        for labels, value in series:
            region = self._region_of(labels, node_regions)
            if region is not None:
                regions.setdefault(region, []).append(value)
        return regions

    def _request(self, promql: str, call: Callable[[], object]) -> list[dict[str, Any]]:
        """Run one API call, turning every way it can fail into ``MetricsUnavailable``."""
        where = f"Prometheus at {self.config.url}"
        try:
            answer = call()
        except PrometheusApiClientException as error:
            status = re.search(r"HTTP Status Code (\d+)", str(error))
            code = int(status.group(1)) if status else 0
            if code in (400, 422):
                raise QueryRejected(f"{where} rejected the query {promql!r}: {str(error)[:300]}") from error
            raise MetricsUnavailable(f"{where} answered HTTP {code or '?'}: {str(error)[:300]}") from error
        except requests.RequestException as error:
            if isinstance(error, requests.Timeout) or "timed out" in str(error).lower():
                reason = f"{where} did not answer within {self.config.timeout_seconds:g} s"
            elif isinstance(error, requests.ConnectionError):
                reason = f"cannot connect to {where}: {error}"
            else:
                reason = f"request to {where} failed: {error}"
            raise MetricsUnavailable(reason) from error
        except OSError as error:  # the bearer token file
            raise MetricsUnavailable(f"cannot authenticate to {where}: {error}") from error
        except (ValueError, KeyError, TypeError) as error:
            raise MetricsUnavailable(f"{where} did not answer like the Prometheus HTTP API: {error!r}") from error
        if not isinstance(answer, list):
            raise MetricsUnavailable(f"{where} did not answer like the Prometheus HTTP API: {type(answer).__name__}")
        return answer
