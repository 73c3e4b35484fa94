"""The InferencePool spec as frozen pydantic models: the one source of the CRD's schema.

Field constraints (ranges, lengths) become OpenAPI keywords in the CRD; rules across fields are
declared once in ``api.rules`` and checked both by the API server (as CEL) and here.
The CRD generator (``api.crd``) and the pool loader (``api.load``) read these models.

Every number is strict, finite and bounded: a string that looks like a number, a boolean, an
infinity or an absurd magnitude is refused here and by the API server, never planned with.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from pydantic.alias_generators import to_camel

from sunblend.api import rules

_LIST_MAP: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LABEL_VALUE_MAX = 63
MAX_TOKENS_PER_SECOND = 1e9
MIN_TOKENS_PER_SECOND_PER_REPLICA = 0.001  # so the most replicas any demand needs stays far below 2**53
MAX_DOLLARS_PER_GPU_HOUR = 1000.0


class CapacityType(enum.StrEnum):
    """How a GPU node is bought; values match Karpenter's capacity-type vocabulary."""

    COMMITTED = "committed"
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class PlanningMode(enum.StrEnum):
    """Operate on the commitments already bought, or size new commitments."""

    OPERATE = "Operate"
    SIZE_COMMITMENTS = "SizeCommitments"


class SolverName(enum.StrEnum):
    """The MILP solver behind the planner."""

    HIGHS = "HiGHS"
    CBC = "CBC"


class _Model(BaseModel):
    """Shared config: camelCase on the wire, immutable, unknown fields and non-finite numbers rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        use_enum_values=False,
        allow_inf_nan=False,
    )


def _name(description: str) -> Any:
    return Field(min_length=1, max_length=LABEL_VALUE_MAX, pattern=NAME_PATTERN, description=description)


class WorkloadRef(_Model):
    """An existing workload that runs the model server; sunblend scales its replicas."""

    api_version: str = Field("apps/v1", max_length=253, description="API version of the workload.")
    kind: Literal["Deployment", "StatefulSet"] = Field("Deployment", description="Kind of the workload.")
    name: str = _name("Name of the workload, in the pool's namespace.")


class RegionalWorkloadRef(WorkloadRef):
    """A user's own workload serving one region; sunblend scales it to that region's replicas."""

    region: str = _name("A declared region.")


class ModelServer(_Model):
    """The inference server one replica runs, and what one replica can serve."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.MODEL_SERVER))

    model: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        # As model hubs and servers write a model: letters, digits and ``._:@+-``, in parts joined by "/".
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*(/[A-Za-z0-9._:@+-]+)*$",
        description="The model served, e.g. meta-llama/Llama-3.1-70B-Instruct; pools serving the same model "
        "may be advised to consolidate.",
    )
    gpus_per_replica: StrictInt = Field(1, ge=1, le=64, description="GPUs one replica needs.")
    tokens_per_second_per_replica: StrictFloat = Field(
        ge=MIN_TOKENS_PER_SECOND_PER_REPLICA,
        le=MAX_TOKENS_PER_SECOND,
        description="Tokens/s one replica serves at the target latency.",
    )
    target_latency_ms: StrictInt | None = Field(
        None, ge=1, le=600000, description="The latency target the throughput figure was measured at."
    )
    workload_ref: WorkloadRef | None = Field(
        None, description="An existing workload to scale. Mutually exclusive with template."
    )
    template: dict[str, Any] | None = Field(
        None, description="Pod template of the server; sunblend creates one workload per region."
    )
    workload_refs: list[RegionalWorkloadRef] = Field(
        default_factory=list,
        max_length=rules.MAX_REGIONS,
        description="Existing workloads, one per region, each scaled to its region's replicas.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["region"]},
    )


class BusyHours(_Model):
    """Local hours [start, end) of the busy part of the day; wraps past midnight when end < start."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.BUSY_HOURS))

    start: StrictInt = Field(9, ge=0, le=23, description="First busy hour, local time (0-23).")
    end: StrictInt = Field(18, ge=0, le=24, description="Hour the busy period ends, local time (0-24).")


class DemandProfile(_Model):
    """A region's daily demand in its local time: a baseline, and a peak during busy hours."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.DEMAND))

    baseline_tokens_per_second: StrictFloat = Field(
        ge=0, le=MAX_TOKENS_PER_SECOND, description="Demand outside busy hours, tokens/s."
    )
    peak_tokens_per_second: StrictFloat = Field(
        ge=0, le=MAX_TOKENS_PER_SECOND, description="Demand during busy hours, tokens/s."
    )
    busy_hours: BusyHours = Field(default_factory=BusyHours, description="Busy hours, local time.")
    prometheus_query: str | None = Field(
        None, max_length=4096, description="Optional PromQL giving live demand in tokens/s."
    )


class Region(_Model):
    """A region where users are and GPUs may run."""

    name: str = _name("Matches the nodes' topology.kubernetes.io/region label.")
    time_zone: str = Field(min_length=1, max_length=64, description="IANA time zone, e.g. Asia/Kolkata.")
    demand: DemandProfile = Field(description="Demand of users in this region.")


def _price(description: str, required: bool = False) -> Any:
    if required:
        return Field(ge=0, le=MAX_DOLLARS_PER_GPU_HOUR, description=description)
    return Field(None, ge=0, le=MAX_DOLLARS_PER_GPU_HOUR, description=description)


class Prices(_Model):
    """Prices in dollars per GPU-hour for each capacity type; absent means not offered."""

    committed: StrictFloat | None = _price("Amortised committed price, $/GPU-hour.")
    spot: StrictFloat | None = _price("Spot price, $/GPU-hour; absent: no spot.")
    on_demand: StrictFloat = _price("On-demand price, $/GPU-hour.", required=True)


class RegionPrices(_Model):
    """Prices that override a GPU class's defaults in one region, field by field."""

    region: str = _name("A declared region.")
    committed: StrictFloat | None = _price("Amortised committed price here, $/GPU-hour; absent: the class's.")
    spot: StrictFloat | None = _price("Spot price here, $/GPU-hour; absent: the class's.")
    on_demand: StrictFloat | None = _price("On-demand price here, $/GPU-hour; absent: the class's.")

    def over(self, defaults: Prices) -> Prices:
        """``defaults`` with each price this entry gives put in its place."""
        return Prices(
            committed=defaults.committed if self.committed is None else self.committed,
            spot=defaults.spot if self.spot is None else self.spot,
            on_demand=defaults.on_demand if self.on_demand is None else self.on_demand,
        )


class GpuClass(_Model):
    """A kind of GPU node, found by node labels, with its prices."""

    name: str = _name("Name of the GPU class, e.g. h100.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels that select nodes of this class."
    )
    gpus_per_node: StrictInt = Field(8, ge=1, le=64, description="GPUs on one node of this class.")
    tokens_per_second_per_replica: StrictFloat | None = Field(
        None,
        ge=MIN_TOKENS_PER_SECOND_PER_REPLICA,
        le=MAX_TOKENS_PER_SECOND,
        description="Throughput of one replica on this class; default: the model server's.",
    )
    prices: Prices = Field(description="Prices in every region unless overridden.")
    region_prices: list[RegionPrices] = Field(
        default_factory=list,
        max_length=rules.MAX_REGIONS,
        description="Per-region price overrides; a price an entry leaves out is the class's.",
    )
    regions: list[str] = Field(
        default_factory=list,
        max_length=rules.MAX_REGIONS,
        description="Regions offering this class; empty means every declared region.",
    )


class Commitment(_Model):
    """Committed (reserved) GPUs already bought: a sunk cost."""

    gpu_class: str = _name("A declared GPU class.")
    region: str = _name("A declared region.")
    gpus: StrictInt = Field(ge=1, le=100000, description="Committed GPUs.")


class Latency(_Model):
    """Round-trip latency between two regions, in both directions unless the reverse is given."""

    model_config = ConfigDict(populate_by_name=True)

    from_region: str = Field(alias="from", min_length=1, max_length=LABEL_VALUE_MAX, description="A declared region.")
    to_region: str = Field(alias="to", min_length=1, max_length=LABEL_VALUE_MAX, description="A declared region.")
    milliseconds: StrictInt = Field(ge=0, le=10000, description="Round-trip latency, ms.")


class Routing(_Model):
    """Follow-the-sun routing: which regions may serve which users' demand."""

    max_latency_ms: StrictInt = Field(
        0, ge=0, le=10000, description="Demand may be served from a region within this latency; 0: local only."
    )
    latencies: list[Latency] = Field(
        default_factory=list, max_length=rules.MAX_LATENCIES, description="Latency between regions."
    )


class Policy(_Model):
    """Service and risk policy the planner must keep."""

    headroom: StrictFloat = Field(
        0.2, ge=0, le=10, description="Spare capacity above demand, as a fraction; with serviceTarget, the floor."
    )
    service_target: StrictFloat | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "Share of demand to serve (e.g. 0.999): capacity is sized to the quantile of the forecast's "
            "recent errors that meets it, never below headroom. Absent: headroom alone."
        ),
    )
    max_spot_fraction: StrictFloat = Field(0.5, ge=0, le=1, description="Largest share of a region's GPUs on spot.")
    spot_loss_served_fraction: StrictFloat = Field(
        0.5, ge=0, le=1, description="Share of demand non-spot capacity must serve if all spot is lost."
    )
    min_replicas_per_region: StrictInt = Field(1, ge=0, le=10000, description="Replicas every region keeps.")
    routing: Routing = Field(default_factory=Routing, description="Serving one region from another.")
    budget_dollars_per_hour: StrictFloat | None = Field(
        None, ge=0, le=1e7, description="Cap on the hourly cost, committed (amortised) included."
    )
    max_node_changes_per_hour: StrictInt | None = Field(
        None, ge=0, le=100000, description="Cap on nodes added plus removed from one hour to the next."
    )
    change_penalty_dollars_per_node: StrictFloat = Field(
        0, ge=0, le=1e5, description="Cost charged for each node added or removed, to damp churn."
    )


class Planning(_Model):
    """How the planner runs."""

    horizon_hours: StrictInt = Field(24, ge=1, le=168, description="Hours planned ahead.")
    mode: PlanningMode = Field(PlanningMode.OPERATE, description="Operate, or SizeCommitments.")
    solver: SolverName = Field(SolverName.HIGHS, description="MILP solver.")
    time_limit_seconds: StrictFloat = Field(10, gt=0, le=300, description="Solver time limit.")
    relative_gap: StrictFloat = Field(0.01, ge=0, le=1, description="Relative MIP gap at which to stop.")


class ActuationMode(enum.StrEnum):
    """Whether the operator acts on its decisions or only reports them."""

    ADVISORY = "Advisory"
    ENFORCE = "Enforce"


class NodeProviderName(enum.StrEnum):
    """Who is asked for nodes. ``none``: pending pods are left to the cluster's own autoscaler."""

    NONE = "none"
    KWOK = "kwok"
    KARPENTER = "karpenter"
    CLUSTER_API = "clusterapi"


class Disruption(_Model):
    """How much the operator may disrupt at once: replicas per slice, and nodes drained."""

    max_unavailable: StrictInt = Field(
        1, ge=0, le=10000, description="maxUnavailable of each slice's PodDisruptionBudget (replicas)."
    )
    max_nodes_at_once: StrictInt = Field(1, ge=0, le=1000, description="Nodes being drained at the same time, at most.")
    max_nodes_per_hour: StrictInt = Field(10, ge=0, le=10000, description="Nodes drained in any hour, at most.")


class Actuation(_Model):
    """How the operator acts on the plan."""

    mode: ActuationMode | None = Field(
        None, description="Advisory (status only) or Enforce; absent: the operator's default (the chart sets it)."
    )
    node_provider: NodeProviderName | None = Field(
        None,
        description="Who provisions nodes: none (the cluster's autoscaler), kwok, karpenter or clusterapi.",
    )
    scale_down_stabilization_seconds: StrictInt = Field(
        300, ge=0, le=86400, description="Live demand must stay lower this long before replicas are removed."
    )
    disruption: Disruption = Field(default_factory=Disruption, description="Disruption budget of the pool.")


class InferencePoolSpec(_Model):
    """What a user asks for: a model server, regions, GPU classes, commitments and policy."""

    model_config = ConfigDict(json_schema_extra=rules.schema_extra(rules.SPEC))

    model_server: ModelServer = Field(description="The model server and its throughput.")
    regions: list[Region] = Field(
        min_length=1, max_length=rules.MAX_REGIONS, description="Regions served.", json_schema_extra=_LIST_MAP
    )
    gpu_classes: list[GpuClass] = Field(
        min_length=1,
        max_length=rules.MAX_GPU_CLASSES,
        description="GPU node classes the pool may use.",
        json_schema_extra=_LIST_MAP,
    )
    commitments: list[Commitment] = Field(
        default_factory=list, max_length=rules.MAX_COMMITMENTS, description="Commitments already bought."
    )
    policy: Policy = Field(default_factory=Policy, description="Service and risk policy.")
    planning: Planning = Field(default_factory=Planning, description="Planner settings.")
    actuation: Actuation = Field(default_factory=Actuation, description="How the plan is acted on.")

    def region(self, name: str) -> Region:
        """The declared region called ``name``."""
        return next(r for r in self.regions if r.name == name)

    def gpu_class(self, name: str) -> GpuClass:
        """The declared GPU class called ``name``."""
        return next(g for g in self.gpu_classes if g.name == name)

    def prices(self, gpu_class: GpuClass, region: str) -> Prices:
        """Prices of ``gpu_class`` in ``region``: the region's entry over the class's, field by field."""
        override = next((p for p in gpu_class.region_prices if p.region == region), None)
        return override.over(gpu_class.prices) if override is not None else gpu_class.prices

    def offers(self, gpu_class: GpuClass, region: str) -> bool:
        """Whether ``gpu_class`` can run in ``region``."""
        return not gpu_class.regions or region in gpu_class.regions


class ObjectMeta(BaseModel):
    """The metadata fields sunblend reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = "pool"
    namespace: str = "default"
    generation: int | None = None


class InferencePool(BaseModel):
    """A whole InferencePool object, as applied with kubectl."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InferencePoolSpec
