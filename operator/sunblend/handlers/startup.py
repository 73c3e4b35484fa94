"""Starts the operator: metrics server, leader election, kopf settings, Kubernetes login, liveness probe.

``sunblend run`` calls ``run``. kopf's bookkeeping (handler progress and the last handled spec)
is kept in ``status.kopf``, not in the user's annotations. With leader election (the default),
the replica first waits for the leader Lease (``leader``), serving its liveness endpoint and
metrics meanwhile, and only then starts kopf; it exits if it loses the Lease, and releases it
when it stops. kopf's own peering (priority-based, derived here from the pod name) remains
available with ``--peering``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml
from kubernetes import client, config

from sunblend.actuate import drain, execute, routes, workloads
from sunblend.actuate import status as status_writer
from sunblend.actuate.providers import karpenter
from sunblend.actuate.providers import registry as providers
from sunblend.api.spec import ActuationMode, NodeProviderName
from sunblend.core import interruptions, nodes
from sunblend.handlers import commitments, consolidation, leader, memory, metrics, pool
from sunblend.loop import measure, reconcile
from sunblend.observe import prometheus, snapshot, watched


@dataclass(frozen=True)
class Options:
    """How to run the operator."""

    namespaces: Sequence[str] = ()
    clusterwide: bool = True
    standalone: bool = True
    peering_name: str = "sunblend"
    priority: int | None = None
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    metrics_port: int | None = 8080
    metrics_address: str = "0.0.0.0"
    capacity_type_rules: Path | None = None
    replan_seconds: float = pool.LOOP_SECONDS
    max_workers: int = 8
    prometheus: prometheus.PrometheusConfig | None = None
    actuation_mode: ActuationMode = ActuationMode.ADVISORY
    node_provider: NodeProviderName = NodeProviderName.NONE
    kwok_delay_seconds: float = 60.0
    gateway: routes.GatewayRef | None = None  # the Gateway the pools' HTTPRoutes attach to
    karpenter_node_class: karpenter.NodeClassRef | None = None  # the NodeClass sunblend's NodePools use
    interruption_rules: Path | None = None
    clock_offset_seconds: float = 0.0  # tests and demos move the operator's clock; 0 in production
    clock_speed: float = 1.0  # demos run it faster; 1 in production
    leader_election: bool = True  # act only while holding the leader Lease
    lease_name: str = leader.DEFAULT_LEASE_NAME
    lease_namespace: str | None = None  # None: the operator's namespace (leader.default_namespace)
    identity: str | None = None  # None: the pod's name, else hostname-pid (leader.default_identity)
    commitment_advice_hours: float = 24.0  # how often each pool's commitment advice is renewed; 0: never


def pod_priority(pod_name: str) -> int:
    """A priority unique to this pod (peers with equal priorities all freeze)."""
    return int(hashlib.sha256(pod_name.encode()).hexdigest()[:7], 16) + 1


def _rules(path: Path | None) -> tuple[nodes.CapacityTypeRule, ...]:
    if path is None:
        return nodes.DEFAULT_RULES
    return nodes.rules_from_config(yaml.safe_load(path.read_text()) or [])


def _interruption_rules(path: Path | None) -> tuple[interruptions.InterruptionRule, ...]:
    if path is None:
        return interruptions.DEFAULT_RULES
    return interruptions.rules_from_config(yaml.safe_load(path.read_text()) or [])


def clock(offset_seconds: float, speed: float = 1.0) -> Callable[[], dt.datetime]:
    """The operator's clock: the wall clock, moved by ``offset_seconds`` and run ``speed`` times faster
    from start-up (both for tests and demos only)."""
    started = dt.datetime.now(dt.UTC)
    origin = started + dt.timedelta(seconds=offset_seconds)
    return lambda: origin + (dt.datetime.now(dt.UTC) - started) * speed


class _CountingApiClient(client.ApiClient):
    """The Kubernetes API client, counting the requests that write (``sunblend_api_writes_total``)."""

    def call_api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
            metrics.API_WRITES.labels(method.upper()).inc()
        return super().call_api(method, *args, **kwargs)


def _login() -> None:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def _kubernetes(max_workers: int) -> client.ApiClient:
    """The operator's API client, with a connection for each thread that may use it at once: kopf's
    handler threads, the two snapshot readers' request threads (the steps' and the actuator's fresh reads),
    the fast loop's steps and the watches (a request beyond the pool's size opens, and then drops, a
    connection of its own)."""
    _login()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = (
        max_workers + 2 * snapshot.READ_CONCURRENCY + pool.LOOP_CONCURRENCY + watched.REFLECTORS
    )
    return _CountingApiClient(configuration)


def _configure(options: Options, identity: str) -> Any:
    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.lastHandledConfiguration")
        settings.posting.level = logging.WARNING  # our own events only, plus kopf's warnings
        settings.posting.reporting_component = "sunblend"
        settings.posting.reporting_instance = identity  # which replica posted an event
        settings.execution.max_workers = options.max_workers
        settings.watching.server_timeout = 300
        # kopf gives each pool a shallow copy of this memo: containers made here are shared by all
        # pools and the re-plan loop; a key first set in a pool's handler would stay in that copy.
        memo["pools"] = {}
        memo["clock"] = clock(options.clock_offset_seconds, options.clock_speed)
        api = _kubernetes(options.max_workers)
        rules = _rules(options.capacity_type_rules)
        interruption_rules = _interruption_rules(options.interruption_rules)
        shared = snapshot.SharedLists()
        # Steps read watch-fed records of pods, Deployments and nodes (cluster-wide watches, so only an
        # operator watching every namespace); the actuator re-reads the cluster before it writes.
        records = None
        if options.clusterwide and not options.namespaces:
            records = memo["watched"] = watched.Watched(api)
            records.start()
        reader = snapshot.SnapshotReader(api, rules, interruption_rules, shared, records)
        fresh = snapshot.SnapshotReader(api, rules, interruption_rules, shared)
        actuator = execute.Actuator(
            fresh.read,
            workloads.WorkloadWriter(client.AppsV1Api(api), client.PolicyV1Api(api)),
            drain.Drainer(client.CoreV1Api(api)),
            rules,
            providers.enabled(
                api,
                memo["clock"],
                dt.timedelta(seconds=options.kwok_delay_seconds),
                rules,
                options.karpenter_node_class,
            ),
            options.node_provider,
        )
        memo["services"] = reconcile.Services(
            snapshots=reader,
            metrics=None
            if options.prometheus is None
            else measure.MetricsReader(prometheus.PrometheusSource(options.prometheus)),
            actuator=actuator,
            default_mode=options.actuation_mode,
            default_provider=options.node_provider,
            routes=None
            if options.gateway is None
            else routes.RoutePublisher(routes.RouteWriter(client.CustomObjectsApi(api)), options.gateway),
        )
        writer = status_writer.StatusWriter(client.CustomObjectsApi(api), client.CoreV1Api(api))
        memo["replanner"] = pool.Replanner(memo, writer, interval=options.replan_seconds)
        memo["replanner"].start()
        memo["consolidation"] = consolidation.Adviser(memo, writer, interval=options.replan_seconds)
        memo["consolidation"].start()
        if options.prometheus is not None and options.commitment_advice_hours > 0:
            memo["commitments"] = commitments.CommitmentAdviser(
                memo,
                writer,
                commitments.PrometheusHistory(options.prometheus),
                every=dt.timedelta(hours=options.commitment_advice_hours),
                interval=options.replan_seconds,
            )
            memo["commitments"].start()

    @kopf.on.cleanup()
    def stop_replanner(memo: kopf.Memo, **_: Any) -> None:
        """Stop the background threads configure started: the passes, then the watches."""
        for started in ("replanner", "consolidation", "commitments", "watched"):
            thread = memo.get(started)
            if thread is not None:
                thread.stop()

    @kopf.on.probe(id="pools")
    def pools(**_: Any) -> int:
        return metrics.tracked_pools()

    return configure


def _lost_leadership() -> None:
    """Leave at once, as client-go's callers do: a handler still running must not write as a non-leader."""
    logging.shutdown()
    os._exit(1)


def _elect(options: Options, identity: str) -> leader.Elector | None:
    """Wait for the leader Lease, serving liveness meanwhile; None if told to stop first."""
    _login()
    namespace = options.lease_namespace or leader.default_namespace()
    store = leader.KubernetesLeases(client.CoordinationV1Api(client.ApiClient()), namespace, options.lease_name)
    elector = leader.Elector(store, identity)
    logging.getLogger(__name__).info("%s: waiting for Lease %s/%s", identity, namespace, options.lease_name)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with leader.following(options.liveness_endpoint, elector):
            if not elector.wait_until_leading(stop):
                return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elector.keep_leading(on_lost=_lost_leadership)
    return elector


def run(options: Options) -> None:
    """Run the operator until interrupted; with leader election, only while holding the Lease."""
    memory.tune_malloc()
    kopf.configure(debug=os.environ.get("SUNBLEND_DEBUG") == "1")  # kopf's plain log format on stderr, INFO and up
    identity = options.identity or leader.default_identity()
    _configure(options, identity)
    if options.metrics_port is not None:
        metrics.serve(options.metrics_port, options.metrics_address)
    metrics.LEADER.labels(identity).set(0 if options.leader_election else 1)
    memo = kopf.Memo()
    elector = None
    if options.leader_election:
        elector = _elect(options, identity)
        if elector is None:
            return
        memo["leading"] = elector.leading
    priority = options.priority
    if priority is None and not options.standalone:
        priority = pod_priority(os.environ.get("POD_NAME") or os.uname().nodename)
    settings = kopf.OperatorSettings()
    try:
        kopf.run(
            clusterwide=options.clusterwide and not options.namespaces,
            namespaces=list(options.namespaces),
            standalone=options.standalone,
            priority=priority,
            # Naming a peering makes it mandatory in kopf (it pauses until the peering CRD exists),
            # so a standalone operator names none.
            peering_name=None if options.standalone else options.peering_name,
            liveness_endpoint=options.liveness_endpoint,
            settings=settings,
            memo=memo,
        )
    finally:
        if elector is not None:
            settings.execution.executor.shutdown(wait=True)  # no handler still writing once the Lease is given up
            elector.release()
