"""The operator's consolidation advice: an event on each pool that could share a pool with others.

One background thread per operator (``Adviser``, started by ``startup`` beside the fast loop)
looks every ``interval`` seconds at the latest pool bodies kopf has seen (``memo["pools"]``),
groups the pools that serve the same model in overlapping regions (``core.consolidation``), and
at most once per ``every`` (an hour) per group plans the group apart and merged. When merging
saves money it posts a ``ConsolidationAdvised`` event on each member, naming the others and the
saving per hour. Thin: the grouping, the merge and the comparison are in core.

Only the leader acts: kopf, and so this thread, runs only on the replica holding the leader Lease
(``startup``), and each pass checks ``memo["leading"]`` before it posts, as the fast loop does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from sunblend.api import load
from sunblend.core import consolidation
from sunblend.handlers import background

EVERY = dt.timedelta(hours=1)
INTERVAL_SECONDS = 60.0

logger = logging.getLogger(__name__)

GroupKey = tuple[str, tuple[str, ...]]  # (model, pools as namespace/name)


class EventPoster(Protocol):
    """Posts a core/v1 Event about a pool (``actuate.status.StatusWriter``; a recorder in tests)."""

    def post_event(
        self, pool: Mapping[str, Any], event_type: str, reason: str, message: str, now: dt.datetime
    ) -> None: ...


def entries(pools: Mapping[tuple[str, str], str]) -> tuple[list[consolidation.PoolEntry], dict[str, dict[str, Any]]]:
    """The pools kopf has seen, as advice entries, and their bodies by namespace/name; invalid specs skipped."""
    found = []
    bodies = {}
    for (namespace, name), text in pools.items():
        body = json.loads(text)
        try:
            pool_spec = load.parse_spec(body.get("spec"))
        except load.InvalidPool:
            continue  # the pool's own handler reports its errors
        entry = consolidation.PoolEntry(namespace, name, pool_spec)
        found.append(entry)
        bodies[entry.key] = body
    return found, bodies


class Adviser(background.Pass):
    """One background thread advising on consolidation, at most once per ``every`` per group."""

    def __init__(
        self,
        memo: Mapping[str, Any],
        poster: EventPoster,
        interval: float = INTERVAL_SECONDS,
        every: dt.timedelta = EVERY,
    ) -> None:
        super().__init__(memo, interval, "sunblend-consolidation")
        self._poster = poster
        self._every = every
        self._advised: dict[GroupKey, dt.datetime] = {}  # when each group was last looked at

    def run_once(self, now: dt.datetime) -> list[consolidation.GroupAdvice]:
        """Advise every group that is due at ``now``; return the advice posted as events."""
        found, bodies = entries(self._memo.get("pools", {}))
        groups = consolidation.groups(found)
        keys = {(model, tuple(p.key for p in members)) for model, members in groups}
        self._advised = {k: at for k, at in self._advised.items() if k in keys}  # forget groups gone
        posted = []
        for model, members in groups:
            key = (model, tuple(p.key for p in members))
            last = self._advised.get(key)
            if last is not None and now - last < self._every:
                continue
            if not background.leading(self._memo):
                break  # the leader Lease lapsed: post nothing more
            self._advised[key] = now
            advice = consolidation.advise_group(model, members, now)
            if advice.status is not consolidation.GroupStatus.ADVISED:
                logger.info("consolidation of %s: %s", ", ".join(advice.pools), advice.message_for(""))
                continue
            for pool in advice.pools:  # stamped with the wall clock, even when the decision clock is moved
                self._poster.post_event(
                    bodies[pool],
                    "Normal",
                    consolidation.REASON_CONSOLIDATION_ADVISED,
                    advice.message_for(pool),
                    dt.datetime.now(dt.UTC),
                )
            posted.append(advice)
        return posted
