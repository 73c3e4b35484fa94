"""kopf handlers for InferencePool, and the hourly re-plan loop.

Thin: each handler reads the clock, calls ``handlers.reconcile``, and applies what it returns
(status patch, events, metrics). Handlers are synchronous; kopf runs them in its thread pool.
No handler blocks deletion and there are no per-object timers or daemons, so kopf never adds a
finalizer. Instead one loop per operator (``Replanner``) re-plans every pool at each hour
boundary and when its GPU nodes change, from the latest bodies kopf has seen.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from sunblend.actuate import status as status_writer
from sunblend.api import constants
from sunblend.handlers import metrics, reconcile

RESOURCE = (constants.GROUP, constants.VERSION, constants.PLURAL)
LOOP_SECONDS = 30.0

logger = logging.getLogger(__name__)


def _record(body: kopf.Body | dict[str, Any], outcome: reconcile.Outcome, memo: kopf.Memo, seconds: float) -> None:
    meta = body["metadata"]
    metrics.record(meta.get("namespace", ""), meta.get("name", ""), outcome.plan)
    metrics.RECONCILE_SECONDS.observe(seconds)
    memo.setdefault("fingerprints", {})[meta.get("uid")] = outcome.nodes_fingerprint


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def plan_pool(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Re-plan when a pool appears, changes, or the operator restarts."""
    started = time.perf_counter()
    outcome = reconcile.reconcile(
        body,
        dt.datetime.now(dt.UTC),
        memo.get("nodes"),
        memo.get("rules", ()),
        memo.get("workloads"),
        memo.get("metrics"),
    )
    patch.setdefault("status", {}).update(outcome.status)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    _record(body, outcome, memo, time.perf_counter() - started)


@kopf.on.event(*RESOURCE)
def remember_pool(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the latest body of every pool for the re-plan loop; forget deleted pools."""
    pools: dict[tuple[str, str], str] = memo.setdefault("pools", {})
    key = (body.metadata.namespace or "", body.metadata.name or "")
    if event.get("type") == "DELETED":
        pools.pop(key, None)
        metrics.forget(*key)
    else:
        pools[key] = essentials(body)


# What a re-plan reads of a pool's body; the rest (the hour-by-hour summary, kopf's own
# bookkeeping) is left out to keep the operator's memory flat as pools grow.
_STATUS_READ = ("observedGeneration", "conditions", "plannedHour", "current", "message", "observed")


def essentials(body: Mapping[str, Any]) -> str:
    """What the re-plan loop reads of a pool, as compact JSON: no references into kopf's bodies."""
    status = body.get("status") or {}
    metadata = body.get("metadata") or {}
    kept = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid", "generation")},
        "spec": body.get("spec"),
        "status": {k: status[k] for k in _STATUS_READ if k in status},
    }
    return json.dumps(kept, separators=(",", ":"), default=dict)


def stale(body: dict[str, Any], now: dt.datetime, nodes_changed: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether a handled pool needs a new plan: a new hour, or its nodes changed."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body.get("metadata", {}).get("generation"):
        return False  # the change handlers have it
    if "conditions" not in status:
        return False
    hour = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:00:00Z")
    if status.get("plannedHour") not in (None, hour):
        return True
    return nodes_changed(body)


class Replanner:
    """One background thread re-planning stale pools, instead of one kopf timer per pool."""

    def __init__(self, memo: kopf.Memo, writer: status_writer.StatusWriter, interval: float = LOOP_SECONDS) -> None:
        self._memo = memo
        self._writer = writer
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sunblend-replanner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _nodes_changed(self, body: dict[str, Any]) -> bool:
        reader = self._memo.get("nodes")
        known: str | None = self._memo.get("fingerprints", {}).get(body["metadata"].get("uid"))
        if reader is None or known is None:
            return False
        return reconcile.fingerprint_of(body, reader, self._memo.get("rules", ())) != known

    def run_once(self, now: dt.datetime) -> int:
        """Re-plan every stale pool; return how many were re-planned."""
        count = 0
        for text in list(self._memo.get("pools", {}).values()):
            body = json.loads(text)
            if not stale(body, now, self._nodes_changed):
                continue
            started = time.perf_counter()
            outcome = reconcile.reconcile(
                body,
                now,
                self._memo.get("nodes"),
                self._memo.get("rules", ()),
                self._memo.get("workloads"),
                self._memo.get("metrics"),
            )
            meta = body["metadata"]
            try:
                if not self._writer.patch_status(meta["namespace"], meta["name"], outcome.status):
                    continue
            except status_writer.StatusRejected as error:
                logger.error("%s", error)
                continue
            for event in outcome.events:
                self._writer.post_event(body, event.type, event.reason, event.message, now)
            _record(body, outcome, self._memo, time.perf_counter() - started)
            count += 1
        return count

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once(dt.datetime.now(dt.UTC))
            except Exception:  # the loop must survive one bad pass; the next pass retries
                logger.exception("re-plan pass failed")
