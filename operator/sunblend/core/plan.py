"""The planner's result: the ``Plan`` value and its parts, shared by the CLI, operator and simulator.

Plain frozen dataclasses; summaries (cost per hour, savings, spot share) are derived here so that
every reader computes them the same way.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from sunblend.api.spec import CapacityType

SECONDS_PER_HOUR = 3600.0


class SolveStatus(enum.StrEnum):
    """Our own solve status, independent of the solver's vocabulary."""

    OPTIMAL = "Optimal"
    FEASIBLE = "Feasible"  # a solution that keeps every constraint, stopped by the time limit
    DEGRADED = "Degraded"  # a fallback plan that serves the demand but breaks a constraint it names
    INFEASIBLE = "Infeasible"
    ERROR = "Error"


@dataclass(frozen=True)
class Allocation:
    """Nodes of one GPU class and capacity type in one region for one hour."""

    hour: int
    region: str
    gpu_class: str
    capacity_type: CapacityType
    nodes: int
    gpus: int
    replicas: int
    dollars_per_hour: float


@dataclass(frozen=True)
class Flow:
    """Demand of users in ``from_region`` served in ``to_region`` during one hour."""

    hour: int
    from_region: str
    to_region: str
    tokens_per_second: float


@dataclass(frozen=True)
class HourCost:
    """What one hour costs, split by capacity type, against serving it all on-demand."""

    hour: int
    start: dt.datetime
    demand_tokens_per_second: float
    committed_dollars: float
    spot_dollars: float
    on_demand_dollars: float
    all_on_demand_dollars: float

    @property
    def dollars(self) -> float:
        """Total cost of the hour, committed (amortised) included."""
        return self.committed_dollars + self.spot_dollars + self.on_demand_dollars


@dataclass(frozen=True)
class Marginal:
    """What one more unit of something is worth this hour (LP relaxation dual)."""

    subject: str
    dollars_per_hour: float
    unit: str


@dataclass(frozen=True)
class CommitmentAdvice:
    """Commitment sizing: committed GPUs to hold for one GPU class in one region."""

    gpu_class: str
    region: str
    held_gpus: int
    recommended_gpus: int


@dataclass(frozen=True)
class Plan:
    """A plan over the horizon, or the reason there is none."""

    status: SolveStatus
    solver: str
    message: str
    hours: tuple[dt.datetime, ...]
    allocations: tuple[Allocation, ...] = ()
    flows: tuple[Flow, ...] = ()
    hour_costs: tuple[HourCost, ...] = ()
    binding: tuple[str, ...] = ()
    marginals: tuple[Marginal, ...] = ()
    commitment_advice: tuple[CommitmentAdvice, ...] = ()
    savings_from_sizing_dollars: float | None = None
    mip_gap: float | None = None  # proven: (cost - lower bound) / cost over the horizon, when a bound is known
    lower_bound_dollars: float | None = None  # proven lower bound on the horizon's objective
    build_seconds: float = 0.0
    solve_seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def has_solution(self) -> bool:
        """Whether the plan carries capacity (Optimal, Feasible or Degraded)."""
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.DEGRADED)

    @property
    def keeps_every_constraint(self) -> bool:
        """Whether the plan keeps every hard constraint of the pool (Optimal or Feasible)."""
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)

    def allocations_at(self, hour: int) -> tuple[Allocation, ...]:
        """Allocations of one hour."""
        return tuple(a for a in self.allocations if a.hour == hour)

    def gpus_by_capacity_type(self, hour: int) -> dict[CapacityType, int]:
        """GPUs per capacity type in one hour."""
        totals = dict.fromkeys(CapacityType, 0)
        for a in self.allocations_at(hour):
            totals[a.capacity_type] += a.gpus
        return totals

    @property
    def cost_dollars_per_hour(self) -> float:
        """Cost of the current (first) hour."""
        return self.hour_costs[0].dollars if self.hour_costs else 0.0

    @property
    def all_on_demand_dollars_per_hour(self) -> float:
        """Cost of the current hour served all on-demand."""
        return self.hour_costs[0].all_on_demand_dollars if self.hour_costs else 0.0

    @property
    def total_dollars(self) -> float:
        """Cost over the horizon."""
        return sum(h.dollars for h in self.hour_costs)

    @property
    def total_all_on_demand_dollars(self) -> float:
        """Cost over the horizon, served all on-demand."""
        return sum(h.all_on_demand_dollars for h in self.hour_costs)

    @property
    def savings_ratio_this_hour(self) -> float:
        """Savings this hour versus serving the same demand all on-demand, 0-1."""
        baseline = self.all_on_demand_dollars_per_hour
        return 0.0 if baseline <= 0 else 1.0 - self.cost_dollars_per_hour / baseline

    def summary(self) -> str:
        """This hour's and the horizon's cost against all on-demand, each labelled, in one line."""
        text = (
            f"this hour ${self.cost_dollars_per_hour:,.2f}, {self.savings_ratio_this_hour:.1%} below all "
            f"on-demand (${self.all_on_demand_dollars_per_hour:,.2f}); over the {len(self.hours)} h horizon "
            f"${self.total_dollars:,.2f}, {self.savings_ratio:.1%} below all on-demand "
            f"(${self.total_all_on_demand_dollars:,.2f})"
        )
        if self.status is not SolveStatus.OPTIMAL and self.mip_gap is not None:
            text += f"; proven within {self.mip_gap:.2%} of the cheapest plan"
        return text

    @property
    def savings_ratio(self) -> float:
        """Savings over the horizon versus all on-demand, 0-1."""
        baseline = self.total_all_on_demand_dollars
        return 0.0 if baseline <= 0 else 1.0 - self.total_dollars / baseline

    @property
    def spot_ratio(self) -> float:
        """Share of the current hour's GPUs on spot, 0-1."""
        gpus = self.gpus_by_capacity_type(0)
        total = sum(gpus.values())
        return 0.0 if total == 0 else gpus[CapacityType.SPOT] / total

    @property
    def dollars_per_million_tokens(self) -> float | None:
        """Cost over the horizon per million tokens of forecast demand."""
        tokens = sum(h.demand_tokens_per_second * SECONDS_PER_HOUR for h in self.hour_costs)
        return None if tokens <= 0 else self.total_dollars / tokens * 1e6
