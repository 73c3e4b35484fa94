"""kopf handlers for InferencePool: create, update, resume, delete, and the hourly re-plan timer.

Thin: each handler reads the clock, calls ``handlers.reconcile``, and applies what it returns
(status patch, events, metrics). Handlers are synchronous; kopf runs them in its thread pool.
No handler is a deletion blocker, so no finalizer is ever added.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import kopf

from sunblend.api import constants
from sunblend.handlers import metrics, reconcile

RESOURCE = (constants.GROUP, constants.VERSION, constants.PLURAL)
TIMER_SECONDS = 60.0


def _apply(outcome: reconcile.Outcome, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    patch.setdefault("status", {}).update(outcome.status)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    metrics.record(body.metadata.namespace or "", body.metadata.name or "", outcome.plan)
    memo.setdefault("fingerprints", {})[body.metadata.uid] = outcome.nodes_fingerprint


def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    started = time.perf_counter()
    outcome = reconcile.reconcile(body, dt.datetime.now(dt.UTC), memo.get("nodes"), memo.get("rules", ()))
    _apply(outcome, body, patch, memo)
    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def plan_pool(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Re-plan when a pool appears, changes, or the operator restarts."""
    _run(body, patch, memo)


def _stale(body: kopf.Body, memo: kopf.Memo, now: dt.datetime) -> bool:
    status = body.get("status") or {}
    hour = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:00:00Z")
    if status.get("observedGeneration") != body.metadata.get("generation"):
        return False  # the change handler has it
    if status.get("plannedHour") not in (None, hour) or "conditions" not in status:
        return True
    reader = memo.get("nodes")
    if reader is None:
        return False
    pool_fingerprint = memo.get("fingerprints", {}).get(body.metadata.uid)
    outcome_now = reconcile.fingerprint_of(body, reader, memo.get("rules", ()))
    return pool_fingerprint is not None and outcome_now != pool_fingerprint


@kopf.timer(*RESOURCE, interval=TIMER_SECONDS, initial_delay=TIMER_SECONDS)
def replan_on_the_hour(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Re-plan at each hour boundary, and when the pool's GPU nodes change."""
    if _stale(body, memo, dt.datetime.now(dt.UTC)):
        _run(body, patch, memo)


@kopf.on.delete(*RESOURCE, optional=True)
def forget_pool(body: kopf.Body, **_: Any) -> None:
    """Drop a deleted pool's metrics (optional: no finalizer is added for this)."""
    metrics.forget(body.metadata.namespace or "", body.metadata.name or "")
