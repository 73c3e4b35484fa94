"""Reads GPU nodes from the Kubernetes API, by label selector, with a short-lived cache.

Never watches Nodes (kopf would list the whole cluster): it lists only the nodes matching each
GPU class's selector, and shares the answer between pools for ``ttl_seconds``. Synchronous (the
kubernetes client is): the handlers call it from an executor. Read-only.
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
        self._cache: dict[str, tuple[float, list[dict[str, str]]]] = {}
        self._lock = threading.Lock()

    def labels(self, selector: Mapping[str, str]) -> list[dict[str, str]]:
        """Labels of every node that has all of ``selector``'s labels."""
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
        found = [dict((n.metadata.labels if n.metadata else None) or {}) for n in nodes.items]
        with self._lock:
            self._cache[key] = (now, found)
        return found
