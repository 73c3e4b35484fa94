"""Lease-based leader election: of several operator replicas, only the one holding the Lease acts.

kopf has no Lease-based election (its peering is priority-based, and peers of equal priority all
freeze), so sunblend elects its leader on a ``coordination.k8s.io/v1`` Lease, the way client-go's
``tools/leaderelection`` does:

- the leader writes its identity into ``holderIdentity`` and moves ``renewTime`` every
  ``renew_interval``;
- a candidate takes the Lease over once ``renewTime + leaseDurationSeconds`` has passed (or the
  holder released it), counting one more ``leaseTransitions``;
- every write carries the ``resourceVersion`` it was decided from, so of two candidates one wins
  and the other gets a 409;
- a leader that cannot renew for ``renew_deadline`` (shorter than the lease duration) stops
  counting itself the leader before anyone else may take over;
- a leader that shuts down cleanly releases the Lease (no holder, one second), so a follower takes
  over at its next try instead of waiting for the lease to expire.

The decisions (``decide``, ``released``) are pure, with ``now`` passed in. ``Elector`` does the
I/O through a ``LeaseStore`` (``KubernetesLeases`` in production). ``startup.run`` elects before it
starts kopf: a follower runs none of kopf's handlers and serves the liveness endpoint itself
(``FollowerHealth``); the leader runs kopf and exits if it loses the Lease.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import http.server
import json
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sunblend.handlers import metrics

logger = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "sunblend-leader"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaseConflict(Exception):
    """Another replica wrote the Lease first (HTTP 409): the decision was made on a stale read."""


class LeaseUnavailable(Exception):
    """The Lease could not be read or written (an API error or a timeout)."""


@dataclass(frozen=True)
class Timing:
    """client-go's timing: the leader renews well within the deadline, the deadline within the lease."""

    lease_duration: dt.timedelta = dt.timedelta(seconds=15)  # how long a renewal keeps others out
    renew_interval: dt.timedelta = dt.timedelta(seconds=5)  # how often the leader renews
    renew_deadline: dt.timedelta = dt.timedelta(seconds=10)  # the leader stops acting this long after its last renewal
    retry_period: dt.timedelta = dt.timedelta(seconds=2)  # how often followers look, and a failed renewal is retried

    def __post_init__(self) -> None:
        if not self.retry_period <= self.renew_interval < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry_period <= renew_interval < renew_deadline < lease_duration")
        if self.lease_duration.total_seconds() != int(self.lease_duration.total_seconds()):
            raise ValueError("leaseDurationSeconds is a whole number of seconds")


@dataclass(frozen=True)
class Record:
    """A Lease's spec, and the ``resourceVersion`` it was read at ("" before the Lease exists)."""

    holder: str = ""  # holderIdentity; "" when nobody holds it (released)
    duration_seconds: int = 0
    acquire_time: dt.datetime | None = None
    renew_time: dt.datetime | None = None
    transitions: int = 0
    resource_version: str = ""

    @property
    def expires_at(self) -> dt.datetime | None:
        """When others may take the Lease over; None when it was never renewed."""
        if self.renew_time is None:
            return None
        return self.renew_time + dt.timedelta(seconds=self.duration_seconds)


class Action(enum.Enum):
    """What a replica does with the Lease on one try."""

    CREATE = "Create"  # there is no Lease yet: create it, holding it
    ACQUIRE = "Acquire"  # another's Lease expired or was released: take it over
    RENEW = "Renew"  # this replica holds it: move renewTime on
    WAIT = "Wait"  # another holds it and it has not expired: look again at ``retry_at``


@dataclass(frozen=True)
class Decision:
    """One try's decision: the action, the record to write (none when waiting) and when to look again."""

    action: Action
    record: Record | None
    retry_at: dt.datetime


def microtime(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC, never on a whole second.

    A Lease's times are MicroTime: the API server parses exactly six fractional digits, and the
    client writes none when the microseconds are zero. One microsecond later changes nothing.
    """
    moment = moment.astimezone(dt.UTC)
    return moment + dt.timedelta(microseconds=1) if moment.microsecond == 0 else moment


def decide(current: Record | None, identity: str, now: dt.datetime, timing: Timing) -> Decision:
    """What ``identity`` does with the Lease ``current`` (None: absent) at ``now``."""
    stamp = microtime(now)
    duration = int(timing.lease_duration.total_seconds())
    if current is None:
        return Decision(Action.CREATE, Record(identity, duration, stamp, stamp, 0), now)
    if current.holder == identity:
        renewed = dataclasses.replace(
            current, duration_seconds=duration, renew_time=stamp, acquire_time=current.acquire_time or stamp
        )
        return Decision(Action.RENEW, renewed, now)
    expires = current.expires_at
    if current.holder and expires is not None and now < expires:
        return Decision(Action.WAIT, None, min(now + timing.retry_period, expires))
    taken = Record(identity, duration, stamp, stamp, current.transitions + 1, current.resource_version)
    return Decision(Action.ACQUIRE, taken, now)


def released(current: Record | None, identity: str, now: dt.datetime) -> Record | None:
    """The record that gives the Lease up (client-go's: no holder, one second), or None if not ours."""
    if current is None or current.holder != identity:
        return None
    stamp = microtime(now)
    return Record("", 1, stamp, stamp, current.transitions, current.resource_version)


class LeaseStore(Protocol):
    """Reads and writes one Lease (``KubernetesLeases``; a dictionary in the unit tests)."""

    def read(self) -> Record | None: ...

    def create(self, record: Record) -> Record: ...

    def replace(self, record: Record) -> Record: ...


class KubernetesLeases:
    """One Lease through ``CoordinationV1Api``: 404 reads as None, 409 raises ``LeaseConflict``."""

    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, timeout: float = 2.0) -> None:
        self.namespace = namespace
        self.name = name
        self._api = api
        self._timeout = timeout
        self._where = f"Lease {namespace}/{name}"

    def read(self) -> Record | None:
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise LeaseUnavailable(f"reading {self._where}: {error.status} {error.reason}") from error
        except Exception as error:  # urllib3's timeouts and connection errors
            raise LeaseUnavailable(f"reading {self._where}: {error}") from error
        return _record(lease)

    def create(self, record: Record) -> Record:
        return self._write(record, create=True)

    def replace(self, record: Record) -> Record:
        return self._write(record, create=False)

    def _write(self, record: Record, create: bool) -> Record:
        body = client.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=client.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=record.resource_version or None
            ),
            spec=client.V1LeaseSpec(
                holder_identity=record.holder or None,
                lease_duration_seconds=record.duration_seconds,
                acquire_time=None if record.acquire_time is None else microtime(record.acquire_time),
                renew_time=None if record.renew_time is None else microtime(record.renew_time),
                lease_transitions=record.transitions,
            ),
        )
        try:
            if create:
                lease = self._api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)
            else:
                lease = self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                )
        except ApiException as error:
            if error.status == 409:
                raise LeaseConflict(f"{self._where} was written by another replica") from error
            raise LeaseUnavailable(f"writing {self._where}: {error.status} {error.reason}") from error
        except Exception as error:
            raise LeaseUnavailable(f"writing {self._where}: {error}") from error
        return _record(lease)


def _record(lease: Any) -> Record:
    spec = lease.spec or client.V1LeaseSpec()
    return Record(
        holder=spec.holder_identity or "",
        duration_seconds=spec.lease_duration_seconds or 0,
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=spec.lease_transitions or 0,
        resource_version=lease.metadata.resource_version or "",
    )


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Elector:
    """Holds or waits for one Lease on behalf of this replica; ``leading()`` says whether it may act.

    Leadership is counted from the time a renewal was decided (before its request was sent) and
    lapses ``renew_deadline`` later unless renewed again, whatever the renewing thread is doing.
    """

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timing: Timing | None = None,
        clock: Callable[[], dt.datetime] = _wall_clock,
    ) -> None:
        self.identity = identity
        self._store = store
        self._timing = timing or Timing()
        self._clock = clock
        self._renewed_at: dt.datetime | None = None
        self._holder = ""
        self._transitions = 0
        self._last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def leading(self) -> bool:
        """Whether this replica holds the Lease now (renewed less than ``renew_deadline`` ago)."""
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self._clock() < renewed + self._timing.renew_deadline

    @property
    def holder(self) -> str:
        """The holder seen on the last read ("" for none)."""
        return self._holder

    def attempt(self) -> dt.datetime:
        """Read the Lease once, then create, take over or renew it as ``decide`` says; return when to try next."""
        now = self._clock()
        try:
            current = self._store.read()
            decision = decide(current, self.identity, now, self._timing)
            if decision.action is Action.WAIT:
                assert current is not None
                self._seen(current)
                self._set_renewed(None)  # someone else holds it: whatever this replica thought, it does not lead
                return decision.retry_at
            assert decision.record is not None
            create = decision.action is Action.CREATE
            written = self._store.create(decision.record) if create else self._store.replace(decision.record)
        except LeaseConflict as error:
            logger.info("%s", error)  # someone else won this round; the next read tells who
            self._report()
            return now + self._timing.retry_period
        except LeaseUnavailable as error:
            if str(error) != self._last_error:
                logger.warning("%s; retrying every %s", error, self._timing.retry_period)
            self._last_error = str(error)
            self._report()
            return now + self._timing.retry_period
        self._last_error = ""
        self._seen(written)
        if decision.action is not Action.RENEW:
            logger.info("%s leads now (Lease transitions: %d)", self.identity, written.transitions)
        self._set_renewed(now)
        return now + self._timing.renew_interval

    def wait_until_leading(self, stop: threading.Event) -> bool:
        """Try until this replica leads (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            next_try = self.attempt()
            if self.leading():
                return True
            stop.wait(max(0.0, (next_try - self._clock()).total_seconds()))
        return False

    def keep_leading(self, on_lost: Callable[[], None]) -> None:
        """Renew from a background thread; call ``on_lost`` once if leadership lapses."""
        self._thread = threading.Thread(target=self._renew, args=(on_lost,), name="sunblend-leader", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and, if this replica still holds the Lease, give it up for a follower to take at once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._timing.renew_deadline.total_seconds())
        if not self.leading():
            return
        try:
            record = released(self._store.read(), self.identity, self._clock())
            if record is not None:
                self._seen(self._store.replace(record))
                logger.info("%s released the Lease", self.identity)
        except (LeaseConflict, LeaseUnavailable) as error:
            logger.warning("releasing the Lease failed (%s); others take over when it expires", error)
        self._set_renewed(None)

    def _renew(self, on_lost: Callable[[], None]) -> None:
        while not self._stop.is_set():
            next_try = self.attempt() if self.leading() else self._clock()
            if not self.leading():
                if not self._stop.is_set():
                    logger.error("%s lost the Lease (holder now: %r)", self.identity, self._holder or None)
                    on_lost()
                return
            with self._lock:
                deadline = (self._renewed_at or next_try) + self._timing.renew_deadline
            self._stop.wait(max(0.0, (min(next_try, deadline) - self._clock()).total_seconds()))

    def _seen(self, record: Record) -> None:
        self._holder = record.holder
        self._transitions = record.transitions

    def _set_renewed(self, moment: dt.datetime | None) -> None:
        with self._lock:
            self._renewed_at = moment
        self._report()

    def _report(self) -> None:
        metrics.LEADER.labels(self.identity).set(1 if self.leading() else 0)


class FollowerHealth:
    """Answers the liveness endpoint while this replica follows; kopf answers it once the replica leads."""

    def __init__(self, endpoint: str, elector: Elector) -> None:
        url = urllib.parse.urlsplit(endpoint)
        self._address = (url.hostname or "0.0.0.0", url.port or 80)
        self._path = url.path or "/"
        self._elector = elector
        self._server: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> FollowerHealth:
        path, elector = self._path, self._elector

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urllib.parse.urlsplit(self.path).path != path:
                    self.send_error(404)
                    return
                body = json.dumps({"leader": False, "holder": elector.holder or None}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
                pass

        self._server = http.server.ThreadingHTTPServer(self._address, Handler)
        threading.Thread(target=self._server.serve_forever, name="sunblend-follower-health", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # free the port for kopf's own endpoint
            self._server = None


def default_identity() -> str:
    """The pod's name (``POD_NAME``, from the downward API), else ``hostname-pid``."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def default_namespace() -> str:
    """The operator's namespace: ``POD_NAMESPACE``, the service account's, the kubeconfig context's, or default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    with contextlib.suppress(Exception):  # no kubeconfig, or no current context
        _, current = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        return str(current["context"].get("namespace") or "default")
    return "default"


@contextlib.contextmanager
def following(endpoint: str | None, elector: Elector) -> Iterator[None]:
    """Serve the liveness endpoint (if any) while waiting to lead."""
    if endpoint is None:
        yield
        return
    with FollowerHealth(endpoint, elector):
        yield
