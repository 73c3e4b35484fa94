"""The trace-replay engine: steps through time, asks a policy for node targets, and keeps score.

Each step it: ends nodes whose preemption notice has run out; preempts spot above what the spot
trace allows (a booting node at once, a running one after the notice, serving through it); lands
nodes whose provisioning delay has passed and answers refused spot launches; asks the policy for
targets (the policy sees demand only up to the previous step, and this step's preemptions and
insufficient-capacity errors); launches what the targets add; serves demand (a maximum flow
of each user region's demand to the running capacity along the routes the pool allows, home
first: ``core.serving``); and bills every node that is booting or running. Totals are sums of
the per-step figures, so cost and served demand reconcile exactly.

Spot launches behave as a cloud's API does: a launch the spot trace cannot grant at the moment it
is asked for is refused with an insufficient-capacity error after ``Settings.spot_api_delay``
(reported at the first step after it), and is never billed; a granted launch is billed from the
request and boots for ``Settings.spot_delay``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sunblend.api.spec import CapacityType
from sunblend.core import commands, serving
from sunblend.core.problem import BlendProblem, Offer, OfferKey
from sunblend.sim.traces import Traces

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Settings:
    """How the cloud behaves in a run."""

    step: dt.timedelta = dt.timedelta(minutes=1)
    on_demand_delay: dt.timedelta = dt.timedelta(minutes=3)
    spot_delay: dt.timedelta = dt.timedelta(minutes=5)  # a granted spot launch boots this long
    preemption_notice: dt.timedelta = dt.timedelta(minutes=2)
    spot_api_delay: dt.timedelta = dt.timedelta(seconds=5)  # a refused spot launch fails this fast


class FutureDemandError(Exception):
    """A policy asked for demand it could not have seen yet."""


class DemandHistory:
    """Demand per region observed so far: reads at or after the current step are refused."""

    def __init__(self, demand: Mapping[str, Sequence[float]]) -> None:
        self._demand = demand
        self.now = 0  # the current step; only steps before it are history

    def at(self, region: str, step: int) -> float:
        """Demand observed at an earlier ``step``."""
        if step >= self.now:
            raise FutureDemandError(f"step {step} is not in the past (now is step {self.now})")
        return self._demand[region][step]

    def recent(self, region: str, steps: int) -> list[float]:
        """The last ``steps`` observed values (fewer at the start)."""
        return [self._demand[region][i] for i in range(max(0, self.now - steps), self.now)]


@dataclass
class Observation:
    """What a policy may know at one step."""

    step: int
    now: dt.datetime
    history: DemandHistory
    running: Mapping[OfferKey, int]  # running and not under preemption notice
    booting: Mapping[OfferKey, int]  # launched, not running yet (or awaiting the API's answer)
    lost_spot: Mapping[OfferKey, int]  # preempted, or refused at launch (launch_errors), this step
    prices: Mapping[OfferKey, float]  # dollars per GPU-hour now
    launch_errors: Mapping[OfferKey, int] = field(default_factory=dict)  # insufficient capacity, this step


@dataclass
class _Launch:
    """Nodes asked for together: booting until step ``at``, or, if refused, awaiting the error."""

    at: int
    nodes: int
    granted: bool


@dataclass(frozen=True)
class _Delays:
    """Provisioning delays in steps, and how many steps a refused spot launch takes to fail."""

    on_demand: int
    spot: int
    spot_answer: int


class Policy(Protocol):
    """Decides node targets from what is known now."""

    name: str

    def commitments(self, problem: BlendProblem) -> Mapping[tuple[str, str], int]:
        """Committed nodes held for the whole run, per (region, GPU class)."""
        ...

    def decide(self, observation: Observation) -> Mapping[OfferKey, int]:
        """Target nodes per (region, GPU class, capacity type); absent keys mean 0."""
        ...


@dataclass
class Run:
    """The per-step record and totals of one run."""

    policy: str
    times: list[dt.datetime] = field(default_factory=list)
    demand: dict[str, list[float]] = field(default_factory=dict)
    served: dict[str, list[float]] = field(default_factory=dict)
    gpus: dict[tuple[str, CapacityType], list[int]] = field(default_factory=dict)
    dollars: dict[CapacityType, float] = field(default_factory=lambda: dict.fromkeys(CapacityType, 0.0))
    all_on_demand_dollars: float = 0.0
    demand_token_seconds: float = 0.0
    served_token_seconds: float = 0.0
    capacity_token_seconds: float = 0.0
    minutes_below_demand: float = 0.0
    node_changes: int = 0
    spot_preemptions: int = 0
    spot_launch_failures: int = 0

    @property
    def total_dollars(self) -> float:
        """Cost of the run, committed (amortised) included."""
        return sum(self.dollars.values())

    @property
    def unserved_token_seconds(self) -> float:
        """Demand not served."""
        return self.demand_token_seconds - self.served_token_seconds

    @property
    def served_ratio(self) -> float:
        """SLO attainment: the fraction of demand served."""
        return 1.0 if self.demand_token_seconds <= 0 else self.served_token_seconds / self.demand_token_seconds

    @property
    def utilization_ratio(self) -> float:
        """Tokens served over tokens the running capacity could serve."""
        return 0.0 if self.capacity_token_seconds <= 0 else self.served_token_seconds / self.capacity_token_seconds

    @property
    def savings_ratio(self) -> float:
        """Savings versus the all-on-demand reference."""
        reference = self.all_on_demand_dollars
        return 0.0 if reference <= 0 else 1 - self.total_dollars / reference


def apply_commands(current: Mapping[OfferKey, int], decided: Sequence[commands.Command]) -> dict[OfferKey, int]:
    """Node targets after the node commands: ``current`` where no SetNodes names an offer.

    The simulator has no pods or node names: it applies SetNodes (with the provisioning delays
    of ``Settings``) and leaves slices, cordons and drains to the operator's cluster.
    """
    targets = dict(current)
    for command in decided:
        if isinstance(command, commands.SetNodes):
            targets[command.offer] = command.nodes
    return targets


def _grid(traces: Traces, settings: Settings) -> list[dt.datetime]:
    count = int((traces.end - traces.start) / settings.step) + 1
    return [traces.start + i * settings.step for i in range(count)]


def _on_grid(series_at: Callable[[dt.datetime], float | None], times: list[dt.datetime], default: float) -> list[float]:
    """A trace's values at each step, ``default`` before its first row."""
    values = [series_at(moment) for moment in times]
    return [default if value is None else float(value) for value in values]


class Engine:
    """Replays ``traces`` for ``problem`` (offers, routes, headroom) under one policy."""

    def __init__(self, problem: BlendProblem, traces: Traces, settings: Settings = Settings()) -> None:
        self.problem = problem
        self.settings = settings
        self.times = _grid(traces, settings)
        self.demand = {r: _on_grid(traces.demand[r].at, self.times, 0.0) for r in problem.regions}
        self.spot_gpus: dict[tuple[str, str], list[float]] = {
            key: _on_grid(series.at, self.times, math.inf) for key, series in traces.spot.items()
        }
        self.prices: dict[OfferKey, list[float]] = {
            o.key: _on_grid(traces.prices[o.key].at, self.times, o.dollars_per_gpu_hour)
            if o.key in traces.prices
            else [o.dollars_per_gpu_hour] * len(self.times)
            for o in problem.offers
        }
        self.offers: dict[OfferKey, Offer] = {o.key: o for o in problem.offers}

    def _steps(self, delay: dt.timedelta) -> int:
        return max(0, math.ceil(delay / self.settings.step))

    def run(self, policy: Policy) -> Run:
        """Replay the whole trace under ``policy``."""
        problem, hours = self.problem, self.settings.step.total_seconds() / SECONDS_PER_HOUR
        step_seconds = self.settings.step.total_seconds()
        held = {k: v for k, v in policy.commitments(problem).items() if v > 0}
        running: dict[OfferKey, int] = defaultdict(int)
        booting: dict[OfferKey, list[_Launch]] = defaultdict(list)
        noticed: dict[OfferKey, list[list[int]]] = defaultdict(list)  # [end step, nodes]
        history = DemandHistory(self.demand)
        record = Run(policy.name, times=self.times)
        record.demand = {r: [] for r in problem.regions}
        record.served = {r: [] for r in problem.regions}
        record.gpus = {(r, c): [] for r in problem.regions for c in CapacityType}
        delays = _Delays(
            on_demand=self._steps(self.settings.on_demand_delay),
            spot=self._steps(self.settings.spot_delay),
            spot_answer=max(1, self._steps(self.settings.spot_api_delay)),
        )
        notice = max(1, self._steps(self.settings.preemption_notice))
        committed_price = {
            (o.region, o.gpu_class): o.key for o in problem.offers if o.capacity_type is CapacityType.COMMITTED
        }
        for k, now in enumerate(self.times):
            lost: dict[OfferKey, int] = defaultdict(int)
            errors: dict[OfferKey, int] = defaultdict(int)
            # 1. Preempted nodes reach the end of their notice.
            for key, queue in noticed.items():
                ended = sum(n for at, n in queue if at <= k)
                if ended:
                    noticed[key] = [[at, n] for at, n in queue if at > k]
                    record.node_changes += ended
            # 2. Spot above what is obtainable is preempted: booting nodes at once (newest first),
            #    running ones after the notice, serving through it.
            for key in [q for q in set(running) | set(booting) if q[2] is CapacityType.SPOT]:
                self._preempt(key, k, k + notice, running, booting, noticed, record, lost)
            # 3. Granted nodes land; refused spot launches get their insufficient-capacity error.
            self._land(k, running, booting, lost, errors)
            # 4. The policy decides from the past only.
            history.now = k
            observation = Observation(
                step=k,
                now=now,
                history=history,
                running=dict(running),
                booting={key: sum(launch.nodes for launch in q) for key, q in booting.items()},
                lost_spot=dict(lost),
                prices={key: series[k] for key, series in self.prices.items()},
                launch_errors=dict(errors),
            )
            targets = policy.decide(observation)
            for key in set(targets) | set(running) | {q for q, v in booting.items() if v}:
                self._apply(key, targets.get(key, 0), k, running, booting, held, record, delays)
            if k == 0:  # what the policy wants at the start is up at once (spot only if granted)
                self._land(k, running, booting, defaultdict(int), defaultdict(int))
            # 5. Serve this step's demand.
            capacity: dict[str, float] = defaultdict(float)
            for key, n in running.items():
                capacity[key[0]] += n * self.offers[key].tokens_per_second_per_node
            for key, queue in noticed.items():
                capacity[key[0]] += sum(n for _, n in queue) * self.offers[key].tokens_per_second_per_node
            served = self._serve({r: self.demand[r][k] for r in problem.regions}, capacity)
            short = False
            for region in problem.regions:
                demand = self.demand[region][k]
                record.demand[region].append(demand)
                record.served[region].append(served[region])
                record.demand_token_seconds += demand * step_seconds
                record.served_token_seconds += served[region] * step_seconds
                record.capacity_token_seconds += capacity[region] * step_seconds
                short = short or served[region] < demand - 1e-6
            if short:
                record.minutes_below_demand += step_seconds / 60
            # 6. Bill every node booting (granted) or running, and the commitments held.
            gpus_now: dict[tuple[str, CapacityType], int] = defaultdict(int)
            for key in set(running) | set(booting) | set(noticed):
                offer = self.offers[key]
                serving = running.get(key, 0) + sum(n for _, n in noticed.get(key, []))
                nodes = serving + sum(launch.nodes for launch in booting.get(key, []) if launch.granted)
                if key[2] is not CapacityType.COMMITTED:
                    record.dollars[key[2]] += nodes * offer.gpus_per_node * self.prices[key][k] * hours
                gpus_now[(key[0], key[2])] += serving * offer.gpus_per_node
            for (region, gpu_class), nodes in held.items():
                key = committed_price[(region, gpu_class)]
                record.dollars[CapacityType.COMMITTED] += (
                    nodes * self.offers[key].gpus_per_node * self.prices[key][k] * hours
                )
            for series_key, series in record.gpus.items():
                series.append(gpus_now.get(series_key, 0))
            record.all_on_demand_dollars += self._all_on_demand(k) * hours
        return record

    def _preempt(
        self,
        key: OfferKey,
        k: int,
        ends: int,
        running: dict[OfferKey, int],
        booting: dict[OfferKey, list[_Launch]],
        noticed: dict[OfferKey, list[list[int]]],
        record: Run,
        lost: dict[OfferKey, int],
    ) -> None:
        """Spot of ``key`` above the trace's cap now is taken back, booting nodes first."""
        cap = self._spot_cap(key, k)
        if cap is None:
            return
        queue = booting.get(key, [])
        excess = running.get(key, 0) + sum(launch.nodes for launch in queue if launch.granted) - cap
        for launch in reversed(queue):
            if excess <= 0:
                break
            if launch.granted:
                taken = min(launch.nodes, excess)
                launch.nodes -= taken
                excess -= taken
                record.spot_preemptions += taken
                record.node_changes += taken
                lost[key] += taken
        if queue:
            booting[key] = [launch for launch in queue if launch.nodes > 0]
        if excess > 0:
            running[key] -= excess
            noticed[key].append([ends, excess])
            record.spot_preemptions += excess
            lost[key] += excess

    def _land(
        self,
        k: int,
        running: dict[OfferKey, int],
        booting: dict[OfferKey, list[_Launch]],
        lost: dict[OfferKey, int],
        errors: dict[OfferKey, int],
    ) -> None:
        """Granted nodes whose provisioning delay has passed start running; refused launches fail."""
        for key, queue in booting.items():
            if not any(launch.at <= k for launch in queue):
                continue
            for launch in queue:
                if launch.at > k:
                    continue
                if launch.granted:
                    running[key] += launch.nodes
                else:
                    errors[key] += launch.nodes
                    lost[key] += launch.nodes
            booting[key] = [launch for launch in queue if launch.at > k]

    def _spot_cap(self, key: OfferKey, k: int) -> int | None:
        """Spot nodes of ``key`` the trace allows now in all; None where the trace sets no cap."""
        gpus = self.spot_gpus.get((key[0], key[1]))
        if gpus is None or math.isinf(gpus[k]):
            return None
        return int(gpus[k] // self.offers[key].gpus_per_node)

    def _apply(
        self,
        key: OfferKey,
        target: int,
        k: int,
        running: dict[OfferKey, int],
        booting: dict[OfferKey, list[_Launch]],
        held: Mapping[tuple[str, str], int],
        record: Run,
        delays: _Delays,
    ) -> None:
        if key not in self.offers:
            return
        if key[2] is CapacityType.COMMITTED:
            # Committed nodes are already bought and running: starting one is instant.
            target = min(target, held.get((key[0], key[1]), 0))
            record.node_changes += abs(target - running.get(key, 0))
            running[key] = target
            return
        queue = booting[key]
        have = running.get(key, 0) + sum(launch.nodes for launch in queue)
        if target > have:
            self._launch(key, target - have, k, running, queue, record, delays)
            return
        surplus = have - target
        while surplus > 0 and queue:  # cancel the newest launches first
            launch = queue[-1]
            cancel = min(launch.nodes, surplus)
            surplus -= cancel
            if launch.granted:
                record.node_changes += cancel
            if cancel == launch.nodes:
                queue.pop()
            else:
                launch.nodes -= cancel
        if surplus > 0:
            running[key] -= surplus
            record.node_changes += surplus

    def _launch(
        self,
        key: OfferKey,
        nodes: int,
        k: int,
        running: Mapping[OfferKey, int],
        queue: list[_Launch],
        record: Run,
        delays: _Delays,
    ) -> None:
        """Ask for ``nodes`` more of ``key``: spot beyond the trace's cap now is refused, unbilled."""
        granted = nodes
        if key[2] is CapacityType.SPOT:
            cap = self._spot_cap(key, k)
            if cap is not None:
                taken = running.get(key, 0) + sum(launch.nodes for launch in queue if launch.granted)
                granted = max(0, min(nodes, cap - taken))
            if nodes > granted:
                queue.append(_Launch(k + delays.spot_answer, nodes - granted, granted=False))
                record.spot_launch_failures += nodes - granted
        if granted:
            # The service ran before the trace began: what the policy wants at step 0 is up.
            delay = 0 if k == 0 else (delays.spot if key[2] is CapacityType.SPOT else delays.on_demand)
            queue.append(_Launch(k + delay, granted, granted=True))
            record.node_changes += granted

    def _serve(self, demand: Mapping[str, float], capacity: Mapping[str, float]) -> dict[str, float]:
        """Demand served per user region: a maximum flow over the pool's routes, home first (``core.serving``)."""
        regions = self.problem.regions
        in_order = {r: capacity.get(r, 0.0) for r in regions}  # ties go to the declared order
        return dict(serving.assign(demand, in_order, serving.routes_of(self.problem)).served)

    def _all_on_demand(self, k: int) -> float:
        """Dollars per hour to serve this step all on-demand, each region on its cheapest class."""
        total = 0.0
        for region in self.problem.regions:
            costs = [
                self.problem.nodes_needed(o, self.demand[region][k]) * o.gpus_per_node * self.prices[o.key][k]
                for o in self.problem.offers_in(region)
                if o.capacity_type is CapacityType.ON_DEMAND
            ]
            if costs:
                total += min(costs)
        return total
