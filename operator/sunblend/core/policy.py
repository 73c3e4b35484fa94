"""The decision engine: one step of sunblend's policy, shared by the operator and the simulator.

``decide`` is pure. Given the pool, the time, an ``Observation`` (nodes per offer, replicas per
slice, live demand, interruption notices) and the ``State`` carried from the previous step, it
returns a ``Decision``: node targets for this moment, ``Command`` values with their reasons, the
new state and the events to post. Between hourly plans it:

- learns each hour's peak demand and carries a forecast correction across hours, and, with a
  ``serviceTarget``, sizes capacity to the quantile of the forecast's recent errors that meets
  it (``core.headroom``; ``headroom`` is the floor);
- plans the next hour ``LEAD`` early, so its nodes have booted when it starts;
- stands in for lost spot with on-demand at once, and for refused spot launches the hour
  needed; learns per offer how often spot could be had and how often it was lost
  (``core.spotrisk``): after such news the plan counts on no more spot there for a learned retry
  window, and a plan made ahead that counted on it is made again;
- covers live demand the targets cannot serve along the allowed routes (``core.serving``; live
  demand, or a saturated model server) with on-demand for the shortfall, kept until demand has
  stayed below for the stabilisation window;
- keeps capacity while metrics are missing, and removes capacity only once what is on its way
  to the regions serving the same users is ready (make before break), waiting at most
  ``MAKE_BEFORE_BREAK_BOUND``.

The operator stores ``State`` in the pool's status (``core.policy_state``), so a restart
continues where it stopped. The simulator's ``sunblend`` policy is a thin adapter over this.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sunblend.api import constants, spec
from sunblend.api.spec import CapacityType
from sunblend.core import blend, commands, forecast, headroom, serving, spotrisk
from sunblend.core.plan import Plan
from sunblend.core.problem import BlendProblem, Offer, OfferKey

LEAD = dt.timedelta(minutes=8)  # plan the next hour this early
RECENT = dt.timedelta(minutes=5)  # live demand is judged on its peak over this window
LEARNED_HOURS = 336  # hourly peaks kept per region (two weeks: every hour of the week twice)
FULL_HISTORY = 2  # samples of an hour of the week before history replaces the declared profile
THROUGHPUT_BUSY = 0.8  # utilisation above which demand per replica measures a replica's throughput
THROUGHPUT_ALPHA = 0.2
THROUGHPUT_WARN = 0.25
SATURATED_KV_CACHE = 0.9
MAKE_BEFORE_BREAK_BOUND = dt.timedelta(minutes=10)  # the longest a region waits for new capacity


@dataclass(frozen=True)
class Notice:
    """Spot news about one node: lost or about to be (an interruption signal, a vanished node), or,
    with ``refused``, a launch refused for insufficient capacity (nothing ran, nothing was lost)."""

    node: str
    offer: OfferKey
    refused: bool = False


@dataclass(frozen=True)
class Observation:
    """What is known at ``now``: only the past and the present."""

    now: dt.datetime
    ready: Mapping[OfferKey, int]  # nodes running and not under an interruption notice
    booting: Mapping[OfferKey, int] = field(default_factory=dict)  # asked for, not ready yet
    replicas: Mapping[OfferKey, int] = field(default_factory=dict)  # desired replicas of each slice now
    ready_replicas: Mapping[OfferKey, int] = field(default_factory=dict)
    demand: Mapping[str, float] = field(default_factory=dict)  # latest measured tokens/s; absent: unknown
    metrics_available: bool | None = None  # None: no live metrics configured; False: configured but down
    utilisation: Mapping[str, float] = field(default_factory=dict)  # GPU utilisation 0-1 per region
    kv_cache: Mapping[str, float] = field(default_factory=dict)  # model-server KV-cache usage 0-1 per region
    waiting: Mapping[str, float] = field(default_factory=dict)  # requests waiting per region
    history: Mapping[str, Sequence[tuple[dt.datetime, float]]] = field(default_factory=dict)  # seeds learning
    notices: tuple[Notice, ...] = ()
    prices: Mapping[OfferKey, float] = field(default_factory=dict)  # $/GPU-hour now; absent: the spec's


@dataclass(frozen=True)
class NextPlan:
    """The plan made ahead for the hour starting at ``hour``."""

    hour: dt.datetime
    targets: Mapping[OfferKey, int]
    expected: Mapping[str, float]
    made_at: dt.datetime


@dataclass(frozen=True)
class State:
    """What the engine carries from one step to the next (stored in the pool's status)."""

    hour: dt.datetime | None = None
    hour_peaks: Mapping[str, float] = field(default_factory=dict)
    learned: Mapping[str, tuple[tuple[dt.datetime, float], ...]] = field(default_factory=dict)  # hourly peaks
    correction: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, headroom.ErrorBook] = field(default_factory=dict)  # the forecast's recent errors
    expected: Mapping[str, float] = field(default_factory=dict)  # the forecast for this hour
    planned: Mapping[OfferKey, int] = field(default_factory=dict)
    replacement: Mapping[OfferKey, int] = field(default_factory=dict)  # on-demand standing in for lost spot
    surge: Mapping[OfferKey, int] = field(default_factory=dict)  # on-demand for demand above the plan
    next_plan: NextPlan | None = None
    spot_risk: Mapping[OfferKey, spotrisk.SpotRisk] = field(default_factory=dict)
    recent: Mapping[str, tuple[tuple[dt.datetime, float], ...]] = field(default_factory=dict)
    handled_notices: frozenset[str] = frozenset()
    throughput: Mapping[str, float] = field(default_factory=dict)  # measured tokens/s per replica per region
    low_since: Mapping[str, dt.datetime] = field(default_factory=dict)  # live demand below the surge since
    waiting_since: Mapping[str, dt.datetime] = field(default_factory=dict)  # new capacity on its way since


@dataclass(frozen=True)
class EngineEvent:
    """An event the step wants posted on the pool."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """The result of one step."""

    targets: Mapping[OfferKey, int]
    commands: tuple[commands.Command, ...]
    state: State
    plan: Plan | None = None  # the plan made this step, if one was
    events: tuple[EngineEvent, ...] = ()


def _cheapest_on_demand(problem: BlendProblem, region: str, prices: Mapping[OfferKey, float]) -> Offer | None:
    offers = [o for o in problem.offers_in(region) if o.capacity_type is CapacityType.ON_DEMAND]
    return min(
        offers,
        key=lambda o: prices.get(o.key, o.dollars_per_gpu_hour) * o.gpus_per_node / o.tokens_per_second_per_node,
        default=None,
    )


def _nodes_for(tokens: float, offer: Offer) -> int:
    return math.ceil(tokens / offer.tokens_per_second_per_node - 1e-9)


class _Step:
    """The working copy of one step: mutable here, frozen again into a ``State`` at the end."""

    def __init__(self, pool: spec.InferencePoolSpec, problem: BlendProblem, obs: Observation, state: State) -> None:
        self.pool = pool
        self.problem = problem
        self.obs = obs
        self.offers = {o.key: o for o in problem.offers}
        self.state = state
        self.hour_peaks = dict(state.hour_peaks)
        self.learned = {r: list(v) for r, v in state.learned.items()}
        self.correction = {r: state.correction.get(r, 1.0) for r in problem.regions}
        self.errors = dict(state.errors)
        self.expected = dict(state.expected)
        self.planned = dict(state.planned)
        self.replacement: dict[OfferKey, int] = defaultdict(int, state.replacement)
        self.surge: dict[OfferKey, int] = defaultdict(int, state.surge)
        self.next_plan = state.next_plan
        self.spot_risk = dict(state.spot_risk)
        self.recent = {r: list(v) for r, v in state.recent.items()}
        self.throughput = dict(state.throughput)
        self.low_since = dict(state.low_since)
        self.waiting_since = dict(state.waiting_since)
        self.hour = state.hour
        self.events: list[EngineEvent] = []
        self.plan: Plan | None = None
        self.reasons: dict[OfferKey, str] = {}

    # -- learning -----------------------------------------------------------------------------

    def learn(self) -> None:
        """Fold the latest measured demand into the hour's peak and the recent window."""
        now = self.obs.now
        for region, tokens in self.obs.demand.items():
            if region not in self.correction:
                continue
            self.hour_peaks[region] = max(self.hour_peaks.get(region, 0.0), tokens)
            window = [(at, v) for at, v in self.recent.get(region, []) if now - at < RECENT]
            expected = self.expected.get(region)
            if window and expected:
                book = self.errors.get(region) or headroom.ErrorBook()
                self.errors[region] = book.add(tokens, expected, (now - window[-1][0]).total_seconds())
            window.append((now, tokens))
            self.recent[region] = window
            if not self.learned.get(region) and self.obs.history.get(region):
                self.learned[region] = list(self.obs.history[region])[-LEARNED_HOURS:]
        for region, ratio in self.obs.utilisation.items():
            replicas = sum(n for k, n in self.obs.ready_replicas.items() if k[0] == region)
            measured = self.obs.demand.get(region)
            if ratio >= THROUGHPUT_BUSY and replicas > 0 and measured:
                sample = measured / replicas
                before = self.throughput.get(region)
                self.throughput[region] = (
                    sample if before is None else THROUGHPUT_ALPHA * sample + (1 - THROUGHPUT_ALPHA) * before
                )

    def close_hour(self, hour_start: dt.datetime) -> None:
        """The hour is over: remember its peak, and correct the forecast by how far off it was."""
        for region, actual in self.hour_peaks.items():
            kept = self.learned.setdefault(region, [])
            kept.append((hour_start, actual))
            del kept[:-LEARNED_HOURS]
            if region in self.expected:
                self.correction[region] = forecast.update_correction(
                    self.correction[region], actual, self.expected[region]
                )
        self.hour_peaks = {}
        self.errors = {region: book.decayed() for region, book in self.errors.items()}

    # -- planning -----------------------------------------------------------------------------

    def make_plan(
        self, start: dt.datetime, first_hour_only: bool = False
    ) -> tuple[dict[OfferKey, int], dict[str, float], Plan]:
        """Targets for the hour starting at ``start``, the forecast they serve, and the plan.

        ``first_hour_only``: only the targets are wanted, not a plan to report; when nothing
        couples the hours (``blend.coupled_hours``) the first hour's plan does not depend on
        the others, so only it is solved.
        """
        horizon = self.pool.planning.horizon_hours
        if first_hour_only and not blend.coupled_hours(self.problem):
            horizon = 1
        hours = forecast.hour_starts(start, horizon)
        demand = {}
        for region in self.pool.regions:
            profile = forecast.HourOfWeekProfile(region.time_zone)
            for at, value in self.learned.get(region.name, ()):
                profile.add(at, value)
            demand[region.name] = forecast.regional_forecast(
                region, hours, profile, self.correction[region.name], full_at=FULL_HISTORY
            )
        expected = {r: values[0] for r, values in demand.items()}
        target = self.pool.policy.service_target
        if target is not None:  # plan for the quantile that meets the target; headroom is the floor
            floor = self.problem.headroom
            for name, values in demand.items():
                scale = headroom.multiplier(self.errors.get(name), target, floor) / (1 + floor)
                demand[name] = tuple(v * scale for v in values)
        offers = []
        for o in self.problem.offers:
            risk = self.spot_risk.get(o.key)
            offers.append(
                dataclasses.replace(
                    o,
                    dollars_per_gpu_hour=self.obs.prices.get(o.key, o.dollars_per_gpu_hour),
                    max_nodes=None if risk is None else risk.capped(self.obs.now),
                )
            )
        current = {k: self.obs.ready.get(k, 0) + self.obs.booting.get(k, 0) for k in self.offers}
        step_problem = dataclasses.replace(
            self.problem, hours=hours, demand=demand, offers=tuple(offers), current_nodes=current
        )
        result = blend.plan(step_problem)
        targets = dict(self.planned)
        if result.has_solution:
            targets = {(a.region, a.gpu_class, a.capacity_type): a.nodes for a in result.allocations_at(0)}
        return targets, expected, result

    def roll_hour(self, replan: bool) -> None:
        """At a new hour take the plan made ahead (unless spot was lost since), or plan now."""
        hour = self.obs.now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if hour == self.hour and not replan:
            return
        previous = self.hour
        if self.hour is not None and hour != self.hour:
            self.close_hour(self.hour)
        spot_news = max((r.news_at for r in self.spot_risk.values() if r.news_at), default=None)
        ahead = self.next_plan
        if (
            not replan
            and ahead is not None
            and ahead.hour == hour
            and (spot_news is None or ahead.made_at >= spot_news)
        ):
            self.planned, self.expected = dict(ahead.targets), dict(ahead.expected)
        else:
            self.planned, self.expected, self.plan = self.make_plan(hour)
        self.next_plan = None
        self.hour = hour
        self.replacement.clear()
        self.surge.clear()
        self.low_since.clear()
        self.announce_spot_retries(previous)

    def plan_ahead(self) -> None:
        """Within ``LEAD`` of the next hour, plan it, so its nodes boot before it starts."""
        assert self.hour is not None
        upcoming = self.hour + forecast.HOUR
        if self.next_plan is None and self.obs.now >= upcoming - LEAD:
            targets, expected, _ = self.make_plan(upcoming, first_hour_only=True)
            self.next_plan = NextPlan(upcoming, targets, expected, self.obs.now)

    # -- spot ---------------------------------------------------------------------------------

    def learn_spot(self) -> None:
        """Fold the time each spot offer ran into its learned risk, at most every ``OBSERVE_EVERY``
        (with the nodes running then), so the state stored in the pool's status does not change
        at every step."""
        for key in self.offers:
            if key[2] is not CapacityType.SPOT:
                continue
            before = self.spot_risk.get(key)
            running = self.obs.ready.get(key, 0)
            if before is None and not running:
                continue
            if before is not None and self.obs.now - before.updated < spotrisk.OBSERVE_EVERY:
                continue
            self.spot_risk[key] = spotrisk.observe(before, self.obs.now, running, 0)

    def announce_spot_retries(self, since: dt.datetime | None) -> None:
        """At a new hour: spot whose retry window ended since the last hour began is planned again
        where the new plan has more of it than the cap; say so."""
        for key, risk in self.spot_risk.items():
            if since is None or not risk.retried_between(since, self.obs.now):
                continue
            if self.planned.get(key, 0) > (risk.cap or 0):
                self.events.append(
                    EngineEvent(
                        "Normal",
                        constants.REASON_RETURNED_TO_SPOT,
                        f"{commands.offer_text(key)}: spot is planned again ({self.planned[key]} nodes) after "
                        f"a retry window of {risk.window.total_seconds() / 60:g} min",
                    )
                )

    def spot_news(self) -> None:
        """New notices: learn from losses and refusals; on-demand in the same region stands in now
        for lost nodes, and for refused ones this hour's plan needed (until the next plan, which
        knows the news); a plan made ahead that counted on them is made again."""
        lost: dict[OfferKey, int] = defaultdict(int)
        refused: dict[OfferKey, int] = defaultdict(int)
        for notice in self.obs.notices:
            if notice.node not in self.state.handled_notices and notice.offer in self.offers:
                (refused if notice.refused else lost)[notice.offer] += 1
        replan_ahead = False
        for key, count in sorted(refused.items()):
            have = self.obs.ready.get(key, 0) + self.obs.booting.get(key, 0)
            risk = spotrisk.refused(self.spot_risk.get(key), self.obs.now, count, have)
            self.spot_risk[key] = risk
            self.events.append(
                EngineEvent(
                    "Warning",
                    constants.REASON_SPOT_UNAVAILABLE,
                    f"{count} spot node(s) of {commands.offer_text(key)} refused for insufficient capacity; "
                    f"spot there is planned at {risk.cap} node(s) for {risk.window.total_seconds() / 60:g} min "
                    f"({risk.granted_ratio:.0%} of recent asks granted)",
                )
            )
            if self.planned.get(key, 0) > have:  # this hour needed them: on-demand stands in
                missing = self.planned[key] - have
                self.planned[key] = have
                self.stand_in(key, missing, f"{missing} refused spot node(s)")
            if self.next_plan is not None and self.next_plan.targets.get(key, 0) > have:
                replan_ahead = True
        for key, count in sorted(lost.items()):
            ready = self.obs.ready.get(key, 0)
            risk = spotrisk.lost(self.spot_risk.get(key), self.obs.now, count, ready)
            self.spot_risk[key] = risk
            self.planned[key] = min(self.planned.get(key, 0), ready + self.obs.booting.get(key, 0))
            replan_ahead = True
            message = (
                f"{count} spot node(s) of {commands.offer_text(key)} lost or under notice; "
                f"spot there is planned at {risk.cap} node(s) for {risk.window.total_seconds() / 60:g} min "
                f"({risk.losses_per_node_hour:.2f} losses per node-hour lately)"
            )
            self.events.append(EngineEvent("Warning", constants.REASON_SPOT_INTERRUPTED, message))
            self.stand_in(key, count, f"{count} lost spot node(s)")
        if replan_ahead:
            self.next_plan = None  # made again, with the news, by plan_ahead

    def stand_in(self, key: OfferKey, count: int, what: str) -> None:
        """On-demand in the same region standing in for ``count`` spot nodes of ``key`` now."""
        od = _cheapest_on_demand(self.problem, key[0], self.obs.prices)
        if od is None:
            return
        added = _nodes_for(count * self.offers[key].tokens_per_second_per_node, od)
        self.replacement[od.key] += added
        self.reasons[od.key] = f"on-demand replacing {what} of {commands.offer_text(key)}"
        self.events.append(
            EngineEvent(
                "Normal",
                constants.REASON_FELL_BACK_TO_ON_DEMAND,
                f"{added} on-demand node(s) of {commands.offer_text(od.key)} replace {what}",
            )
        )

    # -- surges -------------------------------------------------------------------------------

    def wanted(self, region: str, capacity: float) -> float | None:
        """Capacity (tokens/s, headroom included) live signals ask for; None when nothing was measured."""
        window = self.recent.get(region)
        if not window:
            return None
        seen = max(v for _, v in window)
        if self.obs.kv_cache.get(region, 0.0) >= SATURATED_KV_CACHE or self.obs.waiting.get(region, 0.0) > 0:
            # A saturated server serves less than is asked of it: demand is above what runs.
            seen = max(seen, capacity / (1 + self.problem.headroom) * 1.1)
        return (1 + self.problem.headroom) * seen

    def cover_surges(self, targets: Mapping[OfferKey, int]) -> None:
        """Add on-demand only for live demand that no allowed route to the targets' capacity can serve.

        Live demand (headroom included) is assigned to the targets' capacity by the maximum flow
        the simulator serves with (``core.serving``), so demand the plan routes to another region
        buys nothing. What is left unserved is bought as on-demand in the user's region or, with
        no on-demand offer there, in the first region allowed to serve it.
        """
        capacity = dict.fromkeys(self.problem.regions, 0.0)
        for key, nodes in targets.items():
            capacity[key[0]] += nodes * self.offers[key].tokens_per_second_per_node
        wanted: dict[str, float] = {}
        for region in self.problem.regions:
            value = self.wanted(region, capacity[region])
            if value is not None:
                wanted[region] = value
        routes = serving.routes_of(self.problem)
        assignment = serving.assign(wanted, capacity, routes)
        for user, unmet in assignment.unserved.items():
            if unmet <= 1e-6:
                continue
            candidates = (user, *(r for r in routes.get(user, ()) if r != user))
            od = next(
                (o for o in (_cheapest_on_demand(self.problem, r, self.obs.prices) for r in candidates) if o), None
            )
            if od is not None:
                self.surge[od.key] += _nodes_for(unmet, od)
                self.reasons[od.key] = f"live demand in {user} is {unmet:,.0f} tokens/s above the plan"
        self.release_surges(wanted, assignment.served, assignment.spare)

    def release_surges(
        self, wanted: Mapping[str, float], served: Mapping[str, float], spare: Mapping[str, float]
    ) -> None:
        """Surge nodes a region no longer needs go once demand has stayed low for the stabilisation window.

        A region with no live measurement keeps its surge: nothing is removed on missing data.
        """
        window = dt.timedelta(seconds=self.pool.actuation.scale_down_stabilization_seconds)
        for region, want in wanted.items():
            surged = sorted(k for k, n in self.surge.items() if n and k[0] == region)
            left = spare[region]
            releasable: dict[OfferKey, int] = {}
            if want - served[region] <= 1e-6:
                for key in surged:
                    per_node = self.offers[key].tokens_per_second_per_node
                    count = min(self.surge[key], int(left // per_node))
                    if count:
                        releasable[key] = count
                        left -= count * per_node
            if not releasable:
                self.low_since.pop(region, None)
                continue
            since = self.low_since.setdefault(region, self.obs.now)
            if self.obs.now - since < window:
                continue
            for key, count in releasable.items():
                self.surge[key] -= count
                self.reasons[key] = (
                    f"live demand in {region} stayed below the capacity for {window.total_seconds():g} s: "
                    f"{count} surge node(s) released"
                )
            self.low_since.pop(region, None)

    # -- targets to commands ------------------------------------------------------------------

    def targets(self) -> dict[OfferKey, int]:
        targets: dict[OfferKey, int] = defaultdict(int)
        for extra in (self.planned, self.replacement, self.surge):
            for key, n in extra.items():
                targets[key] += n
        before = dict(self.surge)
        self.cover_surges(targets)
        for key, n in self.surge.items():
            targets[key] += n - before.get(key, 0)
        if self.next_plan is not None:  # boot the next hour's nodes ahead of it; keep this hour's
            for key, n in self.next_plan.targets.items():
                if n > targets[key]:
                    targets[key] = n
                    self.reasons.setdefault(key, f"the plan for {self.next_plan.hour:%H:%M} UTC, booted ahead")
        return {k: v for k, v in targets.items() if k in self.offers}

    def hold(self, targets: dict[OfferKey, int]) -> None:
        """No removal on missing data; removal in a region only once its new capacity is ready."""
        present = {k: self.obs.ready.get(k, 0) + self.obs.booting.get(k, 0) for k in self.offers}
        # A region waits while capacity is on its way there: nodes booting, or replicas starting on
        # nodes that are ready (replicas with no node to run on are not on their way).
        waiting_regions = {k[0] for k, n in self.obs.booting.items() if n > 0 and targets.get(k, 0) > 0}
        waiting_regions.update(k[0] for k in self.offers if targets.get(k, 0) > present[k])  # launched now
        for key, replicas in self.obs.replicas.items():
            offer = self.offers.get(key)
            room = self.obs.ready.get(key, 0) * (offer.replicas_per_node if offer else 0)
            if min(replicas, room) > self.obs.ready_replicas.get(key, 0):
                waiting_regions.add(key[0])
        # Capacity on its way to a region may take over users served elsewhere now: every region
        # that serves a user the waiting region also serves waits too (a plan that moves load
        # from one region to another keeps the old capacity until the new is ready).
        for region in list(waiting_regions):
            for user in self.problem.regions:
                servers = self.problem.serving_regions(user)
                if region in servers:
                    waiting_regions.update(servers)
        # Capacity that is not ready within the bound (pods that never start, nodes that never
        # boot) stops holding the region, or one stuck replica would keep every node forever.
        for region in list(self.waiting_since):
            if region not in waiting_regions:
                del self.waiting_since[region]
        for region in sorted(waiting_regions):
            since = self.waiting_since.setdefault(region, self.obs.now)
            if self.obs.now - since >= MAKE_BEFORE_BREAK_BOUND:
                waiting_regions.discard(region)
        for key in self.offers:
            wanted, have = targets.get(key, 0), present[key]
            if wanted >= have:
                continue
            if self.obs.metrics_available is False:
                targets[key] = have
                self.reasons[key] = "metrics are unavailable: nothing is removed on missing data"
            elif key[0] in waiting_regions:
                targets[key] = have
                self.reasons[key] = f"kept until the new capacity in {key[0]} is ready (make before break)"

    def command_list(self, targets: Mapping[OfferKey, int]) -> list[commands.Command]:
        out: list[commands.Command] = []
        for key in sorted(self.offers):
            offer = self.offers[key]
            wanted = targets.get(key, 0)
            have = self.obs.ready.get(key, 0) + self.obs.booting.get(key, 0)
            reason = self.reasons.get(key) or f"the plan for {self.hour:%H:%M} UTC"
            if wanted != have:
                out.append(commands.SetNodes(key, wanted, have, reason))
                if wanted > have and key[2] is CapacityType.SPOT:
                    risk = self.spot_risk.get(key) or spotrisk.SpotRisk(updated=self.obs.now)
                    self.spot_risk[key] = dataclasses.replace(risk, asked=risk.asked + wanted - have)
            replicas = wanted * offer.replicas_per_node
            slice_now = self.obs.replicas.get(key)
            if replicas != (slice_now or 0) or (slice_now is None and replicas > 0):
                out.append(commands.ScaleSlice(key, replicas, slice_now, reason))
        return out

    def frozen(self) -> State:
        return State(
            hour=self.hour,
            hour_peaks=self.hour_peaks,
            learned={r: tuple(v) for r, v in self.learned.items()},
            correction=self.correction,
            errors=self.errors,
            expected=self.expected,
            planned=self.planned,
            replacement={k: v for k, v in self.replacement.items() if v},
            surge={k: v for k, v in self.surge.items() if v},
            next_plan=self.next_plan,
            spot_risk=self.spot_risk,
            recent={r: tuple(v) for r, v in self.recent.items()},
            handled_notices=frozenset(n.node for n in self.obs.notices),
            throughput=self.throughput,
            low_since=self.low_since,
            waiting_since=self.waiting_since,
        )


def decide(
    pool: spec.InferencePoolSpec, problem: BlendProblem, obs: Observation, state: State, replan: bool = False
) -> Decision:
    """One step of the policy at ``obs.now``. ``replan``: the spec changed, plan this hour again.

    ``problem`` is the pool's planning problem (offers, routes, policy); its hours and demand are
    replaced by the forecast at each plan.
    """
    step = _Step(pool, problem, obs, state)
    step.learn()
    step.learn_spot()
    step.roll_hour(replan)
    step.spot_news()
    step.plan_ahead()
    targets = step.targets()
    step.hold(targets)
    return Decision(targets, tuple(step.command_list(targets)), step.frozen(), step.plan, tuple(step.events))


def throughput_warnings(pool: spec.InferencePoolSpec, state: State) -> list[str]:
    """Regions whose measured tokens/s per replica differs from the declared figure by more than 25%."""
    declared = pool.model_server.tokens_per_second_per_replica
    out = []
    for region, measured in sorted(state.throughput.items()):
        if abs(measured - declared) > THROUGHPUT_WARN * declared:
            out.append(
                f"{region}: one replica serves {measured:,.0f} tokens/s measured, "
                f"{declared:,.0f} declared ({measured / declared - 1:+.0%})"
            )
    return out
