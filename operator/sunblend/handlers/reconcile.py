"""One reconcile of one InferencePool: validate, observe nodes, plan, and build the status.

Called by the kopf handlers in ``handlers.pool`` (from kopf's thread pool: everything here is
synchronous). It reads the cluster but never writes to it; the handlers apply the result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sunblend.api import constants, load, spec, status
from sunblend.core import blend, forecast, nodes, problem, report
from sunblend.core.plan import Plan, SolveStatus
from sunblend.core.problem import OfferKey
from sunblend.handlers import measure
from sunblend.observe import cluster

# Status keys the operator owns; a merge patch sets absent ones to null so stale values go.
STATUS_KEYS = tuple(f.alias or name for name, f in status.InferencePoolStatus.model_fields.items() if name != "kopf")


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post about the pool."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """What a reconcile decided: the status patch, events, and the plan (for metrics)."""

    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    plan: Plan | None = None
    nodes_fingerprint: str = ""


def _patch(new: status.InferencePoolStatus) -> dict[str, Any]:
    body: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    body.update(new.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"kopf"}))
    return body


def fingerprint(present: Mapping[OfferKey, int] | None) -> str:
    """A short digest of the observed nodes, to notice when they change."""
    if present is None:
        return ""
    text = json.dumps(sorted((list(k), v) for k, v in present.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _observe(
    pool_spec: spec.InferencePoolSpec, reader: cluster.NodeReader | None, rules: Sequence[nodes.CapacityTypeRule]
) -> dict[OfferKey, int] | None:
    """Nodes per (region, class, capacity type), or None when they cannot be read."""
    if reader is None:
        return None
    try:
        labels = [n for g in pool_spec.gpu_classes if g.node_selector for n in reader.labels(g.node_selector)]
    except cluster.ClusterUnavailable:
        return None
    # A node matching two classes' selectors is listed twice; count it once.
    unique = {json.dumps(n, sort_keys=True): n for n in labels}.values()
    return nodes.count(pool_spec, unique, rules)


def fingerprint_of(body: Mapping[str, Any], reader: cluster.NodeReader, rules: Sequence[nodes.CapacityTypeRule]) -> str:
    """The fingerprint of the nodes a valid pool would see now ("" for an invalid pool)."""
    try:
        pool = load.parse_pool(body)
    except load.InvalidPool:
        return ""
    return fingerprint(_observe(pool.spec, reader, rules))


def _workload(
    pool: spec.InferencePool, workloads: cluster.WorkloadReader | None, result: Plan
) -> status.WorkloadReplicas | None:
    ref = pool.spec.model_server.workload_ref
    if ref is None or workloads is None:
        return None
    planned = sum(a.replicas for a in result.allocations_at(0)) if result.has_solution else None
    try:
        found = workloads.replicas(pool.metadata.namespace, ref.kind, ref.name)
    except cluster.ClusterUnavailable:
        return None
    if found is None:
        return status.WorkloadReplicas(kind=ref.kind, name=ref.name, found=False, planned_replicas=planned)
    return status.WorkloadReplicas(
        kind=ref.kind, name=ref.name, found=True, replicas=found[0], ready_replicas=found[1], planned_replicas=planned
    )


def _measure(
    pool_spec: spec.InferencePoolSpec,
    now: dt.datetime,
    reader: cluster.NodeReader | None,
    metrics: measure.MetricsReader | None,
    previous_status: Mapping[str, Any],
) -> tuple[dict[str, tuple[float, ...]] | None, list[status.RegionObservation], report.MetricsState]:
    """The forecast from live measurements, what was observed, and the MetricsAvailable state.

    Without Prometheus the declared profile stands. With Prometheus down, the declared profile
    stands too, but the first hour never plans below the last measured demand.
    """
    if metrics is None or reader is None:
        return None, [], report.MetricsState(None)
    regions = [r.name for r in pool_spec.regions]
    try:
        node_regions = {
            name: labels[constants.REGION_LABEL]
            for g in pool_spec.gpu_classes
            if g.node_selector
            for name, labels in reader.nodes(g.node_selector)
            if labels.get(constants.REGION_LABEL) in regions
        }
    except cluster.ClusterUnavailable as error:
        return None, [], report.MetricsState(False, str(error))
    measured = metrics.measure(regions, node_regions, now)
    hours = forecast.hour_starts(now, pool_spec.planning.horizon_hours)
    last = {o["region"]: o.get("demandTokensPerSecond") for o in previous_status.get("observed") or []}
    if not measured.available:
        floors = {r: last.get(r) for r in regions}
        demand = {r.name: forecast.live_forecast(r, hours, floor=floors[r.name]) for r in pool_spec.regions}
        kept = [status.RegionObservation.model_validate(o) for o in previous_status.get("observed") or []]
        return demand, kept, report.MetricsState(False, measured.reason)
    demand = {
        r.name: forecast.live_forecast(r, hours, measured.history.get(r.name, ()), measured.demand.get(r.name))
        for r in pool_spec.regions
    }
    observed = [
        status.RegionObservation(
            region=r,
            utilization_ratio=None if r not in measured.utilisation else round(measured.utilisation[r], 4),
            demand_tokens_per_second=None if r not in measured.demand else round(measured.demand[r], 1),
        )
        for r in regions
    ]
    return demand, observed, report.MetricsState(True)


def reconcile(
    body: Mapping[str, Any],
    now: dt.datetime,
    reader: cluster.NodeReader | None,
    rules: Sequence[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
    workloads: cluster.WorkloadReader | None = None,
    metrics: measure.MetricsReader | None = None,
) -> Outcome:
    """Decide the status of the pool in ``body`` at ``now``."""
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous_status = body.get("status") or {}
    previous = previous_status.get("conditions") or []
    try:
        pool = load.parse_pool(body)
    except load.InvalidPool as error:
        message = str(error)
        events = (
            ()
            if previous_status.get("observedGeneration") == generation
            else (Event("Warning", report.REASON_INVALID, message),)
        )
        return Outcome(_patch(report.invalid_status(message, generation, now, previous)), events)
    present = _observe(pool.spec, reader, rules)
    demand, observed, state = _measure(pool.spec, now, reader, metrics, previous_status)
    blend_problem = problem.from_spec(pool.spec, now, demand=demand, current_nodes=present or {})
    result = blend.plan(blend_problem)
    new = report.planned_status(result, generation, now, previous, present, observed, state)
    new = new.model_copy(update={"workload": _workload(pool, workloads, result)})
    patch = _patch(new)
    return Outcome(patch, tuple(_events(previous_status, patch, result)), result, fingerprint(present))


def _events(before: Mapping[str, Any], after: Mapping[str, Any], result: Plan) -> list[Event]:
    events = []
    if result.status is SolveStatus.INFEASIBLE:
        if before.get("message") != result.message:
            events.append(Event("Warning", report.REASON_INFEASIBLE, result.message))
    elif result.status is SolveStatus.ERROR:
        events.append(Event("Warning", report.REASON_SOLVER_ERROR, result.message))
    elif before.get("current") != after.get("current"):
        gpus = result.gpus_by_capacity_type(0)
        summary = ", ".join(f"{g} {t.value}" for t, g in gpus.items() if g)
        events.append(
            Event(
                "Normal",
                "PlanChanged",
                f"{result.status.value} plan for {after.get('plannedHour')}: {summary} GPUs, "
                f"${result.cost_dollars_per_hour:,.2f}/h, {result.savings_ratio:.1%} below all on-demand",
            )
        )
    capacity = _condition(after, constants.CONDITION_CAPACITY_AVAILABLE)
    was = _condition(before, constants.CONDITION_CAPACITY_AVAILABLE)
    if capacity.get("reason") == report.REASON_CAPACITY_SHORT and was.get("message") != capacity["message"]:
        reason = "SpotCapacityLost" if " spot:" in capacity["message"] else report.REASON_CAPACITY_SHORT
        events.append(Event("Warning", reason, capacity["message"]))
    return events


def _condition(status_body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status_body.get("conditions") or [] if c.get("type") == kind), {})
