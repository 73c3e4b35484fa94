"""Reads the cluster snapshot a reconcile needs: GPU nodes by label selector, workload replicas.

Never watches Nodes (kopf would list the whole cluster): it lists only the nodes matching each
GPU class's selector, and shares the answer between pools for ``ttl_seconds``. Synchronous (the
kubernetes client is): kopf runs the handlers that call it in its thread pool. Read-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from kubernetes import client
from kubernetes.client.exceptions import ApiException


class ClusterUnavailable(Exception):
    """The API server could not be read; try again later."""


class NodeReader:
    """Lists node labels for a label selector, caching each answer for ``ttl_seconds``."""

    def __init__(
        self, api: client.CoreV1Api, ttl_seconds: float = 15.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._api = api
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, list[tuple[str, dict[str, str]]]]] = {}
        self._lock = threading.Lock()

    def labels(self, selector: Mapping[str, str]) -> list[dict[str, str]]:
        """Labels of every node that has all of ``selector``'s labels."""
        return [labels for _, labels in self.nodes(selector)]

    def nodes(self, selector: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
        """(name, labels) of every node that has all of ``selector``'s labels."""
        key = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[1]
        try:
            nodes = self._api.list_node(label_selector=key, _request_timeout=10)
        except ApiException as error:
            raise ClusterUnavailable(f"listing nodes ({key}) failed: {error.status} {error.reason}") from error
        except OSError as error:
            raise ClusterUnavailable(f"listing nodes ({key}) failed: {error}") from error
        found = [
            ((n.metadata.name if n.metadata else None) or "", dict((n.metadata.labels if n.metadata else None) or {}))
            for n in nodes.items
        ]
        with self._lock:
            self._cache[key] = (now, found)
        return found


class WorkloadReader:
    """Reads the replicas of a pool's model-server workload (Deployment or StatefulSet)."""

    def __init__(self, apps: client.AppsV1Api) -> None:
        self._apps = apps

    def replicas(self, namespace: str, kind: str, name: str) -> tuple[int, int] | None:
        """(desired, ready) replicas, or None when the workload does not exist."""
        read = (
            self._apps.read_namespaced_deployment if kind == "Deployment" else self._apps.read_namespaced_stateful_set
        )
        try:
            workload = read(name, namespace, _request_timeout=10)
        except ApiException as error:
            if error.status == 404:
                return None
            raise ClusterUnavailable(
                f"reading {kind} {namespace}/{name} failed: {error.status} {error.reason}"
            ) from error
        except OSError as error:
            raise ClusterUnavailable(f"reading {kind} {namespace}/{name} failed: {error}") from error
        desired = workload.spec.replicas if workload.spec and workload.spec.replicas is not None else 1
        ready = (workload.status.ready_replicas if workload.status else None) or 0
        return desired, ready
