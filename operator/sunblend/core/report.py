"""Builds an InferencePool's status from a plan: conditions, this hour's capacity, the day ahead.

Pure: the time is passed in, and the previous conditions are passed in so that
``lastTransitionTime`` only moves when a condition's status changes. Conditions follow
``metav1.Condition`` and always carry ``observedGeneration``. Called by the operator's handlers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sunblend.api import constants
from sunblend.api.spec import CapacityType
from sunblend.api.status import (
    Condition,
    HourSummary,
    InferencePoolStatus,
    PlannedCapacity,
    RegionObservation,
    Route,
)
from sunblend.core.plan import Plan, SolveStatus
from sunblend.core.problem import OfferKey

SUMMARY_HOURS = 24

# Reasons (CamelCase, one word), shared with events.
REASON_PLANNED = "Planned"
REASON_FEASIBLE = "PlannedWithinTimeLimit"
REASON_INVALID = "InvalidSpec"
REASON_INFEASIBLE = "Infeasible"
REASON_DEGRADED = "PlanBreaksAConstraint"
REASON_SOLVER_ERROR = "SolverError"
REASON_CAPACITY_MET = "CapacityMet"
REASON_CAPACITY_SHORT = "CapacityShort"
REASON_NOT_OBSERVED = "NotObserved"
REASON_METRICS_READ = "MetricsRead"
REASON_METRICS_UNAVAILABLE = "PrometheusUnavailable"
REASON_METRICS_NOT_CONFIGURED = "NotConfigured"


@dataclass(frozen=True)
class MetricsState:
    """Whether live measurements fed this plan: True, False (with why), or None (not configured)."""

    available: bool | None
    message: str = ""

    def condition(self, generation: int | None, now: dt.datetime, previous: Sequence[Mapping[str, Any]]) -> Condition:
        """The MetricsAvailable condition."""
        if self.available is None:
            reason, message = REASON_METRICS_NOT_CONFIGURED, "no Prometheus configured: the declared profile is used"
        elif self.available:
            reason, message = REASON_METRICS_READ, self.message or "utilisation and demand read from Prometheus"
        else:
            reason = REASON_METRICS_UNAVAILABLE
            message = f"{self.message}; planning from the declared profile, not below the last measured demand"
        return condition(
            constants.CONDITION_METRICS_AVAILABLE, self.available, reason, message, generation, now, previous
        )


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
    previous: Sequence[Mapping[str, Any]] = (),
) -> Condition:
    """A condition, keeping the previous ``lastTransitionTime`` when the status did not change."""
    text = "Unknown" if status is None else ("True" if status else "False")
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == text else _rfc3339(now)
    return Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def shortfalls(plan: Plan, present_nodes: Mapping[OfferKey, int]) -> list[str]:
    """This hour's planned nodes that the cluster does not have, in words."""
    missing = []
    for a in plan.allocations_at(0):
        have = present_nodes.get((a.region, a.gpu_class, a.capacity_type), 0)
        if have < a.nodes:
            missing.append(f"{a.region} {a.gpu_class} {a.capacity_type.value}: {have}/{a.nodes} nodes")
    return missing


def invalid_status(
    message: str, generation: int | None, now: dt.datetime, previous: Sequence[Mapping[str, Any]]
) -> InferencePoolStatus:
    """Status of a pool whose spec breaks a rule: not Ready, not planned, and why."""
    conditions = [
        condition(constants.CONDITION_READY, False, REASON_INVALID, message, generation, now, previous),
        condition(constants.CONDITION_PLANNED, False, REASON_INVALID, message, generation, now, previous),
        condition(constants.CONDITION_CAPACITY_AVAILABLE, None, REASON_INVALID, message, generation, now, previous),
    ]
    return InferencePoolStatus(observed_generation=generation, conditions=conditions, message=message)


def planned_status(
    plan: Plan,
    generation: int | None,
    now: dt.datetime,
    previous: Sequence[Mapping[str, Any]],
    present_nodes: Mapping[OfferKey, int] | None,
    observed: Sequence[RegionObservation] = (),
    metrics: MetricsState = MetricsState(None),
) -> InferencePoolStatus:
    """Status after planning: conditions, this hour's plan and a summary of the hours ahead."""
    if plan.has_solution:
        reason = REASON_PLANNED if plan.status is SolveStatus.OPTIMAL else REASON_FEASIBLE
        text = f"{plan.status.value} plan: {plan.summary()}"
        if plan.status is SolveStatus.DEGRADED:
            reason = REASON_DEGRADED
            text = f"{text}; {plan.message}"
        # A Degraded plan still serves the demand, but breaks a constraint: Planned, not Ready.
        ok = plan.keeps_every_constraint
        ready = condition(constants.CONDITION_READY, ok, reason, text, generation, now, previous)
        planned = condition(constants.CONDITION_PLANNED, True, reason, text, generation, now, previous)
    else:
        reason = REASON_INFEASIBLE if plan.status is SolveStatus.INFEASIBLE else REASON_SOLVER_ERROR
        ready = condition(constants.CONDITION_READY, False, reason, plan.message, generation, now, previous)
        planned = condition(constants.CONDITION_PLANNED, False, reason, plan.message, generation, now, previous)
    if present_nodes is None or not plan.has_solution:
        capacity = condition(
            constants.CONDITION_CAPACITY_AVAILABLE,
            None,
            REASON_NOT_OBSERVED,
            "nodes not observed",
            generation,
            now,
            previous,
        )
    else:
        missing = shortfalls(plan, present_nodes)
        capacity = condition(
            constants.CONDITION_CAPACITY_AVAILABLE,
            not missing,
            REASON_CAPACITY_SHORT if missing else REASON_CAPACITY_MET,
            "; ".join(missing) if missing else "every planned node for this hour is present",
            generation,
            now,
            previous,
        )
    conditions = [ready, planned, capacity, metrics.condition(generation, now, previous)]
    if not plan.has_solution:
        return InferencePoolStatus(
            observed_generation=generation,
            conditions=conditions,
            solve_status=plan.status.value,
            observed=list(observed),
            message=plan.message,
        )
    per_million = plan.dollars_per_million_tokens
    return InferencePoolStatus(
        observed_generation=generation,
        conditions=conditions,
        solve_status=plan.status.value,
        planned_hour=_rfc3339(plan.hours[0]),
        cost_dollars_per_hour=round(plan.cost_dollars_per_hour, 2),
        on_demand_cost_dollars_per_hour=round(plan.all_on_demand_dollars_per_hour, 2),
        savings_percent=round(100 * plan.savings_ratio_this_hour, 1),
        horizon_hours=len(plan.hours),
        horizon_cost_dollars=round(plan.total_dollars, 2),
        horizon_on_demand_cost_dollars=round(plan.total_all_on_demand_dollars, 2),
        horizon_savings_percent=round(100 * plan.savings_ratio, 1),
        gap_percent=None if plan.mip_gap is None else round(100 * plan.mip_gap, 2),
        spot_percent=round(100 * plan.spot_ratio, 1),
        cost_per_million_tokens_dollars=None if per_million is None else round(per_million, 4),
        current=[
            PlannedCapacity(
                region=a.region,
                gpu_class=a.gpu_class,
                capacity_type=a.capacity_type.value,
                nodes=a.nodes,
                gpus=a.gpus,
                replicas=a.replicas,
            )
            for a in plan.allocations_at(0)
        ],
        routes=[
            Route(from_region=f.from_region, to_region=f.to_region, tokens_per_second=round(f.tokens_per_second, 1))
            for f in plan.flows
            if f.hour == 0
        ],
        next_hours=[_hour(plan, h.hour) for h in plan.hour_costs[:SUMMARY_HOURS]],
        observed=list(observed),
        message="; ".join((plan.message, *plan.notes)) if plan.notes else plan.message,
    )


def _hour(plan: Plan, hour: int) -> HourSummary:
    cost = plan.hour_costs[hour]
    gpus = plan.gpus_by_capacity_type(hour)
    return HourSummary(
        start=_rfc3339(cost.start),
        demand_tokens_per_second=round(cost.demand_tokens_per_second, 1),
        committed_gpus=gpus[CapacityType.COMMITTED],
        spot_gpus=gpus[CapacityType.SPOT],
        on_demand_gpus=gpus[CapacityType.ON_DEMAND],
        cost_dollars_per_hour=round(cost.dollars, 2),
    )
