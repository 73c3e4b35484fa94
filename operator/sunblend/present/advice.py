"""Commitment advice as a plain document (``-o json``/``yaml``) and as a rich table for people.

Keys are camelCase, as in the Kubernetes API; money is in dollars over the history unless the
key says per month. Called by the CLI (``sunblend advise commitments``) and the advice benchmark.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sunblend.core.commitments import Advice, TermAdvice


def _money(value: float) -> float:
    return round(value, 2)


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def term_document(advice: Advice, term: TermAdvice) -> dict[str, Any]:
    """One term's advice, machine-readable."""
    return {
        "term": term.term,
        "commitments": [
            {
                "gpuClass": c.gpu_class,
                "region": c.region,
                "gpus": c.gpus,
                "usdPerGpuHour": round(c.dollars_per_gpu_hour, 4),
                "onDemandUsdPerGpuHour": round(c.on_demand_dollars_per_gpu_hour, 4),
                "breakEvenUtilizationRatio": _ratio(c.break_even_ratio),
                "utilizationRatio": _ratio(c.utilisation_ratio),
                "savingDollars": _money(c.saving_dollars),
            }
            for c in term.commitments
        ],
        "committedGpus": sum(c.gpus for c in term.commitments),
        "costDollars": _money(term.dollars),
        "costWithNoneDollars": _money(term.none_dollars),
        "savingDollars": _money(term.saving_dollars),
        "savingRatio": _ratio(term.saving_ratio),
        "savingPerMonthDollars": _money(term.per_month(term.saving_dollars, advice.hours)),
        "demandFall": {
            "ratio": advice.fall,
            "costDollars": _money(term.fall_dollars),
            "costWithNoneDollars": _money(term.fall_none_dollars),
            "extraDollars": _money(term.fall_extra_dollars),
        },
        "lowerBoundDollars": None if term.lower_bound_dollars is None else _money(term.lower_bound_dollars),
        "gapRatio": _ratio(term.gap),
        "candidatesCosted": term.searched,
        "searchFinished": term.finished,
    }


def document(advice: Advice, pool: str = "") -> dict[str, Any]:
    """Every figure of the advice, machine-readable."""
    return {
        "pool": pool,
        "historyStart": advice.start.isoformat(),
        "historyHours": advice.hours,
        "regions": list(advice.regions),
        "hoursWithoutData": dict(advice.hours_without_data),
        "solveSeconds": round(advice.seconds, 3),
        "terms": [term_document(advice, t) for t in advice.terms],
    }


def render(advice: Advice, pool: str, console: Console) -> None:
    """Print the advice: one row per term, GPU class and region, then each term's totals."""
    head = Text()
    head.append(f"{pool}: ", style="bold")
    head.append(
        f"commitment advice from {advice.hours} h of history from {advice.start:%Y-%m-%d %H:%M} UTC "
        f"({len(advice.regions)} region(s), {advice.seconds:.1f} s)"
    )
    rows = Table(title="Commit to")
    for column in ("term", "GPU class", "region", "GPUs", "$/GPU-h", "break-even", "utilisation", "saves $"):
        rows.add_column(column, justify="left" if column in ("term", "GPU class", "region") else "right")
    totals = Table(title=f"Over the history, and if demand falls {advice.fall:.0%}")
    for column in ("term", "GPUs", "cost $", "with none $", "saves $", "saves", "per month $", "fall: extra $", "gap"):
        totals.add_column(column, justify="left" if column == "term" else "right")
    for term in advice.terms:
        if not term.commitments:
            rows.add_row(term.term, "-", "-", "0", "", "", "", "nothing pays")
        for c in term.commitments:
            rows.add_row(
                term.term,
                c.gpu_class,
                c.region,
                str(c.gpus),
                f"{c.dollars_per_gpu_hour:.3f}",
                f"{c.break_even_ratio:.1%}",
                "" if c.utilisation_ratio is None else f"{c.utilisation_ratio:.1%}",
                f"{c.saving_dollars:,.0f}",
            )
        totals.add_row(
            term.term,
            str(sum(c.gpus for c in term.commitments)),
            f"{term.dollars:,.0f}",
            f"{term.none_dollars:,.0f}",
            f"{term.saving_dollars:,.0f}",
            f"{term.saving_ratio:.1%}",
            f"{term.per_month(term.saving_dollars, advice.hours):,.0f}",
            f"{term.fall_extra_dollars:+,.0f}",
            "" if term.gap is None else f"{term.gap:.1%}",
        )
    notes = [
        Text(f"note: {region} has {count} hour(s) without data, taken as no demand", style="yellow")
        for region, count in advice.hours_without_data.items()
        if count
    ]
    notes += [
        Text(f"note: term {t.term}: the search stopped at its time limit; give more --time-limit", style="yellow")
        for t in advice.terms
        if not t.finished
    ]
    legend = Text(
        "break-even: share of hours a committed GPU must run to beat on-demand; utilisation: share it ran in "
        "the history's plan; fall: extra cost of holding the advice vs. the best plan holding none, at the "
        "lower demand (negative: it still saves)",
        style="dim",
    )
    console.print(Group(head, rows, totals, *notes, legend))
