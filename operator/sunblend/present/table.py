"""A ``Plan`` as rich tables for the terminal: the current hour, routes, and the day ahead.

On a terminal the tables fit its width. Piped to a file or a script, they are as wide as their
content, so no figure is ever cut short to "139…".
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sunblend.api.spec import CapacityType
from sunblend.core import forecast
from sunblend.core.plan import Plan, SolveStatus

PIPED_WIDTH = 10_000
"""Columns a console that writes to a file or a pipe may use: more than any table needs."""

_STATUS_STYLE = {
    SolveStatus.OPTIMAL: "bold green",
    SolveStatus.FEASIBLE: "bold yellow",
    SolveStatus.DEGRADED: "bold red",
    SolveStatus.INFEASIBLE: "bold red",
    SolveStatus.ERROR: "bold red",
}


def _headline(plan: Plan, pool: str) -> Text:
    text = Text()
    text.append(f"{pool}: ", style="bold")
    text.append(plan.status.value, style=_STATUS_STYLE[plan.status])
    text.append(f" ({plan.solver}")
    if plan.mip_gap is not None:
        text.append(f", gap {plan.mip_gap:.2%}")
    text.append(f", {plan.solve_seconds * 1000:.0f} ms)")
    if plan.message:
        text.append(f"\n{plan.message}")
    for note in plan.notes:
        text.append(f"\nnote: {note}", style="yellow")
    return text


def _current(plan: Plan, time_zones: dict[str, str]) -> Table:
    start = plan.hours[0]
    zones = ", ".join(forecast.local_label(start, z) for z in dict.fromkeys(time_zones.values()))
    table = Table(title=f"This hour: {start:%Y-%m-%d %H:%M} UTC ({zones})")
    for column in ("region", "GPU class", "capacity", "nodes", "GPUs", "replicas", "$/h"):
        table.add_column(column, justify="right" if column in ("nodes", "GPUs", "replicas", "$/h") else "left")
    for a in plan.allocations_at(0):
        table.add_row(
            a.region,
            a.gpu_class,
            a.capacity_type.value,
            str(a.nodes),
            str(a.gpus),
            str(a.replicas),
            f"{a.dollars_per_hour:.2f}",
        )
    return table


def _summary(plan: Plan) -> Table:
    table = Table(title="Cost", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    hours = len(plan.hours)
    table.add_row("this hour: cost (committed amortised included)", f"${plan.cost_dollars_per_hour:,.2f}")
    table.add_row("this hour: same demand, all on-demand", f"${plan.all_on_demand_dollars_per_hour:,.2f}")
    table.add_row("this hour: savings vs all on-demand", f"{plan.savings_ratio_this_hour:.1%}")
    table.add_row(f"horizon ({hours} h): cost", f"${plan.total_dollars:,.2f}")
    table.add_row(f"horizon ({hours} h): all on-demand", f"${plan.total_all_on_demand_dollars:,.2f}")
    table.add_row(f"horizon ({hours} h): savings vs all on-demand", f"{plan.savings_ratio:.1%}")
    table.add_row("spot share this hour", f"{plan.spot_ratio:.1%}")
    per_million = plan.dollars_per_million_tokens
    table.add_row("cost per million tokens", "-" if per_million is None else f"${per_million:.4f}")
    return table


def _day(plan: Plan) -> Table:
    table = Table(title="Hours ahead (UTC)")
    for column in ("hour", "demand tok/s", "committed", "spot", "on-demand", "$/h", "all-OD $/h"):
        table.add_column(column, justify="right")
    for h in plan.hour_costs:
        gpus = plan.gpus_by_capacity_type(h.hour)
        table.add_row(
            f"{h.start:%a %H:%M}",
            f"{h.demand_tokens_per_second:,.0f}",
            str(gpus[CapacityType.COMMITTED]),
            str(gpus[CapacityType.SPOT]),
            str(gpus[CapacityType.ON_DEMAND]),
            f"{h.dollars:,.2f}",
            f"{h.all_on_demand_dollars:,.2f}",
        )
    return table


def _routes(plan: Plan) -> Table | None:
    remote = [f for f in plan.flows if f.hour == 0 and f.from_region != f.to_region]
    if not remote:
        return None
    table = Table(title="Follow-the-sun routes this hour")
    for column in ("users in", "served in", "tokens/s"):
        table.add_column(column)
    for f in remote:
        table.add_row(f.from_region, f.to_region, f"{f.tokens_per_second:,.0f}")
    return table


def _insight(plan: Plan) -> Table | None:
    if not plan.binding and not plan.marginals and not plan.commitment_advice:
        return None
    table = Table(title="Why this plan", show_header=False)
    table.add_column("what")
    table.add_column("detail")
    for row in plan.binding:
        table.add_row("binding", row)
    for m in plan.marginals:
        table.add_row("worth", f"{m.subject}: ${m.dollars_per_hour:,.2f}/h {m.unit}")
    for c in plan.commitment_advice:
        table.add_row("commit", f"{c.gpu_class} in {c.region}: hold {c.recommended_gpus} GPUs (now {c.held_gpus})")
    if plan.savings_from_sizing_dollars is not None:
        table.add_row("sizing saves", f"${plan.savings_from_sizing_dollars:,.2f} over the horizon")
    return table


def console(file: TextIO | None = None) -> Console:
    """A console for ``file`` (stdout by default): the terminal's width, or unbounded when not a terminal."""
    stream = file or sys.stdout
    terminal = Console(file=stream)
    if terminal.is_terminal:
        return terminal
    return Console(file=stream, width=PIPED_WIDTH)


def render(plan: Plan, pool: str, time_zones: dict[str, str], console: Console) -> None:
    """Print ``plan`` to ``console``."""
    parts: list[Text | Table] = [_headline(plan, pool)]
    if plan.has_solution:
        parts += [
            t for t in (_current(plan, time_zones), _routes(plan), _summary(plan), _insight(plan), _day(plan)) if t
        ]
    console.print(Group(*parts))


def render_simulation(documents: list[dict[str, object]], console: Console) -> None:
    """A comparison table of simulated runs, and of the hindsight bounds (rows of ``kind: bound``) below them."""
    result = Table(title="Simulation")
    columns = (
        ("policy", "policy"),
        ("cost $", "costDollars"),
        ("committed $", "committedDollars"),
        ("spot $", "spotDollars"),
        ("on-demand $", "onDemandDollars"),
        ("vs all-OD", "savingsVsAllOnDemandRatio"),
        ("vs hindsight", "vsHindsightHourlyRatio"),
        ("served", "servedRatio"),
        ("min below", "minutesBelowDemand"),
        ("GPU util", "gpuUtilizationRatio"),
        ("node changes", "nodeChanges"),
        ("preempted", "spotPreemptions"),
    )
    for title, _ in columns:
        result.add_column(title, justify="left" if title == "policy" else "right")
    notes = []
    policies = [d for d in documents if d.get("kind") != "bound"]
    bounds = [d for d in documents if d.get("kind") == "bound"]
    for doc in policies + bounds:
        label = str(doc["policy"])
        if doc in bounds:
            label += " (bound, LP relaxation)" if doc.get("lpRelaxation") else " (bound)"
        last_policy = bool(bounds) and doc is (policies[-1] if policies else None)
        if "skipped" in doc:
            result.add_row(label, "skipped", *[""] * (len(columns) - 2), end_section=last_policy)
            notes.append(Text(f"{doc['policy']}: skipped: {doc['skipped']}", style="yellow"))
            continue
        cells = [label]
        for _, key in columns[1:]:
            value = doc.get(key)
            if value is None:
                cells.append("-")
            elif key in ("savingsVsAllOnDemandRatio", "gpuUtilizationRatio"):
                cells.append(f"{float(value):.1%}")  # type: ignore[arg-type]
            elif key == "vsHindsightHourlyRatio":
                cells.append(f"{float(value):+.1%}")  # type: ignore[arg-type]
            elif key == "servedRatio":
                cells.append(f"{float(value):.4%}")  # type: ignore[arg-type]
            elif key.endswith("Dollars"):
                cells.append(f"{float(value):,.0f}")  # type: ignore[arg-type]
            else:
                cells.append(str(value))
        result.add_row(*cells, end_section=last_policy)
        if doc in bounds and "description" in doc:
            notes.append(Text(f"{doc['policy']} (a bound, not a policy): {doc['description']}"))
    if any("vsHindsightHourlyRatio" in d for d in documents):
        notes.append(Text("vs hindsight: cost / hindsight-hourly cost - 1"))
    console.print(Group(result, *notes))
