"""One step of one InferencePool: observe → forecast → plan → consolidate → act → report. No kopf.

Called by the kopf handlers (on create, update and resume) and by the fast loop
(``handlers.pool.Replanner``) every 30 s. It reads the cluster once (a ``Snapshot``), reads
Prometheus, runs the decision engine (``core.policy``, the same code the simulator runs) with
the state stored in the pool's status, picks nodes to drain (``core.placement``), and in
Enforce mode hands the Commands to the actuator, which re-checks them against a fresh read
before writing. It returns the status patch and the events; the caller writes them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sunblend.actuate import drain, execute, manifests, workloads
from sunblend.api import constants, load, spec, status
from sunblend.api.spec import ActuationMode
from sunblend.core import commands, placement, policy, policy_state, problem, report, routing, snapshot
from sunblend.core.plan import Plan, SolveStatus
from sunblend.core.problem import OfferKey
from sunblend.loop import measure, merge, observation

# Status keys the operator owns; a merge patch sets absent ones to null so stale values go.
STATUS_KEYS = tuple(f.alias or name for name, f in status.InferencePoolStatus.model_fields.items() if name != "kopf")
# Keys derived from a plan: kept as they are on steps that make no new plan.
PLAN_KEYS = (
    "solveStatus",
    "plannedHour",
    "costDollarsPerHour",
    "onDemandCostDollarsPerHour",
    "savingsPercent",
    "horizonHours",
    "horizonCostDollars",
    "horizonOnDemandCostDollars",
    "horizonSavingsPercent",
    "gapPercent",
    "spotPercent",
    "costPerMillionTokensDollars",
    "current",
    "routes",
    "trafficWeights",
    "nextHours",
    "message",
)


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post about the pool."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """What a step decided: the status patch, events, the plan (for metrics) and the commands."""

    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    plan: Plan | None = None
    commands: tuple[commands.Command, ...] = ()


class SnapshotSource(Protocol):
    """Reads one Snapshot of the cluster for a pool (``observe.snapshot.SnapshotReader``)."""

    def read(self, pool: spec.InferencePool) -> snapshot.Snapshot: ...


class RoutePublisher(Protocol):
    """Owns the pool's HTTPRoutes (``actuate.routes.RoutePublisher``)."""

    def publish(
        self, pool: spec.InferencePool, uid: str, weights: Mapping[str, Sequence[tuple[str, int]]]
    ) -> list[str]: ...


class Actuator(Protocol):
    """Carries out Commands after re-checking them (``actuate.execute.Actuator``)."""

    def act(self, pool: spec.InferencePool, uid: str, decided: Sequence[commands.Command]) -> execute.Acted: ...

    def settle(self, pool: spec.InferencePool, view: snapshot.Snapshot, now: dt.datetime) -> list[str]: ...


@dataclass
class Services:
    """What a step reads and writes through: typed, instead of a bag of strings."""

    snapshots: SnapshotSource | None = None
    metrics: measure.MetricsReader | None = None
    actuator: Actuator | None = None
    routes: RoutePublisher | None = None  # None: no Gateway configured, weights go to status only
    default_mode: ActuationMode = ActuationMode.ADVISORY
    default_provider: spec.NodeProviderName = spec.NodeProviderName.NONE
    problems: dict[str, problem.BlendProblem] = field(default_factory=dict)  # per spec digest
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    stepped: dict[str, dt.datetime] = field(default_factory=dict)  # per pool uid: the decision time of its last step
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, uid: str) -> threading.Lock:
        """One lock per pool: the kopf handlers and the fast loop never act on a pool at once."""
        with self._guard:
            return self.locks.setdefault(uid, threading.Lock())

    def stepped_since(self, uid: str, since: dt.datetime) -> bool:
        """Whether the pool ``uid`` was stepped at or after ``since`` (by a handler or the fast loop)."""
        last = self.stepped.get(uid)
        return last is not None and last >= since

    def forget(self, uid: str) -> None:
        """Drop what is kept for a deleted pool: its lock and its last step."""
        with self._guard:
            self.locks.pop(uid, None)
            self.stepped.pop(uid, None)

    def problem(self, pool_spec: spec.InferencePoolSpec, now: dt.datetime) -> problem.BlendProblem:
        """The pool's planning problem (offers, routes, policy), built once per spec."""
        digest = hashlib.sha256(pool_spec.model_dump_json().encode()).hexdigest()
        found = self.problems.get(digest)
        if found is None:
            found = problem.from_spec(pool_spec, now)
            if len(self.problems) > 4096:
                self.problems.clear()
            self.problems[digest] = found
        return found


def _merge_conditions(previous: Sequence[Mapping[str, Any]], new: Sequence[status.Condition]) -> list[dict[str, Any]]:
    updated = {c.type: c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in new}
    merged = [updated.pop(c["type"], dict(c)) for c in previous if c.get("type")]
    return merged + list(updated.values())


def _invalid(body: Mapping[str, Any], error: load.InvalidPool, now: dt.datetime) -> Outcome:
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous_status = body.get("status") or {}
    message = str(error)
    events = (
        ()
        if previous_status.get("observedGeneration") == generation
        else (Event("Warning", report.REASON_INVALID, message),)
    )
    new = report.invalid_status(message, generation, now, previous_status.get("conditions") or [])
    patch: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    patch.update(new.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"kopf"}))
    return Outcome(patch, events)


def _measure(
    pool_spec: spec.InferencePoolSpec, view: snapshot.Snapshot, metrics: measure.MetricsReader | None, now: dt.datetime
) -> tuple[measure.Measurements | None, list[status.RegionObservation], report.MetricsState]:
    if metrics is None:
        return None, [], report.MetricsState(None)
    if not view.readable:
        return measure.Measurements(False, view.reason), [], report.MetricsState(False, view.reason)
    regions = [r.name for r in pool_spec.regions]
    measured = metrics.measure(regions, {n.name: n.region for n in view.nodes}, now)
    if not measured.available:
        return measured, [], report.MetricsState(False, measured.reason)
    observed = [
        status.RegionObservation(
            region=r,
            utilization_ratio=None if r not in measured.utilisation else round(measured.utilisation[r], 4),
            demand_tokens_per_second=None if r not in measured.demand else round(measured.demand[r], 1),
        )
        for r in regions
    ]
    return measured, observed, report.MetricsState(True)


def _capacity(
    targets: Mapping[OfferKey, int], view: snapshot.Snapshot, generation: int | None, now: dt.datetime, previous: Any
) -> status.Condition:
    kind = constants.CONDITION_CAPACITY_AVAILABLE
    if not view.readable:
        return report.condition(kind, None, report.REASON_NOT_OBSERVED, view.reason, generation, now, previous)
    present: dict[OfferKey, int] = {}
    for node in view.nodes:
        if node.ready and node.interruption is None:
            present[node.offer] = present.get(node.offer, 0) + 1
    missing = [
        f"{key[0]} {key[1]} {key[2].value}: {present.get(key, 0)}/{n} nodes"
        for key, n in sorted(targets.items())
        if present.get(key, 0) < n
    ]
    if missing:
        return report.condition(
            kind, False, report.REASON_CAPACITY_SHORT, "; ".join(missing), generation, now, previous
        )
    message = "every node wanted now is present"
    return report.condition(kind, True, report.REASON_CAPACITY_MET, message, generation, now, previous)


def _scale_ref(
    ref: spec.WorkloadRef, wanted: int, view: snapshot.Snapshot, where: str
) -> tuple[commands.Command | None, str | None]:
    """A ScaleWorkload for one user workload, or who owns its replicas instead."""
    owner = view.autoscaler_of(ref.kind, ref.name)
    if owner is not None:
        return None, (
            f"{owner.kind}/{owner.name} scales {ref.kind}/{ref.name}; sunblend recommends {wanted} replicas"
            f"{where} and leaves them to it"
        )
    found = view.workload(ref.kind, ref.name)
    if found is None or found.replicas == wanted:
        return None, None
    reason = f"the plan has room for {wanted} replicas{where}"
    return commands.ScaleWorkload(ref.kind, ref.name, wanted, found.replicas, reason), None


def _workload_commands(
    pool: spec.InferencePool,
    view: snapshot.Snapshot,
    decided: Sequence[commands.Command],
    targets: Mapping[OfferKey, int],
    replicas_per_node: Mapping[OfferKey, int],
) -> tuple[list[commands.Command], str | None]:
    """Slices for a template pool; ScaleWorkload for workloadRef(s). And who owns replicas, if not us."""
    server = pool.spec.model_server
    node_commands: list[commands.Command] = [c for c in decided if isinstance(c, commands.SetNodes)]
    if server.template is not None:
        slices = [c for c in decided if isinstance(c, commands.ScaleSlice)]

        def owner_of(command: commands.ScaleSlice) -> snapshot.AutoscalerView | None:
            return view.autoscaler_of("Deployment", manifests.slice_name(pool.metadata.name, command.offer))

        owned = [a for c in slices if (a := owner_of(c)) is not None]
        keep = [c for c in slices if owner_of(c) is None]
        if owned:
            names = ", ".join(f"{a.kind}/{a.name}" for a in owned)
            return [*node_commands, *keep], f"{names} scales slices of this pool; sunblend leaves their replicas alone"
        return [*node_commands, *slices], None
    per_region: dict[str, int] = {}
    for key, nodes in targets.items():
        per_region[key[0]] = per_region.get(key[0], 0) + nodes * replicas_per_node.get(key, 0)
    scaled: list[tuple[spec.WorkloadRef, int, str]] = []
    if server.workload_ref is not None:
        scaled.append((server.workload_ref, sum(per_region.values()), ""))
    scaled += [(ref, per_region.get(ref.region, 0), f" in {ref.region}") for ref in server.workload_refs]
    owners = []
    for ref, wanted, where in scaled:
        command, owner = _scale_ref(ref, wanted, view, where)
        if command is not None:
            node_commands.append(command)
        if owner is not None:
            owners.append(owner)
    return node_commands, "; ".join(owners) or None


def _workloads(
    pool: spec.InferencePool,
    view: snapshot.Snapshot,
    targets: Mapping[OfferKey, int],
    replicas_per_node: Mapping[OfferKey, int],
) -> list[dict[str, Any]]:
    """Each user workload's replicas next to what the plan has room for."""
    server = pool.spec.model_server
    if not view.readable:
        return []
    refs: list[tuple[spec.WorkloadRef, str | None]] = [(r, r.region) for r in server.workload_refs]
    if server.workload_ref is not None:
        refs.insert(0, (server.workload_ref, None))
    out = []
    for ref, region in refs:
        planned = sum(n * replicas_per_node.get(k, 0) for k, n in targets.items() if region in (None, k[0]))
        found = view.workload(ref.kind, ref.name)
        replicas = status.WorkloadReplicas(
            kind=ref.kind,
            name=ref.name,
            region=region,
            found=found is not None,
            replicas=None if found is None else found.replicas,
            ready_replicas=None if found is None else found.ready_replicas,
            planned_replicas=planned,
        )
        out.append(replicas.model_dump(mode="json", by_alias=True, exclude_none=True))
    return out


def _traffic(pool: spec.InferencePool, result: Plan) -> dict[str, list[tuple[str, int]]]:
    """Each user region's serving regions and their share this hour (empty without a solution)."""
    if not result.has_solution:
        return {}
    return routing.weights(result, 0, [r.name for r in pool.spec.regions])


def _plan_status(result: Plan, generation: int | None, now: dt.datetime, previous: Any) -> dict[str, Any]:
    new = report.planned_status(result, generation, now, previous, None)
    document = new.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"kopf"})
    out: dict[str, Any] = dict.fromkeys(PLAN_KEYS)
    out.update({k: v for k, v in document.items() if k in PLAN_KEYS})
    out["conditions"] = [c for c in document["conditions"] if c["type"] in ("Ready", "Planned")]
    return out


def _plan_events(before: Mapping[str, Any], after: Mapping[str, Any], result: Plan) -> list[Event]:
    if result.status is SolveStatus.INFEASIBLE:
        return (
            [Event("Warning", report.REASON_INFEASIBLE, result.message)]
            if before.get("message") != result.message
            else []
        )
    if result.status is SolveStatus.ERROR:
        return [Event("Warning", report.REASON_SOLVER_ERROR, result.message)]
    if before.get("current") == after.get("current"):
        return []
    gpus = result.gpus_by_capacity_type(0)
    summary = ", ".join(f"{g} {t.value}" for t, g in gpus.items() if g)
    return [
        Event(
            "Normal",
            "PlanChanged",
            f"{result.status.value} plan for {after.get('plannedHour')}: {summary} GPUs; {result.summary()}",
        )
    ]


def _recent_drains(previous: Mapping[str, Any], now: dt.datetime) -> list[dt.datetime]:
    out = []
    for text in (previous.get("actuation") or {}).get("drainsStarted") or []:
        try:
            at = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            continue
        if now - at < placement.HOUR:
            out.append(at)
    return out


def _time(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(
    body: Mapping[str, Any],
    now: dt.datetime,
    services: Services,
    spec_changed: bool | None = None,
) -> Outcome:
    """One step for the pool in ``body`` at ``now``. ``spec_changed`` None: judged from the generation."""
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous_status = body.get("status") or {}
    previous = previous_status.get("conditions") or []
    try:
        pool = load.parse_pool(body)
    except load.InvalidPool as error:
        return _invalid(body, error, now)
    uid = str(meta.get("uid") or "")
    with services.lock(uid):
        outcome = _step(pool, uid, generation, previous_status, previous, now, services, spec_changed)
        if uid:
            services.stepped[uid] = now
        return outcome


def _step(
    pool: spec.InferencePool,
    uid: str,
    generation: int | None,
    previous_status: Mapping[str, Any],
    previous: Any,
    now: dt.datetime,
    services: Services,
    spec_changed: bool | None,
) -> Outcome:
    events: list[Event] = []
    try:
        state = policy_state.from_document(previous_status.get("policyState"))
    except policy_state.UnreadableState as error:
        state = policy.State()
        events.append(Event("Warning", "PolicyStateReset", f"{error}; starting from a fresh state"))
    if spec_changed is None:
        spec_changed = previous_status.get("observedGeneration") != generation
    if services.snapshots is None:
        view = snapshot.Snapshot(readable=False, reason="no cluster to observe")
    else:
        view = services.snapshots.read(pool)
    measured, observed, metrics_state = _measure(pool.spec, view, services.metrics, now)
    if metrics_state.available is False:  # keep what was last measured, never zero it
        observed = [status.RegionObservation.model_validate(o) for o in previous_status.get("observed") or []]
    base = services.problem(pool.spec, now)
    previous_actuation = previous_status.get("actuation") or {}
    wanted = {**state.planned, **{k: n + state.planned.get(k, 0) for k, n in state.surge.items()}}
    seen = observation.build(pool, base, view, measured, previous_actuation.get("spotNodes") or [], now, wanted)
    decision = policy.decide(pool.spec, base, seen, state, replan=spec_changed)
    events += [Event(e.type, e.reason, e.message) for e in decision.events]
    replicas_per_node = {o.key: o.replicas_per_node for o in base.offers}
    decided, owner = _workload_commands(pool, view, decision.commands, decision.targets, replicas_per_node)
    draining = list(previous_actuation.get("draining") or [])
    if view.readable and uid:  # a drain whose status write was lost (a crash after the cordon): its node says so
        draining += [
            n.name
            for n in view.nodes
            if n.unschedulable and n.labels.get(drain.DRAINING_LABEL) == uid and n.name not in draining
        ]
    recent = _recent_drains(previous_status, now)
    consolidation = placement.Consolidation((), tuple(draining))
    if view.readable:
        consolidation = placement.drains(pool.spec, view, decision.targets, replicas_per_node, draining, recent, now)
    decided += list(consolidation.commands)
    decided = commands.ordered(decided)
    mode = pool.spec.actuation.mode or services.default_mode
    acted = execute.Acted()
    if mode is ActuationMode.ENFORCE and services.actuator is not None and view.readable:
        try:
            settled = services.actuator.settle(pool, view, now)
        except workloads.ActuationFailed as error:
            settled = [f"settling the node provider failed: {error}"]
        acted = services.actuator.act(pool, uid, decided)
        acted = dataclasses.replace(acted, done=(*settled, *acted.done))
    started = [c.node for c in decided if isinstance(c, commands.Cordon) and any(c.node in d for d in acted.done)]
    recent += [now] * len(started)
    still_draining = [n for n in consolidation.draining if n not in acted.drained]
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "observed": [o.model_dump(mode="json", by_alias=True, exclude_none=True) for o in observed],
        "policyState": merge.diff(previous_status.get("policyState"), policy_state.to_document(decision.state)),
        "throughput": [
            {
                "region": r,
                "measuredTokensPerSecond": round(v, 1),
                "declaredTokensPerSecond": pool.spec.model_server.tokens_per_second_per_replica,
            }
            for r, v in sorted(decision.state.throughput.items())
        ],
        "actuation": status.Actuation(
            mode=mode.value,
            node_provider=(pool.spec.actuation.node_provider or services.default_provider).value,
            decided_at=_time(now),
            commands=[status.CommandStatus.model_validate(commands.to_document(c)) for c in decided],
            draining=still_draining,
            drains_started=[_time(at) for at in recent],
            spot_nodes=observation.spot_nodes(view)
            if view.readable
            else list(previous_actuation.get("spotNodes") or []),
        ).model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    conditions: list[status.Condition] = [
        _capacity(decision.targets, view, generation, now, previous),
        metrics_state.condition(generation, now, previous),
        _acting(mode, acted, owner, generation, now, previous),
        _drain_blocked(acted, consolidation, generation, now, previous),
    ]
    if decision.plan is not None:
        plan_patch = _plan_status(decision.plan, generation, now, previous)
        weights = _traffic(pool, decision.plan)
        plan_patch["trafficWeights"] = [
            {"userRegion": user, "backends": [{"region": r, "weight": w} for r, w in shares]}
            for user, shares in sorted(weights.items())
        ]
        if mode is ActuationMode.ENFORCE and services.routes is not None and decision.plan.has_solution:
            try:
                published = services.routes.publish(pool, uid, weights)
                events += [Event("Normal", constants.REASON_ROUTES_PUBLISHED, text) for text in published]
            except workloads.ActuationFailed as error:
                events.append(Event("Warning", constants.REASON_ACTUATION_FAILED, f"publishing routes: {error}"))
        conditions = [status.Condition.model_validate(c) for c in plan_patch.pop("conditions")] + conditions
        patch.update(plan_patch)
        events += _plan_events(previous_status, plan_patch, decision.plan)
    patch["conditions"] = _merge_conditions(previous, conditions)
    documents = _workloads(pool, view, decision.targets, replicas_per_node)
    single = pool.spec.model_server.workload_ref is not None
    patch["workload"] = documents[0] if single and documents else None
    patch["workloads"] = documents[1:] if single else documents
    events += _acting_events(previous_status, acted, owner)
    for warning in policy.throughput_warnings(pool.spec, decision.state):
        if warning not in (previous_status.get("message") or ""):
            events.append(Event("Warning", constants.REASON_THROUGHPUT_DIFFERS, warning))
    return Outcome(patch, tuple(events), decision.plan, tuple(decided))


def _acting(
    mode: ActuationMode,
    acted: execute.Acted,
    owner: str | None,
    generation: int | None,
    now: dt.datetime,
    previous: Any,
) -> status.Condition:
    kind = constants.CONDITION_ACTING
    if owner is not None:
        return report.condition(kind, False, constants.REASON_OWNED_BY_AUTOSCALER, owner, generation, now, previous)
    if mode is ActuationMode.ADVISORY:
        message = "Advisory mode: status.actuation.commands lists what Enforce would do; nothing is written"
        return report.condition(kind, False, constants.REASON_ADVISORY, message, generation, now, previous)
    if acted.failed:
        return report.condition(
            kind, False, constants.REASON_ACTUATION_FAILED, "; ".join(acted.failed)[:2000], generation, now, previous
        )
    parts = [f"{len(acted.done)} command(s) carried out"]
    if acted.stale:
        parts.append(f"{len(acted.stale)} stale, dropped and decided again next step")
    if acted.left_to_autoscaler:
        parts.append(f"{len(acted.left_to_autoscaler)} node change(s) left to the cluster's autoscaler")
    return report.condition(kind, True, constants.REASON_ENFORCING, "; ".join(parts), generation, now, previous)


def _drain_blocked(
    acted: execute.Acted,
    consolidation: placement.Consolidation,
    generation: int | None,
    now: dt.datetime,
    previous: Any,
) -> status.Condition:
    kind = constants.CONDITION_DRAIN_BLOCKED
    if acted.blocked:
        message = "; ".join(acted.blocked) + "; waiting, no pod is force-deleted"
        return report.condition(kind, True, constants.REASON_DRAIN_BLOCKED, message[:2000], generation, now, previous)
    if consolidation.held:
        message = "; ".join(consolidation.held)
        return report.condition(kind, True, "DrainHeld", message[:2000], generation, now, previous)
    return report.condition(kind, False, "NothingBlocked", "no drain is held back", generation, now, previous)


def _acting_events(previous_status: Mapping[str, Any], acted: execute.Acted, owner: str | None) -> list[Event]:
    draining = ("Cordon", "Drain")
    events = [Event("Normal", constants.REASON_SCALED, text) for text in acted.done if not text.startswith(draining)]
    events += [Event("Normal", constants.REASON_DRAINING, text) for text in acted.done if text.startswith(draining)]
    events += [Event("Warning", constants.REASON_DRAIN_BLOCKED, text) for text in acted.blocked]
    events += [Event("Warning", constants.REASON_ACTUATION_FAILED, text) for text in acted.failed]
    events += [Event("Normal", constants.REASON_STALE_COMMAND, text) for text in acted.stale]
    before: Mapping[str, Any] = next(
        (c for c in previous_status.get("conditions") or [] if c.get("type") == constants.CONDITION_ACTING), {}
    )
    if owner is not None and before.get("message") != owner:
        events.append(Event("Warning", constants.REASON_OWNED_BY_AUTOSCALER, owner))
    return events
