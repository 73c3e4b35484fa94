"""Watch-fed records of what a pool's step reads most: its model-server pods and Deployments, and the GPU nodes.

Listing three kinds for each pool at each step costs the API server and the operator as much as
planning does: 1,000 pools are 3,000 lists per fast-loop pass. Instead, one ``Reflector`` per kind
lists once, then watches from that list's resourceVersion, and keeps a compact record of each
object: pods and Deployments that carry the pool label (in every namespace), and nodes that carry
the region label (a node without one is in no pool's region). ``observe.snapshot.SnapshotReader``
reads these records while every kind is ``synced``, and lists as before otherwise.

A reflector is synced once its list has been read and stays so while its watch runs; a watch that
fails (the API server gone, the resourceVersion expired: 410) makes it unsynced until a new list
succeeds, so a step never reads records that may have stopped following the cluster without
knowing it. The actuator does not read these records: it re-reads the cluster before it writes
(``actuate.execute``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final, Generic, TypeVar

from kubernetes import client, watch

from sunblend.api import constants
from sunblend.core import snapshot
from sunblend.observe import snapshot as convert

logger = logging.getLogger(__name__)

# The API server ends each watch after this long; the next one starts from the last resourceVersion.
WATCH_SECONDS: Final = 300
# A watch read that hears nothing (not even the server's end) for this long is given up and re-listed.
READ_TIMEOUT_SECONDS: Final = WATCH_SECONDS + 30
LIST_TIMEOUT_SECONDS: Final = 30
RETRY_SECONDS: Final = (0.5, 30.0)  # first and longest wait before listing again after a failure

REFLECTORS: Final = 3  # watches held open at once (``Watched``): one connection each

_R = TypeVar("_R")


class Reflector(Generic[_R]):
    """Lists, then watches, one kind; keeps ``record(obj)`` for each object by (namespace, name).

    ``index(record)`` gives the keys an object is found under (``find``). ``apply`` and ``replace``
    are the pure part, fed by the thread from the API's answers (and by tests directly).
    """

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Any],
        record: Callable[[Any], _R | None],
        index: Callable[[_R], tuple[Hashable, ...]],
        selector: str,
    ) -> None:
        self.kind = kind
        self._list = list_call
        self._record = record
        self._index_of = index
        self._selector = selector
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], _R] = {}
        self._index: dict[Hashable, set[tuple[str, str]]] = {}
        self._synced = False
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"sunblend-watch-{kind}", daemon=True)

    # ---- the records ----

    @property
    def synced(self) -> bool:
        """Whether the records follow the cluster: listed, and watched since without a failure."""
        return self._synced

    def find(self, key: Hashable) -> list[_R]:
        """The records indexed under ``key``."""
        with self._lock:
            return [self._records[k] for k in self._index.get(key, ())]

    def replace(self, objects: list[Any]) -> None:
        """Keep exactly ``objects`` (a fresh list), and count as synced."""
        with self._lock:
            self._records, self._index = {}, {}
            for obj in objects:
                self._put(obj)
            self._synced = True

    def apply(self, event_type: str, obj: Any) -> None:
        """One watch event: ADDED and MODIFIED keep the object's record, DELETED drops it."""
        with self._lock:
            self._drop(_key(obj))
            if event_type != "DELETED":
                self._put(obj)

    def unsync(self) -> None:
        """The records may no longer follow the cluster: read around them until the next list."""
        self._synced = False

    def _put(self, obj: Any) -> None:
        found = self._record(obj)
        if found is None:
            return
        key = _key(obj)
        self._records[key] = found
        for term in self._index_of(found):
            self._index.setdefault(term, set()).add(key)

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._records.pop(key, None)
        if old is None:
            return
        for term in self._index_of(old):
            keys = self._index.get(term)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[term]

    # ---- the thread ----

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the thread ends at its next event or read timeout; it is a daemon)."""
        self._stop.set()
        self.unsync()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        wait = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                version = self._relist()
                wait = RETRY_SECONDS[0]
                self._follow(version)
            except Exception as error:  # a failed list or watch: read around the records, list again
                self.unsync()
                if not self._stop.is_set():
                    logger.warning("watching %s failed, listing again in %.1f s: %s", self.kind, wait, error)
                self._stop.wait(wait)
                wait = min(wait * 2, RETRY_SECONDS[1])

    def _relist(self) -> str:
        listed = self._list(label_selector=self._selector, _request_timeout=LIST_TIMEOUT_SECONDS)
        self.replace(list(listed.items))
        return str(listed.metadata.resource_version)

    def _follow(self, version: str) -> None:
        """Watch from ``version`` until stopped, each watch resuming where the one before ended."""
        while not self._stop.is_set():
            self._watch = watch.Watch()  # type: ignore[no-untyped-call]
            for event in self._watch.stream(  # type: ignore[no-untyped-call]
                self._list,
                label_selector=self._selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(LIST_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
            ):
                if self._stop.is_set():
                    return
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self.apply(event["type"], event["object"])
                version = self._watch.resource_version or version


def _key(obj: Any) -> tuple[str, str]:
    metadata = obj.metadata
    return (metadata.namespace or "", metadata.name or "")


def _pool_of(obj: Any) -> str:
    return str((obj.metadata.labels or {}).get(constants.POOL_LABEL, ""))


def _pool_key(obj: Any) -> tuple[str, str]:
    """(namespace, pool label value)."""
    return (obj.metadata.namespace or "", str((obj.metadata.labels or {}).get(constants.POOL_LABEL, "")))


class Watched:
    """The three reflectors a pool's step reads: its pods, its Deployments, and the GPU nodes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        self.pods: Reflector[tuple[tuple[str, str], snapshot.PodView]] = Reflector(
            "pods",
            core.list_pod_for_all_namespaces,
            lambda pod: (_pool_key(pod), convert.pod_view(pod)),
            lambda found: (found[0],),
            constants.POOL_LABEL,
        )
        self.deployments: Reflector[tuple[tuple[str, str], snapshot.WorkloadView]] = Reflector(
            "deployments",
            apps.list_deployment_for_all_namespaces,
            lambda deployment: (_pool_key(deployment), convert.workload_view(deployment, _pool_key(deployment)[1])),
            lambda found: (found[0],),
            constants.POOL_LABEL,
        )
        self.nodes: Reflector[convert.NodeRecord] = Reflector(
            "nodes",
            core.list_node,
            convert.node_record,
            lambda record: tuple(record.labels.items()),
            constants.REGION_LABEL,
        )
        self._all = (self.pods, self.deployments, self.nodes)

    @property
    def synced(self) -> bool:
        """Whether every kind's records follow the cluster."""
        return all(r.synced for r in self._all)

    def start(self) -> None:
        for reflector in self._all:
            reflector.start()

    def stop(self) -> None:
        for reflector in self._all:
            reflector.stop()

    def pool_pods(self, namespace: str, pool: str) -> list[snapshot.PodView]:
        """The pods labelled with the pool, in its namespace."""
        return [view for _, view in self.pods.find((namespace, pool))]

    def pool_workloads(self, namespace: str, pool: str) -> list[snapshot.WorkloadView]:
        """The Deployments labelled with the pool, in its namespace."""
        return [view for _, view in self.deployments.find((namespace, pool))]

    def nodes_selected(self, labels: Mapping[str, str]) -> list[convert.NodeRecord]:
        """The nodes (with a region label) that carry every label in ``labels``, by name."""
        terms = sorted(labels.items())
        if not terms:
            return []
        found = [{r.name: r for r in self.nodes.find(term)} for term in terms]
        names = set(found[0]).intersection(*found[1:])
        return [found[0][n] for n in sorted(names)]
