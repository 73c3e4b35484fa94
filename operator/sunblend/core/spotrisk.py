"""Learned spot risk: per spot offer, how often spot could be had and how often it was lost.

Two kinds of news reach the policy about a spot offer:

- a **refusal**: a launch failed for insufficient capacity. Nothing was lost: spot beyond what
  runs cannot be had at the moment. Asking again costs nothing but the wait for the answer.
- a **loss**: a spot node that ran was taken back (an interruption notice, or a node gone).

Each offer keeps counts that decay with a half-life of ``HALF_LIFE``: nodes asked for and
refused, and spot node-hours run and nodes lost. From them come the share of asks granted and
the losses per node-hour, reported to the user and shown in events.

After news, the plan may count on at most the nodes the offer has (``cap``): an
expected-availability cap, held for a **retry window**; then spot is planned again. After a
refusal the window is ``REFUSAL_WINDOW``: asking again costs only the wait for the answer, and
on-demand stands in meanwhile. After a loss it starts at ``LOSS_WINDOW`` and is learned from
what the retries find: a loss again within one window of the last retry means the scarcity
outlasted the window, and it doubles, up to ``MAX_WINDOW``; each window that passes quiet after
a retry (spot came back) halves it again. So one loss holds spot back for minutes, not hours:
on the real traces of bench/simulate.py, windows that grew for refusals too, or up to hours,
left spot unused and cost more for the same service. Pure: the time is passed in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

HALF_LIFE = dt.timedelta(hours=24)  # the counts' half-life
REFUSAL_WINDOW = dt.timedelta(minutes=15)  # the retry window after a refused launch
LOSS_WINDOW = dt.timedelta(minutes=30)  # the first retry window after a loss
MAX_WINDOW = dt.timedelta(hours=1)
OBSERVE_EVERY = dt.timedelta(hours=1)  # run time is folded in this often: the stored state stays still between
PRIOR_LOSSES_PER_NODE_HOUR = 0.02  # a weak prior: one loss per 50 node-hours
PRIOR_NODE_HOURS = 5.0


@dataclass(frozen=True)
class SpotRisk:
    """What is learned about one spot offer, as of ``updated``."""

    updated: dt.datetime
    asked: float = 0.0  # nodes asked for (decaying)
    refused: float = 0.0  # of those, refused (decaying)
    node_hours: float = 0.0  # spot node-hours run (decaying)
    lost: float = 0.0  # running nodes taken back (decaying)
    cap: int | None = None  # nodes the plan may count on until ``until``; None: no cap
    until: dt.datetime | None = None  # the end of the retry window (then spot is tried again)
    news_at: dt.datetime | None = None  # the latest refusal or loss
    window: dt.timedelta = REFUSAL_WINDOW  # the learned retry window

    @property
    def granted_ratio(self) -> float:
        """Share of asked nodes granted (1 with no asks: nothing says otherwise)."""
        return 1.0 if self.asked <= 0 else max(0.0, 1 - self.refused / self.asked)

    @property
    def losses_per_node_hour(self) -> float:
        """Running nodes lost per node-hour of spot run, with a weak prior."""
        return (self.lost + PRIOR_LOSSES_PER_NODE_HOUR * PRIOR_NODE_HOURS) / (self.node_hours + PRIOR_NODE_HOURS)

    def capped(self, now: dt.datetime) -> int | None:
        """The nodes the plan may count on at ``now``; None when spot is planned freely."""
        return self.cap if self.until is not None and now < self.until else None

    def retried_between(self, since: dt.datetime, now: dt.datetime) -> bool:
        """Whether the retry window ended in (``since``, ``now``]."""
        return self.until is not None and since < self.until <= now


def _decayed(risk: SpotRisk, now: dt.datetime) -> SpotRisk:
    if now <= risk.updated:
        return risk
    factor = 0.5 ** ((now - risk.updated) / HALF_LIFE)
    return dataclasses.replace(
        risk,
        updated=now,
        asked=risk.asked * factor,
        refused=risk.refused * factor,
        node_hours=risk.node_hours * factor,
        lost=risk.lost * factor,
    )


def observe(risk: SpotRisk | None, now: dt.datetime, running: int, asked: int) -> SpotRisk:
    """Fold in the time run since the last update (``running`` nodes) and ``asked`` new nodes.

    Each whole window that passes quiet after the retry halves the learned window (spot came back)."""
    if risk is None:
        risk = SpotRisk(updated=now)
    hours = max(0.0, (now - risk.updated).total_seconds() / 3600)
    risk = _decayed(risk, now)
    risk = dataclasses.replace(risk, node_hours=risk.node_hours + running * hours, asked=risk.asked + asked)
    if risk.until is not None and now >= risk.until:
        quiet = now - risk.until
        shrunk = risk.window
        while shrunk > REFUSAL_WINDOW and quiet >= shrunk:
            quiet -= shrunk
            shrunk = max(REFUSAL_WINDOW, shrunk / 2)
        if shrunk != risk.window:  # the quiet windows counted are spent
            risk = dataclasses.replace(risk, window=shrunk, until=now - quiet)
    return risk


def _news(risk: SpotRisk, now: dt.datetime, cap: int, first: dt.timedelta, grows: bool) -> SpotRisk:
    """News at ``now``: hold the plan at ``cap`` nodes for the (re)learned window."""
    if not grows:
        window = max(first, risk.until - now) if risk.until is not None and now < risk.until else first
    elif risk.news_at is None or risk.until is None:
        window = first
    elif now < risk.until:
        window = max(risk.window, first)  # still inside the window: the scarcity goes on
    elif now - risk.until < risk.window:
        window = min(MAX_WINDOW, max(risk.window, first) * 2)  # soon after a retry: it outlasted the window
    else:
        window = max(risk.window, first)
    held = cap if risk.capped(now) is None else min(cap, risk.cap or 0)
    return dataclasses.replace(risk, cap=held, until=now + window, news_at=now, window=window)


def refused(risk: SpotRisk | None, now: dt.datetime, nodes: int, have: int) -> SpotRisk:
    """``nodes`` asked for were refused while the offer had ``have`` (running and granted)."""
    risk = _decayed(risk or SpotRisk(updated=now), now)
    risk = dataclasses.replace(risk, refused=risk.refused + nodes, asked=max(risk.asked, risk.refused + nodes))
    news = _news(risk, now, have, REFUSAL_WINDOW, grows=False)
    return dataclasses.replace(news, window=max(risk.window, REFUSAL_WINDOW))  # the learned loss window stays


def lost(risk: SpotRisk | None, now: dt.datetime, nodes: int, have: int) -> SpotRisk:
    """``nodes`` running spot nodes were taken back; ``have`` remain."""
    risk = _decayed(risk or SpotRisk(updated=now), now)
    risk = dataclasses.replace(risk, lost=risk.lost + nodes)
    return _news(risk, now, have, LOSS_WINDOW, grows=True)
