"""The pool's ``status.commitmentAdvice``: what to commit to now, beyond what is held, and what it saves.

The operator's commitment adviser (``handlers.commitments``) reads a pool's demand history from
Prometheus and calls ``advise_pool``. It gives the advice ``sunblend advise commitments`` gives for
the same samples under the pool's own committed prices (the term ``pool``), and sets it beside the
commitments the pool holds (``spec.commitments``): the GPUs to buy per GPU class and region, the
saving per month against holding none (the advice's own figure) and against holding only what is
held (both costed exactly over the history's hours), and the cost if demand falls. ``changed``
says whether new advice differs from the last in what it advises (the adviser posts an event
then); ``message`` words it for that event.

Pure: the clock for the time limit, ``now`` and the history's end are passed in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sunblend.api import spec, status
from sunblend.core import commitments, coupled, hourly, problem
from sunblend.core.deadline import Deadline
from sunblend.core.model import CHANGES
from sunblend.core.plan import SolveStatus

Key = tuple[str, str]  # (gpu_class, region)


@dataclass(frozen=True)
class Window:
    """The stretch of history read: ``span`` up to ``end``, sampled every ``step``."""

    end: dt.datetime
    span: dt.timedelta
    step: dt.timedelta

    @property
    def start(self) -> dt.datetime:
        """Where the history read begins."""
        return self.end - self.span


def span_text(span: dt.timedelta) -> str:
    """A duration as ``sunblend advise commitments --history`` takes it: 14d, 36h, 90m or 45s."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def held_gpus(pool_spec: spec.InferencePoolSpec) -> dict[Key, int]:
    """Committed GPUs the pool holds now, per (GPU class, region)."""
    held: dict[Key, int] = {}
    for c in pool_spec.commitments:
        held[(c.gpu_class, c.region)] = held.get((c.gpu_class, c.region), 0) + c.gpus
    return held


def dollars_holding(
    pool_spec: spec.InferencePoolSpec,
    gpus: Mapping[Key, int],
    history: commitments.History,
    clock: Callable[[], float],
    seconds: float = commitments.REPORT_SECONDS,
) -> float:
    """Total cost over the history holding ``gpus`` committed at the pool's committed prices.

    Every hour is planned on its own (as ``core.commitments`` costs commitments): the change
    cap, the change penalty and the budget are left out, and the commitments' amortised cost is
    included whether or not their nodes run.
    """
    held = [
        spec.Commitment(gpu_class=gpu_class, region=region, gpus=n) for (gpu_class, region), n in gpus.items() if n > 0
    ]
    planning = pool_spec.planning.model_copy(update={"mode": spec.PlanningMode.OPERATE})
    holding = pool_spec.model_copy(update={"commitments": held, "planning": planning})
    try:
        made = problem.from_spec(holding, history.start, demand=history.demand)
    except ValueError as error:  # a commitment with no committed price
        raise commitments.AdviceError(str(error)) from error
    operate = dataclasses.replace(
        made,
        hours=tuple(history.start + k * commitments.HOUR for k in range(history.hours)),
        budget_dollars_per_hour=None,
        max_node_changes_per_hour=None,
        change_penalty_dollars_per_node=0.0,
        current_nodes={},
        solver=dataclasses.replace(made.solver, relative_gap=min(made.solver.relative_gap, commitments.COSTING_GAP)),
    )
    results = hourly.solve_hours(operate, Deadline(clock, seconds), (CHANGES,))
    solved = coupled.status_of(results.values())
    if solved is SolveStatus.INFEASIBLE:
        failed = next(r for r in results.values() if r.status is SolveStatus.INFEASIBLE)
        raise commitments.AdviceError(f"the pool cannot serve the history: {failed.message}")
    if solved is SolveStatus.ERROR:
        raise commitments.AdviceError(f"costing {operate.horizon} hours took over {seconds:g} s")
    nodes = {key: n for r in results.values() for key, n in r.nodes.items()}
    return coupled.objective(operate, nodes, {})


def _money(value: float) -> float:
    return round(value, 2)


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def advise_pool(
    pool_spec: spec.InferencePoolSpec,
    samples: Mapping[str, commitments.Samples],
    window: Window,
    clock: Callable[[], float],
    time_limit_seconds: float,
    now: dt.datetime,
    generation: int | None,
    fall: float = commitments.DEMAND_FALL,
) -> status.CommitmentAdvice:
    """The pool's commitment advice from Prometheus ``samples`` (each the mean over ``window.step``).

    Raises ``commitments.AdviceError`` when the pool gives no committed price or cannot serve
    the history.
    """
    term = commitments.pool_term(pool_spec)
    if term is None:
        raise commitments.AdviceError("the pool gives no committed price: there is no commitment term to advise on")
    history = commitments.hourly_peaks(samples, window.step)
    sizing = commitments.sizing_problem(pool_spec, history)
    advice = commitments.advise(sizing, history, [term], clock, time_limit_seconds, fall)
    (advised,) = advice.terms
    held = held_gpus(pool_spec)
    advised_gpus = {(c.gpu_class, c.region): c.gpus for c in advised.commitments}
    rows = []
    for key in sorted(advised_gpus.keys() | held.keys()):
        found = next((c for c in advised.commitments if (c.gpu_class, c.region) == key), None)
        rows.append(
            status.CommitmentToBuy(
                gpu_class=key[0],
                region=key[1],
                advised_gpus=advised_gpus.get(key, 0),
                held_gpus=held.get(key, 0),
                buy_gpus=max(advised_gpus.get(key, 0) - held.get(key, 0), 0),
                break_even_ratio=None if found is None else _ratio(found.break_even_ratio),
                utilization_ratio=None if found is None else _ratio(found.utilisation_ratio),
            )
        )
    over_held = 0.0
    if any(row.buy_gpus for row in rows):
        after = {key: max(advised_gpus.get(key, 0), held.get(key, 0)) for key in advised_gpus.keys() | held.keys()}
        over_held = dollars_holding(pool_spec, held, history, clock) - dollars_holding(pool_spec, after, history, clock)
    return status.CommitmentAdvice(
        term=advised.term,
        commitments=rows,
        saving_dollars_per_month=_money(advised.per_month(advised.saving_dollars, advice.hours)),
        saving_over_held_dollars_per_month=_money(advised.per_month(over_held, advice.hours)),
        demand_fall_ratio=fall,
        demand_fall_extra_dollars_per_month=_money(advised.per_month(advised.fall_extra_dollars, advice.hours)),
        history_start=_stamp(advice.start),
        history_end=_stamp(window.end),
        history_window=span_text(window.span),
        history_hours=advice.hours,
        computed_at=_stamp(now),
        observed_generation=generation,
    )


def failed(reason: str, window: Window, now: dt.datetime, generation: int | None) -> status.CommitmentAdvice:
    """The status when no advice could be made: why, and over which history."""
    return status.CommitmentAdvice(
        term=commitments.POOL_TERM,
        history_end=_stamp(window.end),
        history_window=span_text(window.span),
        computed_at=_stamp(now),
        observed_generation=generation,
        error=reason,
    )


def _advised(document: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What a status document advises, leaving out the money and the times; None if it advises nothing."""
    if not document or document.get("error"):
        return None
    rows = document.get("commitments") or []
    return (
        document.get("term"),
        tuple(
            (r.get("gpuClass"), r.get("region"), r.get("advisedGpus"), r.get("heldGpus"), r.get("buyGpus"))
            for r in rows
        ),
    )


def changed(previous: Mapping[str, Any] | None, advice: status.CommitmentAdvice) -> bool:
    """Whether ``advice`` advises otherwise than ``previous`` (a status document, None when absent)."""
    return _advised(previous) != _advised(advice.model_dump(by_alias=True))


def message(advice: status.CommitmentAdvice) -> str:
    """The advice in one line, for the ``CommitmentAdvised`` event."""
    buy = [r for r in advice.commitments if r.buy_gpus]
    if buy:
        what = "commit now to " + ", ".join(f"{r.buy_gpus} {r.gpu_class} GPUs in {r.region}" for r in buy)
        what += (
            f" (term {advice.term}); saves ${advice.saving_over_held_dollars_per_month:,.2f}/month over what is held"
        )
    else:
        what = f"commit to nothing more (term {advice.term}): what is held covers the advice"
    fall = advice.demand_fall_extra_dollars_per_month or 0.0
    risk = f"costs ${fall:,.2f}/month more" if fall > 0 else f"still saves ${-fall:,.2f}/month"
    return (
        f"{what}; the advice saves ${advice.saving_dollars_per_month:,.2f}/month against holding none, and "
        f"{risk} if demand falls {advice.demand_fall_ratio or 0:.0%}; from {advice.history_hours} h of history"
    )
