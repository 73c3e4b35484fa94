"""The InferencePool status as pydantic models: conditions, the plan for this hour, a day ahead.

The operator writes it; the CRD schema for ``.status`` is generated from it, so every field the
operator stores survives the API server's pruning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class Condition(_Model):
    """A ``metav1.Condition``."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int | None = Field(None, ge=0)


class PlannedCapacity(_Model):
    """Nodes of one GPU class and capacity type in one region."""

    region: str
    gpu_class: str
    capacity_type: str
    nodes: int
    gpus: int
    replicas: int


class Route(_Model):
    """Demand of one user region served in another region."""

    from_region: str = Field(alias="from")
    to_region: str = Field(alias="to")
    tokens_per_second: float


class RegionWeight(_Model):
    """One serving region's share of a user region's traffic."""

    region: str
    weight: int = Field(ge=0, le=100)


class TrafficWeights(_Model):
    """Where one user region's traffic goes in the planned hour (from the plan's routes)."""

    user_region: str
    backends: list[RegionWeight] = Field(
        default_factory=list, description="Serving regions and their share; sums to 100."
    )


class HourSummary(_Model):
    """One planned hour."""

    start: str = Field(description="RFC 3339 start of the hour.")
    demand_tokens_per_second: float
    committed_gpus: int
    spot_gpus: int
    on_demand_gpus: int
    cost_dollars_per_hour: float


class RegionObservation(_Model):
    """What was measured in one region."""

    region: str
    utilization_ratio: float | None = None
    demand_tokens_per_second: float | None = None


class WorkloadReplicas(_Model):
    """Replicas of the workload named by ``spec.modelServer.workloadRef``, as observed."""

    kind: str
    name: str
    region: str | None = Field(None, description="The region it serves (workloadRefs); absent: the whole pool.")
    found: bool
    replicas: int | None = None
    ready_replicas: int | None = None
    planned_replicas: int | None = Field(None, description="Replicas the plan has room for this hour.")


class CommandStatus(_Model):
    """One command of the last decision: run (Enforce) or only proposed (Advisory)."""

    kind: str
    target: str
    value: int | None = None
    reason: str = ""


class RegionThroughput(_Model):
    """Tokens/s one replica serves in a region: measured while busy, and declared."""

    region: str
    measured_tokens_per_second: float
    declared_tokens_per_second: float


class Actuation(_Model):
    """What the operator did, or would do, with the last decision."""

    mode: str = Field(description="Advisory or Enforce.")
    node_provider: str = Field("none", description="Who was asked for nodes.")
    decided_at: str | None = Field(None, description="RFC 3339 time of the last decision.")
    commands: list[CommandStatus] = Field(default_factory=list)
    draining: list[str] = Field(default_factory=list, description="Nodes this pool is draining.")
    drains_started: list[str] = Field(default_factory=list, description="When drains started, the last hour.")
    spot_nodes: list[str] = Field(default_factory=list, description="Spot nodes seen last time (to notice one vanish).")


class CommitmentToBuy(_Model):
    """Commitment advice for one GPU class in one region, beside what is held."""

    gpu_class: str
    region: str
    advised_gpus: int = Field(ge=0, description="Committed GPUs the demand history pays for.")
    held_gpus: int = Field(ge=0, description="Committed GPUs held now (spec.commitments).")
    buy_gpus: int = Field(ge=0, description="GPUs to commit now beyond those held; 0 when enough are held.")
    break_even_ratio: float | None = Field(
        None, description="Share of hours a committed GPU must run to cost less than on-demand."
    )
    utilization_ratio: float | None = Field(None, description="Share of the advised GPU-hours the history runs.")


class CommitmentAdvice(_Model):
    """What to commit to now, from the pool's demand history in Prometheus, and what it saves."""

    term: str = Field(description="The commitment term priced: pool (the pool's committed prices).")
    commitments: list[CommitmentToBuy] = Field(default_factory=list)
    saving_dollars_per_month: float | None = Field(
        None, description="What holding the advice saves per month against holding no commitments."
    )
    saving_over_held_dollars_per_month: float | None = Field(
        None, description="What holding the advice saves per month against holding what is held now."
    )
    demand_fall_ratio: float | None = Field(None, description="The fall in demand whose risk is reported.")
    demand_fall_extra_dollars_per_month: float | None = Field(
        None, description="If demand fell so: what the advice costs per month beyond holding none (<0: saves)."
    )
    history_start: str | None = Field(None, description="RFC 3339 start of the first hour of history used.")
    history_end: str = Field(description="RFC 3339 end of the history read from Prometheus.")
    history_window: str = Field(description="How far back Prometheus was read, e.g. 14d.")
    history_hours: int | None = Field(None, ge=0, description="Hours of history advised on.")
    computed_at: str = Field(description="RFC 3339 time the advice was computed.")
    observed_generation: int | None = Field(None, ge=0, description="The spec generation it was computed for.")
    error: str | None = Field(None, description="Why no advice could be made this time.")


class InferencePoolStatus(_Model):
    """What the operator reports about a pool."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    solve_status: str | None = None
    planned_hour: str | None = Field(None, description="RFC 3339 start of the hour planned.")
    cost_dollars_per_hour: float | None = Field(
        None, description="This hour: planned cost, dollars per hour, committed (amortised) included."
    )
    on_demand_cost_dollars_per_hour: float | None = Field(
        None, description="This hour: the same demand, routed the same way, served all on-demand, dollars."
    )
    savings_percent: float | None = Field(None, description="This hour: savings versus all on-demand, percent.")
    horizon_hours: int | None = Field(None, description="Hours in the planning horizon.")
    horizon_cost_dollars: float | None = Field(None, description="Over the horizon: planned cost, dollars.")
    horizon_on_demand_cost_dollars: float | None = Field(
        None, description="Over the horizon: the same demand served all on-demand, dollars."
    )
    horizon_savings_percent: float | None = Field(
        None, description="Over the horizon: savings versus all on-demand, percent."
    )
    gap_percent: float | None = Field(
        None, description="Proven gap between the plan's cost and a lower bound on any plan's, percent."
    )
    spot_percent: float | None = None
    cost_per_million_tokens_dollars: float | None = None
    current: list[PlannedCapacity] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    traffic_weights: list[TrafficWeights] = Field(
        default_factory=list, description="Per user region, the serving regions and their share this hour."
    )
    next_hours: list[HourSummary] = Field(default_factory=list)
    observed: list[RegionObservation] = Field(default_factory=list)
    workload: WorkloadReplicas | None = None
    workloads: list[WorkloadReplicas] = Field(default_factory=list, description="Each workloadRefs entry.")
    actuation: Actuation | None = None
    throughput: list[RegionThroughput] = Field(default_factory=list)
    commitment_advice: CommitmentAdvice | None = Field(
        None, description="What to commit to now and what it saves (the operator, with Prometheus)."
    )
    policy_state: dict[str, Any] | None = Field(
        None, description="The decision engine's memory (forecast correction, spot losses, plan ahead)."
    )
    message: str | None = None
    kopf: dict[str, Any] | None = Field(
        None, description="The operator framework's own bookkeeping (handler progress, last handled spec)."
    )
