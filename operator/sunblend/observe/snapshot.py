"""Reads one ``core.snapshot.Snapshot`` of a pool from the API server: its nodes, pods, workloads, autoscalers, PDBs.

The reconcile loop calls ``SnapshotReader.read`` once per pool and visit, then runs the pure
stages on the answer. Nodes are listed only by each GPU class's selector (never the whole
cluster); pods and Deployments by the pool's labels; the pool's user workloads by name. The
operator's steps read the nodes and the pool's pods and Deployments from watch-fed records
instead (``observe.watched``) while those are synced; the actuator's re-check always lists. The
lists that cannot be narrowed to one pool (PodDisruptionBudgets, HorizontalPodAutoscalers, KEDA
ScaledObjects of the namespace) are shared by every pool of the namespace through
``SharedLists``: each is listed at most once per ``SHARED_LIST_MAX_AGE_SECONDS``, so a
namespace of N pools costs one list per interval, not N (the Eviction API still enforces every
budget at the moment of a drain). The requests of one read run concurrently. When the API server
cannot be read the snapshot says so (``readable=False`` and the first failure in a fixed order)
rather than raising or guessing: callers do nothing on missing data. The object-to-view
conversions are plain functions, tested without a cluster. Read-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol, TypeVar, cast

import urllib3
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from sunblend.api import constants, spec
from sunblend.core import interruptions, nodes, snapshot
from sunblend.observe import cluster

REQUEST_TIMEOUT_SECONDS: Final = 10
KEDA_GROUP: Final = "keda.sh"
KEDA_VERSION: Final = "v1alpha1"
KEDA_PLURAL: Final = "scaledobjects"
# How old a namespace-wide list (budgets, autoscalers) a read may use: a few seconds, well inside
# the fast loop's 30 s pass, so each pass lists them a handful of times whatever the pool count.
SHARED_LIST_MAX_AGE_SECONDS: Final = 5.0
# Requests in flight at once for all the reads of one reader (a read sends 3 to 6); the API
# client's connection pool should hold this many besides its other callers' (``startup``).
READ_CONCURRENCY: Final = 8

_T = TypeVar("_T")
_parse_quantity = cast(Callable[[str], Decimal], utils.parse_quantity)


def _done(value: _T) -> futures.Future[_T]:
    """``value`` as a finished future, beside the reads still in flight."""
    done: futures.Future[_T] = futures.Future()
    done.set_result(value)
    return done


class NotFound(cluster.ClusterUnavailable):
    """The object, or its kind (a CRD that is not installed), does not exist: a 404."""


# ---- conversions: kubernetes objects to plain views (pure) ----------------------------------


def selector_text(labels: Mapping[str, str]) -> str:
    """A label selector for the API's ``labelSelector`` parameter: ``k=v,...`` in key order."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def label_selector_text(selector: client.V1LabelSelector | None) -> str:
    """A ``V1LabelSelector`` (matchLabels and matchExpressions) as ``labelSelector`` text; "" if empty."""
    if selector is None:
        return ""
    terms = [selector_text(selector.match_labels)] if selector.match_labels else []
    for requirement in selector.match_expressions or []:
        values = ",".join(sorted(requirement.values or []))
        terms.append(
            {
                "In": f"{requirement.key} in ({values})",
                "NotIn": f"{requirement.key} notin ({values})",
                "Exists": requirement.key,
                "DoesNotExist": f"!{requirement.key}",
            }[requirement.operator]
        )
    return ",".join(terms)


def gpu_count(quantity: str | None) -> int:
    """A whole-number resource quantity (GPUs): "8" is 8; absent or malformed is 0."""
    if quantity is None:
        return 0
    try:
        return int(_parse_quantity(quantity))
    except (ArithmeticError, ValueError):
        return 0


def taints(node: client.V1Node) -> list[dict[str, str]]:
    """The node's taints as ``{key, value, effect}`` mappings (value "" when absent)."""
    found = node.spec.taints if node.spec is not None else None
    return [{"key": t.key, "value": t.value or "", "effect": t.effect} for t in found or []]


def _condition_true(conditions: Iterable[client.V1NodeCondition | client.V1PodCondition] | None, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions or [])


@dataclass(frozen=True)
class NodeRecord:
    """What a pool reads of a node, kept without the pool: its labels and state (``node_record``)."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    unschedulable: bool
    taints: tuple[Mapping[str, str], ...]
    gpus: int


def node_record(node: client.V1Node) -> NodeRecord:
    """A node's labels and state; a node still provisioning (sunblend's kwok provider taints it until its
    delay has passed) is booting, not ready, whatever its Ready condition says."""
    found = taints(node)
    status = node.status
    return NodeRecord(
        name=(node.metadata.name if node.metadata is not None else None) or "",
        labels=dict(node.metadata.labels or {}) if node.metadata is not None else {},
        ready=_condition_true(status.conditions if status is not None else None, "Ready")
        and not any(t.get("key") == constants.PROVISIONING_TAINT for t in found),
        unschedulable=bool(node.spec is not None and node.spec.unschedulable),
        taints=tuple(found),
        gpus=gpu_count((status.allocatable or {}).get(constants.GPU_RESOURCE) if status is not None else None),
    )


def record_view(
    record: NodeRecord,
    pool_spec: spec.InferencePoolSpec,
    capacity_rules: Iterable[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
    interruption_rules: Iterable[interruptions.InterruptionRule] = interruptions.DEFAULT_RULES,
) -> snapshot.NodeView | None:
    """The node as the pool sees it; None when it is in no declared region or no GPU class selects it."""
    labels = dict(record.labels)
    region = labels.get(constants.REGION_LABEL)
    if region is None or region not in {r.name for r in pool_spec.regions}:
        return None
    gpu_class = next((g for g in pool_spec.gpu_classes if nodes.selects(g, labels)), None)
    if gpu_class is None:
        return None
    return snapshot.NodeView(
        name=record.name,
        region=region,
        gpu_class=gpu_class.name,
        capacity_type=nodes.capacity_type(labels, capacity_rules),
        ready=record.ready,
        unschedulable=record.unschedulable,
        interruption=interruptions.signal(record.taints, interruption_rules),
        gpus=record.gpus,
        labels=labels,
    )


def node_view(
    node: client.V1Node,
    pool_spec: spec.InferencePoolSpec,
    capacity_rules: Iterable[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
    interruption_rules: Iterable[interruptions.InterruptionRule] = interruptions.DEFAULT_RULES,
) -> snapshot.NodeView | None:
    """The node as the pool sees it; None when it is in no declared region or no GPU class selects it."""
    return record_view(node_record(node), pool_spec, capacity_rules, interruption_rules)


def _gpus_requested(container: client.V1Container) -> int:
    resources = container.resources
    if resources is None:
        return 0
    # The API server copies limits into absent requests for extended resources; read either.
    quantity = (resources.requests or {}).get(constants.GPU_RESOURCE) or (resources.limits or {}).get(
        constants.GPU_RESOURCE
    )
    return gpu_count(quantity)


def pod_gpus(pod_spec: client.V1PodSpec | None) -> int:
    """GPUs the pod holds: its containers and sidecars, or its largest init container if that is more."""
    if pod_spec is None:
        return 0
    init = pod_spec.init_containers or []
    sidecars = sum(_gpus_requested(c) for c in init if c.restart_policy == "Always")
    running = sum(_gpus_requested(c) for c in pod_spec.containers) + sidecars
    return max([running, *(_gpus_requested(c) for c in init if c.restart_policy != "Always")])


def pod_view(pod: client.V1Pod) -> snapshot.PodView:
    """One pod of the pool's model server."""
    metadata = pod.metadata or client.V1ObjectMeta()
    labels = metadata.labels or {}
    annotations = metadata.annotations or {}
    return snapshot.PodView(
        name=metadata.name or "",
        node=(pod.spec.node_name if pod.spec is not None else None) or None,
        slice_name=labels.get(constants.SLICE_LABEL),
        ready=_condition_true(pod.status.conditions if pod.status is not None else None, "Ready"),
        gpus=pod_gpus(pod.spec),
        do_not_disrupt=annotations.get(constants.DO_NOT_DISRUPT_ANNOTATION) == "true"
        or annotations.get(constants.SAFE_TO_EVICT_ANNOTATION) == "false",
        deleting=metadata.deletion_timestamp is not None,
    )


def owned_by(metadata: client.V1ObjectMeta | None, pool_name: str) -> bool:
    """Whether the object has an ownerReference to the InferencePool called ``pool_name``."""
    references = (metadata.owner_references if metadata is not None else None) or []
    return any(
        r.kind == constants.KIND and r.name == pool_name and r.api_version.split("/")[0] == constants.GROUP
        for r in references
    )


def workload_view(workload: client.V1Deployment | client.V1StatefulSet, pool_name: str) -> snapshot.WorkloadView:
    """A Deployment or StatefulSet; ``spec.replicas`` absent counts as the API's default of 1."""
    metadata = workload.metadata or client.V1ObjectMeta()
    replicas = workload.spec.replicas if workload.spec is not None else None
    return snapshot.WorkloadView(
        kind="Deployment" if isinstance(workload, client.V1Deployment) else "StatefulSet",
        name=metadata.name or "",
        replicas=1 if replicas is None else replicas,
        ready_replicas=(workload.status.ready_replicas if workload.status is not None else None) or 0,
        resource_version=metadata.resource_version or "",
        labels=dict(metadata.labels or {}),
        owned_by_pool=owned_by(metadata, pool_name),
    )


def hpa_view(hpa: client.V2HorizontalPodAutoscaler) -> snapshot.AutoscalerView:
    """An HPA and the workload it scales."""
    target = hpa.spec.scale_target_ref
    return snapshot.AutoscalerView(
        kind="HorizontalPodAutoscaler",
        name=(hpa.metadata.name if hpa.metadata is not None else None) or "",
        target_kind=target.kind,
        target_name=target.name,
    )


def scaled_object_view(scaled_object: object) -> snapshot.AutoscalerView | None:
    """A KEDA ScaledObject (a plain mapping) and what it scales; None when it names no target."""
    if not isinstance(scaled_object, Mapping):
        return None
    metadata = scaled_object.get("metadata")
    object_spec = scaled_object.get("spec")
    target = object_spec.get("scaleTargetRef") if isinstance(object_spec, Mapping) else None
    if not isinstance(target, Mapping) or not target.get("name"):
        return None
    return snapshot.AutoscalerView(
        kind="ScaledObject",
        name=str(metadata.get("name", "")) if isinstance(metadata, Mapping) else "",
        target_kind=str(target.get("kind") or "Deployment"),
        target_name=str(target["name"]),
    )


def budget_view(budget: client.V1PodDisruptionBudget) -> snapshot.BudgetView:
    """A PDB; no status yet (its controller has not counted) means no disruption is allowed."""
    selector = budget.spec.selector if budget.spec is not None else None
    return snapshot.BudgetView(
        name=(budget.metadata.name if budget.metadata is not None else None) or "",
        selector=dict((selector.match_labels if selector is not None else None) or {}),
        disruptions_allowed=(budget.status.disruptions_allowed if budget.status is not None else None) or 0,
    )


# ---- the reader ------------------------------------------------------------------------------


def _call(what: str, request: Callable[..., _T], *args: object, **kwargs: object) -> _T:
    """Make one API request with the standard timeout; failures become ``ClusterUnavailable``."""
    try:
        return request(*args, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
    except ApiException as error:
        failure = NotFound if error.status == 404 else cluster.ClusterUnavailable
        raise failure(f"{what} failed: the API server answered {error.status} {error.reason}") from error
    except (OSError, urllib3.exceptions.HTTPError) as error:
        cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
        raise cluster.ClusterUnavailable(f"{what} failed: the API server could not be reached: {cause}") from error
    except ValueError as error:  # an answer the client could not decode
        raise cluster.ClusterUnavailable(f"{what} failed: the answer could not be read: {error}") from error


class SharedLists:
    """Namespace-wide lists shared by every pool's read, each kept at most ``max_age_seconds``.

    One caller at a time fetches a given list; callers arriving meanwhile wait for its answer
    rather than asking the API server again. A failed fetch is not kept: the next caller retries.
    Its age counts from the start of the fetch. Holds one entry per (list, namespace).
    """

    def __init__(
        self, max_age_seconds: float = SHARED_LIST_MAX_AGE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_age = max_age_seconds
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._kept: dict[tuple[str, str], tuple[float, object]] = {}

    def get(self, what: str, namespace: str, fetch: Callable[[], _T]) -> _T:
        """The list ``what`` of ``namespace``: kept if young enough, else ``fetch()``ed and kept."""
        key = (what, namespace)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            kept = self._kept.get(key)
            if kept is not None and self._clock() - kept[0] <= self._max_age:
                return cast(_T, kept[1])
            started = self._clock()
            value = fetch()
            self._kept[key] = (started, value)
            return value


class Records(Protocol):
    """Watch-fed records of pods, Deployments and nodes (``observe.watched.Watched``)."""

    @property
    def synced(self) -> bool: ...

    def pool_pods(self, namespace: str, pool: str) -> list[snapshot.PodView]: ...

    def pool_workloads(self, namespace: str, pool: str) -> list[snapshot.WorkloadView]: ...

    def nodes_selected(self, labels: Mapping[str, str]) -> list[NodeRecord]: ...


class SnapshotReader:
    """Reads a pool's ``Snapshot`` through one API client; the rules map node labels and taints to meaning.

    ``shared``: the namespace-wide lists, kept between reads (a fresh ``SharedLists`` if None).
    ``records``: watch-fed records of the pool's pods and Deployments and of the nodes, read instead
    of listing them while they are synced (None: always list; the actuator's fresh reads list).
    Thread-safe: the kopf handlers and the fast loop read through one reader.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        capacity_rules: Sequence[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
        interruption_rules: Sequence[interruptions.InterruptionRule] = interruptions.DEFAULT_RULES,
        shared: SharedLists | None = None,
        records: Records | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._policy = client.PolicyV1Api(api_client)
        self._autoscaling = client.AutoscalingV2Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._capacity_rules = tuple(capacity_rules)
        self._interruption_rules = tuple(interruption_rules)
        self._shared = shared if shared is not None else SharedLists()
        self._records = records
        self._requests = futures.ThreadPoolExecutor(READ_CONCURRENCY, thread_name_prefix="sunblend-read")

    def read(self, pool: spec.InferencePool) -> snapshot.Snapshot:
        """Everything the pure stages need about ``pool``, or ``readable=False`` and why not."""
        try:
            return self._read(pool)
        except cluster.ClusterUnavailable as error:
            return snapshot.Snapshot(readable=False, reason=str(error))

    def close(self) -> None:
        """Stop the request threads (reads after this fail)."""
        self._requests.shutdown(wait=True)

    def _read(self, pool: spec.InferencePool) -> snapshot.Snapshot:
        namespace, name = pool.metadata.namespace, pool.metadata.name
        server = pool.spec.model_server
        refs = [server.workload_ref] if server.workload_ref is not None else []
        submit = self._requests.submit
        records = self._records if self._records is not None and self._records.synced else None
        # Submitted in the order a failure is reported in; each task is one request or a read then a list.
        if records is None:
            pool_workloads = submit(self._pool_workloads, namespace, name)
            pool_pods = submit(self._pods, namespace, selector_text({constants.POOL_LABEL: name}))
        else:
            pool_workloads = _done(records.pool_workloads(namespace, name))
            pool_pods = _done(records.pool_pods(namespace, name))
        ref_reads = [submit(self._workload_and_pods, namespace, name, ref) for ref in [*refs, *server.workload_refs]]
        node_views = (
            submit(self._nodes, pool.spec) if records is None else _done(self._recorded_nodes(records, pool.spec))
        )
        autoscalers = submit(self._shared.get, "autoscalers", namespace, lambda: self._autoscalers(namespace))
        budgets = submit(self._shared.get, "budgets", namespace, lambda: self._budgets(namespace))
        every: list[futures.Future[Any]] = [pool_workloads, pool_pods, *ref_reads, node_views, autoscalers, budgets]
        futures.wait(every)
        for done in every:
            done.result()  # the first failure, in submission order
        workloads = {(w.kind, w.name): w for w in pool_workloads.result()}
        pods = pool_pods.result()
        for ref, ref_read in zip([*refs, *server.workload_refs], ref_reads, strict=True):
            found, found_pods = ref_read.result()
            if found is not None:
                workloads.setdefault((ref.kind, ref.name), found)
                pods += found_pods
        return snapshot.Snapshot(
            nodes=node_views.result(),
            pods=tuple(sorted({p.name: p for p in pods}.values(), key=lambda p: p.name)),
            workloads=tuple(workloads[key] for key in sorted(workloads)),
            autoscalers=autoscalers.result(),
            budgets=budgets.result(),
        )

    def _workload_and_pods(
        self, namespace: str, pool_name: str, ref: spec.WorkloadRef
    ) -> tuple[snapshot.WorkloadView | None, list[snapshot.PodView]]:
        """A user workload named by the pool, and the pods its selector selects; (None, []) if absent."""
        found = self._workload(namespace, ref.kind, ref.name)
        if found is None:
            return None, []
        selector = label_selector_text(found.spec.selector if found.spec is not None else None)
        return workload_view(found, pool_name), self._pods(namespace, selector) if selector else []

    def _nodes(self, pool_spec: spec.InferencePoolSpec) -> tuple[snapshot.NodeView, ...]:
        found: dict[str, snapshot.NodeView] = {}
        for selector in dict.fromkeys(selector_text(g.node_selector) for g in pool_spec.gpu_classes if g.node_selector):
            listed = _call(f"listing nodes ({selector})", self._core.list_node, label_selector=selector)
            for node in listed.items:
                view = node_view(node, pool_spec, self._capacity_rules, self._interruption_rules)
                if view is not None:
                    found[view.name] = view
        return tuple(found[n] for n in sorted(found))

    def _recorded_nodes(self, records: Records, pool_spec: spec.InferencePoolSpec) -> tuple[snapshot.NodeView, ...]:
        found: dict[str, snapshot.NodeView] = {}
        for gpu_class in pool_spec.gpu_classes:
            for record in records.nodes_selected(gpu_class.node_selector) if gpu_class.node_selector else []:
                view = record_view(record, pool_spec, self._capacity_rules, self._interruption_rules)
                if view is not None:
                    found[view.name] = view
        return tuple(found[n] for n in sorted(found))

    def _pods(self, namespace: str, selector: str) -> list[snapshot.PodView]:
        listed = _call(
            f"listing pods ({selector}) in namespace {namespace}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return [pod_view(p) for p in listed.items]

    def _pool_workloads(self, namespace: str, pool_name: str) -> list[snapshot.WorkloadView]:
        selector = selector_text({constants.POOL_LABEL: pool_name})
        listed = _call(
            f"listing Deployments ({selector}) in namespace {namespace}",
            self._apps.list_namespaced_deployment,
            namespace,
            label_selector=selector,
        )
        return [workload_view(d, pool_name) for d in listed.items]

    def _workload(self, namespace: str, kind: str, name: str) -> client.V1Deployment | client.V1StatefulSet | None:
        read: Callable[..., client.V1Deployment | client.V1StatefulSet] = (
            self._apps.read_namespaced_deployment if kind == "Deployment" else self._apps.read_namespaced_stateful_set
        )
        try:
            return _call(f"reading {kind} {namespace}/{name}", read, name, namespace)
        except NotFound:
            return None

    def _autoscalers(self, namespace: str) -> tuple[snapshot.AutoscalerView, ...]:
        hpas = _call(
            f"listing HorizontalPodAutoscalers in namespace {namespace}",
            self._autoscaling.list_namespaced_horizontal_pod_autoscaler,
            namespace,
        )
        views: list[snapshot.AutoscalerView | None] = [hpa_view(h) for h in hpas.items]
        try:
            scaled = _call(
                f"listing KEDA ScaledObjects in namespace {namespace}",
                self._custom.list_namespaced_custom_object,
                KEDA_GROUP,
                KEDA_VERSION,
                namespace,
                KEDA_PLURAL,
            )
        except NotFound:  # KEDA is not installed: no ScaledObjects
            scaled = {}
        items = scaled.get("items") if isinstance(scaled, Mapping) else None
        if isinstance(items, list):
            views += [scaled_object_view(s) for s in items]
        found = [v for v in views if v is not None]
        return tuple(sorted(found, key=lambda v: (v.kind, v.name)))

    def _budgets(self, namespace: str) -> tuple[snapshot.BudgetView, ...]:
        listed = _call(
            f"listing PodDisruptionBudgets in namespace {namespace}",
            self._policy.list_namespaced_pod_disruption_budget,
            namespace,
        )
        return tuple(sorted((budget_view(b) for b in listed.items), key=lambda b: b.name))
