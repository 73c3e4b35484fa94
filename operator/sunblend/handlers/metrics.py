"""The operator's own Prometheus metrics: prefix ``sunblend_``, base units, bounded labels.

kopf exports no metrics of its own. The handlers record here; ``serve`` exposes them over HTTP.
"""

from __future__ import annotations

import contextlib
import threading

import prometheus_client as prom

from sunblend.api.spec import CapacityType
from sunblend.core.plan import Plan

REGISTRY = prom.CollectorRegistry()

RECONCILE_SECONDS = prom.Histogram(
    "sunblend_reconcile_duration_seconds",
    "Time to reconcile one InferencePool: observe, plan, build the status.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SOLVE_STATUS = prom.Counter(
    "sunblend_solve_status_total", "Plans made, by solve status.", ["status"], registry=REGISTRY
)
PLAN_COST = prom.Gauge(
    "sunblend_plan_cost_dollars_per_hour",
    "Planned cost this hour by capacity type (committed: amortised).",
    ["namespace", "pool", "capacity_type"],
    registry=REGISTRY,
)
PLAN_GPUS = prom.Gauge(
    "sunblend_plan_gpus",
    "GPUs planned this hour.",
    ["namespace", "pool", "region", "gpu_class", "capacity_type"],
    registry=REGISTRY,
)
PLAN_SAVINGS = prom.Gauge(
    "sunblend_plan_savings_ratio",
    "Savings over the horizon versus all on-demand, 0-1.",
    ["namespace", "pool"],
    registry=REGISTRY,
)

DECIDED_COMMANDS = prom.Counter(
    "sunblend_decided_commands_total",
    "Commands the decision engine returned (run in Enforce mode, proposed in Advisory), by kind.",
    ["kind"],
    registry=REGISTRY,
)
EVENTS = prom.Counter(
    "sunblend_events_total",
    "Events posted on pools, by reason (e.g. SpotInterrupted, FellBackToOnDemand, DrainBlocked).",
    ["reason"],
    registry=REGISTRY,
)


API_WRITES = prom.Counter(
    "sunblend_api_writes_total",
    "Requests the operator sent to the API server that write (POST, PUT, PATCH, DELETE), by method.",
    ["method"],
    registry=REGISTRY,
)

LEADER = prom.Gauge(
    "sunblend_leader",
    "1 while this replica holds the leader Lease and acts, 0 while it follows (always 1 without leader election).",
    ["identity"],
    registry=REGISTRY,
)


def count(kinds: list[str], reasons: list[str]) -> None:
    """Count one step's commands and events."""
    for kind in kinds:
        DECIDED_COMMANDS.labels(kind).inc()
    for reason in reasons:
        EVENTS.labels(reason).inc()


_series: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
_lock = threading.Lock()


def record(namespace: str, pool: str, plan: Plan | None) -> None:
    """Record a pool's plan (or its absence), dropping series that no longer apply."""
    SOLVE_STATUS.labels("Invalid" if plan is None else plan.status.value).inc()
    current: set[tuple[str, str, str]] = set()
    if plan is not None and plan.has_solution:
        cost = plan.hour_costs[0]
        by_type = {
            CapacityType.COMMITTED: cost.committed_dollars,
            CapacityType.SPOT: cost.spot_dollars,
            CapacityType.ON_DEMAND: cost.on_demand_dollars,
        }
        for capacity_type, dollars in by_type.items():
            PLAN_COST.labels(namespace, pool, capacity_type.value).set(dollars)
        totals: dict[tuple[str, str, str], int] = {}
        for a in plan.allocations_at(0):
            key = (a.region, a.gpu_class, a.capacity_type.value)
            totals[key] = totals.get(key, 0) + a.gpus
        for key, gpus in totals.items():
            PLAN_GPUS.labels(namespace, pool, *key).set(gpus)
            current.add(key)
        PLAN_SAVINGS.labels(namespace, pool).set(plan.savings_ratio)
    with _lock:
        stale = _series.get((namespace, pool), set()) - current
        _series[(namespace, pool)] = current
    for key in stale:
        PLAN_GPUS.remove(namespace, pool, *key)


def forget(namespace: str, pool: str) -> None:
    """Drop every series of a deleted pool."""
    with _lock:
        keys = _series.pop((namespace, pool), set())
    for key in keys:
        PLAN_GPUS.remove(namespace, pool, *key)
    for capacity_type in CapacityType:
        with contextlib.suppress(KeyError):
            PLAN_COST.remove(namespace, pool, capacity_type.value)
    with contextlib.suppress(KeyError):
        PLAN_SAVINGS.remove(namespace, pool)


def tracked_pools() -> int:
    """Pools with a recorded plan."""
    with _lock:
        return len(_series)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Expose /metrics on ``address:port`` from a background thread."""
    prom.start_http_server(port, addr=address, registry=REGISTRY)
