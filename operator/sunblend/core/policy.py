"""The decision engine: one step of sunblend's policy, shared by the operator and the simulator.

``decide`` is pure. Given the pool, the time, an ``Observation`` (nodes per offer, replicas per
slice, live demand, interruption notices) and the ``State`` carried from the previous step, it
returns a ``Decision``: node targets for this moment, ``Command`` values with their reasons, the
new state and the events to post. Between hourly plans it:

- learns each hour's peak demand and carries a forecast correction across hours;
- plans the next hour ``lead`` early, so its nodes have booted when it starts;
- replaces lost spot with on-demand at once and remembers, per offer, that spot was lost (the
  memory lasts longer each time spot is lost again while remembered, and shrinks back after);
- covers demand above the plan (live demand, or a saturated model server) with on-demand, kept
  until the next plan;
- keeps capacity while metrics are missing, and removes capacity in a region only once what
  replaces it there is ready (make before break), waiting at most ``MAKE_BEFORE_BREAK_BOUND``.

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
from sunblend.core import blend, commands, forecast
from sunblend.core.plan import Plan
from sunblend.core.problem import BlendProblem, Offer, OfferKey

LEAD = dt.timedelta(minutes=8)  # plan the next hour this early
RECENT = dt.timedelta(minutes=5)  # live demand is judged on its peak over this window
SPOT_MEMORY_BASE = dt.timedelta(hours=2)  # after a first loss, plan as if spot stays scarce this long
SPOT_MEMORY_MAX = dt.timedelta(hours=24)
LEARNED_HOURS = 336  # hourly peaks kept per region (two weeks: every hour of the week twice)
FULL_HISTORY = 2  # samples of an hour of the week before history replaces the declared profile
THROUGHPUT_BUSY = 0.8  # utilisation above which demand per replica measures a replica's throughput
THROUGHPUT_ALPHA = 0.2
THROUGHPUT_WARN = 0.25
SATURATED_KV_CACHE = 0.9
MAKE_BEFORE_BREAK_BOUND = dt.timedelta(minutes=10)  # the longest a region waits for new capacity


@dataclass(frozen=True)
class Notice:
    """A spot node lost, or about to be: an interruption signal, a failed launch, a vanished node."""

    node: str
    offer: OfferKey


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
class SpotMemory:
    """Spot of one offer seen scarce: at most ``nodes`` until ``until``; ``span`` is the memory's length."""

    nodes: int
    until: dt.datetime
    learned_at: dt.datetime
    span: dt.timedelta


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
    expected: Mapping[str, float] = field(default_factory=dict)  # the forecast for this hour
    planned: Mapping[OfferKey, int] = field(default_factory=dict)
    replacement: Mapping[OfferKey, int] = field(default_factory=dict)  # on-demand standing in for lost spot
    surge: Mapping[OfferKey, int] = field(default_factory=dict)  # on-demand for demand above the plan
    next_plan: NextPlan | None = None
    spot_memory: Mapping[OfferKey, SpotMemory] = field(default_factory=dict)
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
        self.expected = dict(state.expected)
        self.planned = dict(state.planned)
        self.replacement: dict[OfferKey, int] = defaultdict(int, state.replacement)
        self.surge: dict[OfferKey, int] = defaultdict(int, state.surge)
        self.next_plan = state.next_plan
        self.spot_memory = dict(state.spot_memory)
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

    # -- planning -----------------------------------------------------------------------------

    def make_plan(self, start: dt.datetime) -> tuple[dict[OfferKey, int], dict[str, float], Plan]:
        """Targets for the hour starting at ``start``, the forecast they serve, and the plan."""
        hours = forecast.hour_starts(start, self.pool.planning.horizon_hours)
        demand = {}
        for region in self.pool.regions:
            profile = forecast.HourOfWeekProfile(region.time_zone)
            for at, value in self.learned.get(region.name, ()):
                profile.add(at, value)
            demand[region.name] = forecast.regional_forecast(
                region, hours, profile, self.correction[region.name], full_at=FULL_HISTORY
            )
        offers = []
        for o in self.problem.offers:
            memory = self.spot_memory.get(o.key)
            offers.append(
                dataclasses.replace(
                    o,
                    dollars_per_gpu_hour=self.obs.prices.get(o.key, o.dollars_per_gpu_hour),
                    max_nodes=memory.nodes if memory and memory.until > self.obs.now else None,
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
        return targets, {r: values[0] for r, values in demand.items()}, result

    def roll_hour(self, replan: bool) -> None:
        """At a new hour take the plan made ahead (unless spot was lost since), or plan now."""
        hour = self.obs.now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if hour == self.hour and not replan:
            return
        if self.hour is not None and hour != self.hour:
            self.close_hour(self.hour)
        spot_news = max((m.learned_at for m in self.spot_memory.values()), default=None)
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
        self.forget_spot_losses()

    def plan_ahead(self) -> None:
        """Within ``LEAD`` of the next hour, plan it, so its nodes boot before it starts."""
        assert self.hour is not None
        upcoming = self.hour + forecast.HOUR
        if self.next_plan is None and self.obs.now >= upcoming - LEAD:
            targets, expected, _ = self.make_plan(upcoming)
            self.next_plan = NextPlan(upcoming, targets, expected, self.obs.now)

    # -- spot ---------------------------------------------------------------------------------

    def forget_spot_losses(self) -> None:
        """Memories that ran out: spot may be planned again (and the memory shrinks back)."""
        for key, memory in list(self.spot_memory.items()):
            if memory.until <= self.obs.now:
                del self.spot_memory[key]
                if self.planned.get(key, 0) > memory.nodes:
                    self.events.append(
                        EngineEvent(
                            "Normal",
                            constants.REASON_RETURNED_TO_SPOT,
                            f"{commands.offer_text(key)}: spot is planned again ({self.planned[key]} nodes), "
                            f"{memory.span.total_seconds() / 3600:g} h after it was lost",
                        )
                    )

    def replace_lost_spot(self) -> bool:
        """New interruption notices: cover the lost nodes with on-demand now, and remember the loss.

        Returns whether any spot was newly lost."""
        lost: dict[OfferKey, int] = defaultdict(int)
        for notice in self.obs.notices:
            if notice.node not in self.state.handled_notices and notice.offer in self.offers:
                lost[notice.offer] += 1
        for key, count in sorted(lost.items()):
            ready = self.obs.ready.get(key, 0)
            before = self.spot_memory.get(key)
            span = SPOT_MEMORY_BASE if before is None else min(SPOT_MEMORY_MAX, before.span * 2)
            self.spot_memory[key] = SpotMemory(ready, self.obs.now + span, self.obs.now, span)
            self.planned[key] = min(self.planned.get(key, 0), ready + self.obs.booting.get(key, 0))
            message = (
                f"{count} spot node(s) of {commands.offer_text(key)} lost or under notice; "
                f"spot there is held at {ready} node(s) for {span.total_seconds() / 3600:g} h"
            )
            self.events.append(EngineEvent("Warning", constants.REASON_SPOT_INTERRUPTED, message))
            od = _cheapest_on_demand(self.problem, key[0], self.obs.prices)
            if od is None:
                continue
            added = _nodes_for(count * self.offers[key].tokens_per_second_per_node, od)
            self.replacement[od.key] += added
            self.reasons[od.key] = f"on-demand replacing {count} lost spot node(s) of {commands.offer_text(key)}"
            self.events.append(
                EngineEvent(
                    "Normal",
                    constants.REASON_FELL_BACK_TO_ON_DEMAND,
                    f"{added} on-demand node(s) of {commands.offer_text(od.key)} replace lost spot",
                )
            )
        return bool(lost)

    def replan_after_loss(self) -> None:
        """Spot was lost: plan this hour again with the loss remembered (the MILP may move load to
        another offer or region). A plan made ahead before the loss is dropped and made again."""
        assert self.hour is not None
        if self.next_plan is not None:
            self.next_plan = None
        if self.plan is not None:  # planned this step already, with the loss known
            return
        targets, expected, result = self.make_plan(self.hour)
        self.plan = result
        if not result.has_solution:
            return
        for key in set(targets) | set(self.planned):
            if targets.get(key, 0) != self.planned.get(key, 0):
                self.reasons[key] = "re-planned after spot was lost"
        # The stand-in on-demand stays only where the new plan does not already add it: capacity
        # the plan moved elsewhere (another offer or region) has yet to boot.
        for key, count in list(self.replacement.items()):
            added = max(0, targets.get(key, 0) - self.planned.get(key, 0))
            self.replacement[key] = max(0, count - added)
        self.planned, self.expected = targets, expected

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
        """Add on-demand where live demand outgrows the targets, routed as the plan may route it."""
        capacity: dict[str, float] = defaultdict(float)
        for key, nodes in targets.items():
            capacity[key[0]] += nodes * self.offers[key].tokens_per_second_per_node
        wanted: dict[str, float] = {}
        for region in self.problem.regions:
            value = self.wanted(region, capacity[region])
            if value is not None:
                wanted[region] = value
        served = {r: min(w, capacity[r]) for r, w in wanted.items()}
        spare = {r: capacity[r] - served.get(r, 0.0) for r in self.problem.regions}
        for user, want in wanted.items():
            for server in self.problem.serving_regions(user):
                moved = min(want - served[user], spare[server])
                if moved > 0:
                    served[user] += moved
                    spare[server] -= moved
            unmet = want - served[user]
            od = _cheapest_on_demand(self.problem, user, self.obs.prices)
            if unmet > 1e-6 and od is not None:
                added = _nodes_for(unmet, od)
                self.surge[od.key] += added
                self.reasons[od.key] = f"live demand in {user} is {unmet:,.0f} tokens/s above the plan"
        self.release_surges(wanted, served, spare)

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
        for key, replicas in self.obs.replicas.items():
            offer = self.offers.get(key)
            room = self.obs.ready.get(key, 0) * (offer.replicas_per_node if offer else 0)
            if min(replicas, room) > self.obs.ready_replicas.get(key, 0):
                waiting_regions.add(key[0])
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
            expected=self.expected,
            planned=self.planned,
            replacement={k: v for k, v in self.replacement.items() if v},
            surge={k: v for k, v in self.surge.items() if v},
            next_plan=self.next_plan,
            spot_memory=self.spot_memory,
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
    step.roll_hour(replan)
    step.plan_ahead()
    if step.replace_lost_spot():
        step.replan_after_loss()
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
