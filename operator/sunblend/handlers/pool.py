"""kopf handlers for InferencePool, and the fast loop that steps every pool.

Thin: each handler reads the clock, calls ``loop.reconcile`` (observe, decide, act) and applies
what it returns (status patch, events, metrics). Handlers are synchronous; kopf runs them in
its thread pool. No handler blocks deletion and there are no per-object timers or daemons, so
kopf never adds a finalizer. Instead one loop per operator (``Replanner``) steps every pool
every ``LOOP_SECONDS`` from the latest bodies kopf has seen: the decision engine plans at each
hour (and 8 minutes ahead of it) and scales between plans. A pool a handler stepped within the
last half interval waits for the next pass, so a burst of new pools is read once, not twice.

Only the replica holding the leader Lease runs kopf at all (``startup``, ``leader``); both paths
also check ``memo["leading"]`` before they step a pool, so a leader whose Lease has lapsed writes
nothing in the moment before it exits.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from concurrent import futures
from typing import Any

import kopf

from sunblend.actuate import status as status_writer
from sunblend.api import constants
from sunblend.handlers import background, memory, metrics
from sunblend.loop import merge, reconcile

RESOURCE = (constants.GROUP, constants.VERSION, constants.PLURAL)
LOOP_SECONDS = 30.0
LOOP_CONCURRENCY = 4  # pools the fast loop steps at once

logger = logging.getLogger(__name__)


def _record(body: kopf.Body | dict[str, Any], outcome: reconcile.Outcome, seconds: float) -> None:
    meta = body["metadata"]
    if outcome.plan is not None or "conditions" not in outcome.status or "plannedHour" in outcome.status:
        metrics.record(meta.get("namespace", ""), meta.get("name", ""), outcome.plan)
    metrics.count([c.kind.value for c in outcome.commands], [e.reason for e in outcome.events])
    metrics.RECONCILE_SECONDS.observe(seconds)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def plan_pool(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str = "", **_: Any) -> None:
    """Step a pool when it appears or changes (plan again), or when the operator restarts (continue)."""
    if not background.leading(
        memo
    ):  # the leader Lease lapsed: this replica is about to exit; the new leader handles it
        raise kopf.TemporaryError("this replica no longer holds the leader Lease", delay=LOOP_SECONDS)
    started = time.perf_counter()
    services: reconcile.Services = memo["services"]
    changed = None if reason == "resume" else True
    outcome = reconcile.reconcile(dict(body), background.now(memo), services, spec_changed=changed)
    patch.setdefault("status", {}).update(outcome.status)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    _record(body, outcome, time.perf_counter() - started)


@kopf.on.event(*RESOURCE)
def remember_pool(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the latest body of every pool for the fast loop; forget deleted pools."""
    pools: dict[tuple[str, str], str] = memo["pools"]
    key = (body.metadata.namespace or "", body.metadata.name or "")
    if event.get("type") == "DELETED":
        pools.pop(key, None)
        metrics.forget(*key)
        services: reconcile.Services | None = memo.get("services")
        if services is not None and body.metadata.uid:
            services.forget(body.metadata.uid)
    else:
        pools[key] = essentials(body)


# What a step reads of a pool's body: the status the operator owns, less the hour-by-hour summary
# and kopf's own bookkeeping, to keep the operator's memory flat as pools grow.
_STATUS_SKIPPED = ("nextHours", "kopf")


def essentials(body: Mapping[str, Any]) -> str:
    """What the fast loop reads of a pool, as compact JSON: no references into kopf's bodies."""
    status = body.get("status") or {}
    metadata = body.get("metadata") or {}
    kept = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid", "generation")},
        "spec": body.get("spec"),
        "status": {k: v for k, v in status.items() if k not in _STATUS_SKIPPED},
    }
    return json.dumps(kept, separators=(",", ":"), default=dict)


def unchanged(before: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether merging ``patch`` into ``before`` would change nothing but the time of the decision."""

    def comparable(status: Mapping[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in status.items() if k not in _STATUS_SKIPPED}
        actuation = kept.get("actuation")
        if isinstance(actuation, Mapping):
            kept["actuation"] = {k: v for k, v in actuation.items() if k != "decidedAt"}
        return kept

    stored = merge.apply({}, before)  # as the server keeps it: no null values
    after = merge.apply(stored, {k: v for k, v in patch.items() if k not in _STATUS_SKIPPED})
    return comparable(after) == comparable(stored)


def handled(body: Mapping[str, Any]) -> bool:
    """Whether the change handlers have seen this generation (otherwise they step it, not the loop)."""
    status = body.get("status") or {}
    return "conditions" in status and status.get("observedGeneration") == body.get("metadata", {}).get("generation")


class Replanner(background.Pass):
    """One background thread stepping every handled pool, instead of one kopf timer per pool."""

    def __init__(
        self,
        memo: Mapping[str, Any],
        writer: status_writer.StatusWriter,
        interval: float = LOOP_SECONDS,
    ) -> None:
        super().__init__(memo, interval, "sunblend-fast-loop")
        self._writer = writer
        self._recent = dt.timedelta(seconds=interval / 2)

    def run_once(self, now: dt.datetime) -> int:
        """Step every handled pool, ``LOOP_CONCURRENCY`` at a time; return how many statuses were written.

        A step mostly waits on the API server, so one pool's wait is another's turn; each pool is
        stepped once a pass, under its own lock (``Services.lock``), as the handlers step it.
        """
        pools: dict[tuple[str, str], str] = self._memo["pools"]
        with futures.ThreadPoolExecutor(LOOP_CONCURRENCY, thread_name_prefix="sunblend-fast-loop-step") as steps:
            written = [steps.submit(self._step, key, text, now) for key, text in list(pools.items())]
        memory.give_back()  # what the pass (and the handlers since the last) freed goes back to the system
        return sum(step.result() for step in written)  # the first failure, after every step has run

    def _step(self, key: tuple[str, str], text: str, now: dt.datetime) -> int:
        """Step one pool from its latest body ``text``; 1 if its status was written."""
        if not background.leading(self._memo):
            return 0  # the leader Lease lapsed: write nothing more
        services: reconcile.Services = self._memo["services"]
        pools: dict[tuple[str, str], str] = self._memo["pools"]
        body = json.loads(text)
        if not handled(body):
            return 0
        # A pool a handler stepped within the last half interval (it was just created or changed) waits
        # for the next pass: in a burst of new pools the loop would only repeat the handlers' reads.
        if services.stepped_since(str(body["metadata"].get("uid") or ""), now - self._recent):
            return 0
        started = time.perf_counter()
        outcome = reconcile.reconcile(body, now, services, spec_changed=False)
        meta = body["metadata"]
        if not outcome.events and unchanged(body.get("status") or {}, outcome.status):
            _record(body, outcome, time.perf_counter() - started)
            return 0  # nothing to say: no write (writes must not grow with pools that hold still)
        try:
            if not self._writer.patch_status(meta["namespace"], meta["name"], outcome.status):
                return 0
        except status_writer.StatusRejected as error:
            logger.error("%s", error)
            return 0
        # Keep what was just written, so the next pass continues from it even before kopf's
        # watch delivers the new body.
        body["status"] = merge.apply(body.get("status") or {}, outcome.status)
        if pools.get(key) == text:
            pools[key] = essentials(body)
        for event in outcome.events:  # stamped with the wall clock, even when the decision clock is moved
            self._writer.post_event(body, event.type, event.reason, event.message, dt.datetime.now(dt.UTC))
        _record(body, outcome, time.perf_counter() - started)
        return 1
