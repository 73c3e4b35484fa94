"""Leader election without a cluster: the pure decisions, the elector on an in-memory Lease, the gates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import kopf
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.handlers import leader, metrics, pool
from sunblend.handlers.leader import Action, Record
from sunblend.loop import reconcile
from tests.unit import pools

T0 = dt.datetime(2026, 11, 23, 12, 0, 0, 250000, tzinfo=dt.UTC)
TIMING = leader.Timing()
SECOND = dt.timedelta(seconds=1)


def _held(holder: str, renewed: dt.datetime = T0, transitions: int = 3) -> Record:
    return Record(holder, 15, renewed - dt.timedelta(hours=1), renewed, transitions, "41")


# --- the pure decision ---------------------------------------------------------------------------


def test_the_first_replica_creates_the_lease_holding_it():
    decision = leader.decide(None, "a", T0, TIMING)
    assert decision.action is Action.CREATE
    assert decision.record == Record("a", 15, T0, T0, 0, "")


def test_a_lease_held_by_another_is_waited_for_until_renew_time_plus_duration():
    current = _held("b")
    waiting = leader.decide(current, "a", T0 + 15 * SECOND - dt.timedelta(microseconds=1), TIMING)
    assert (waiting.action, waiting.record) == (Action.WAIT, None)
    taken = leader.decide(current, "a", T0 + 15 * SECOND, TIMING)
    assert taken.action is Action.ACQUIRE
    # A takeover is a transition; the resourceVersion it was decided from guards the write.
    assert taken.record == Record("a", 15, T0 + 15 * SECOND, T0 + 15 * SECOND, 4, "41")


def test_a_follower_looks_again_after_the_retry_period_or_at_expiry_whichever_is_sooner():
    current = _held("b")
    assert leader.decide(current, "a", T0, TIMING).retry_at == T0 + 2 * SECOND
    almost = T0 + dt.timedelta(seconds=14.5)
    assert leader.decide(current, "a", almost, TIMING).retry_at == T0 + 15 * SECOND


def test_the_holder_renews_keeping_its_acquire_time_and_transitions():
    current = _held("a")
    decision = leader.decide(current, "a", T0 + 5 * SECOND, TIMING)
    assert decision.action is Action.RENEW
    assert decision.record == dataclasses.replace(current, renew_time=T0 + 5 * SECOND)


def test_a_released_lease_is_taken_at_once():
    given_up = leader.released(_held("b"), "b", T0)
    assert given_up == Record("", 1, T0, T0, 3, "41")
    decision = leader.decide(given_up, "a", T0, TIMING)  # within its one second, but nobody holds it
    assert decision.action is Action.ACQUIRE
    assert decision.record is not None and decision.record.transitions == 4


def test_only_the_holder_releases():
    assert leader.released(_held("b"), "a", T0) is None
    assert leader.released(None, "a", T0) is None


def test_times_written_are_utc_and_never_on_a_whole_second():
    whole = dt.datetime(2026, 1, 1, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    stamp = leader.microtime(whole)
    assert stamp == dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)
    assert stamp.isoformat() == "2026-01-01T00:00:00.000001+00:00"  # six fractional digits, as MicroTime needs
    assert leader.microtime(T0) == T0


def test_timing_must_let_the_leader_stop_before_anyone_takes_over():
    with pytest.raises(ValueError):
        leader.Timing(renew_deadline=dt.timedelta(seconds=20))
    with pytest.raises(ValueError):
        leader.Timing(lease_duration=dt.timedelta(seconds=15.5))


# --- the elector on an in-memory Lease -----------------------------------------------------------


class MemoryLeases:
    """One Lease in memory, with the API server's optimistic concurrency: a stale write gets 409."""

    def __init__(self) -> None:
        self.record: Record | None = None
        self.version = 0
        self.writes: list[Record] = []
        self.down = False
        self.before_read_returns: list = []  # callbacks run after a read is taken, before it returns

    def read(self) -> Record | None:
        if self.down:
            raise leader.LeaseUnavailable("connection refused")
        seen = self.record
        while self.before_read_returns:
            self.before_read_returns.pop(0)()
        return seen

    def create(self, record: Record) -> Record:
        if self.record is not None:
            raise leader.LeaseConflict("already exists")
        return self._store(record)

    def replace(self, record: Record) -> Record:
        if self.down:
            raise leader.LeaseUnavailable("connection refused")
        if self.record is None or record.resource_version != self.record.resource_version:
            raise leader.LeaseConflict("the object has been modified")
        return self._store(record)

    def _store(self, record: Record) -> Record:
        self.version += 1
        self.record = dataclasses.replace(record, resource_version=str(self.version))
        self.writes.append(self.record)
        return self.record


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _gauge(identity: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("sunblend_leader", {"identity": identity})


def test_one_replica_leads_and_the_other_takes_over_15_s_after_the_last_renewal():
    store, clock = MemoryLeases(), Clock()
    a = leader.Elector(store, "a", clock=clock)
    b = leader.Elector(store, "b", clock=clock)
    assert a.attempt() == T0 + 5 * SECOND  # created: renew again in 5 s
    assert b.attempt() == T0 + 2 * SECOND  # held: look again in 2 s
    assert (a.leading(), b.leading()) == (True, False)
    assert (_gauge("a"), _gauge("b")) == (1, 0)
    clock.advance(5)
    a.attempt()  # the last renewal, at T0 + 5 s; then a dies
    clock.advance(10)
    assert not a.leading()  # a would stop counting itself the leader 10 s after its last renewal...
    clock.advance(4.9)
    b.attempt()
    assert not b.leading()  # ...and b cannot take over before 15 s have passed since it
    clock.advance(0.1)
    b.attempt()
    assert b.leading()
    assert store.record is not None
    assert (store.record.holder, store.record.transitions) == ("b", 1)
    assert store.record.acquire_time == T0 + 20 * SECOND
    assert b.holder == "b" and _gauge("b") == 1


def test_of_two_replicas_deciding_on_the_same_read_one_wins_and_the_other_gets_a_conflict():
    store, clock = MemoryLeases(), Clock()
    a = leader.Elector(store, "a", clock=clock)
    b = leader.Elector(store, "b", clock=clock)
    store.before_read_returns.append(a.attempt)  # a writes between b's read and b's write
    b.attempt()
    assert (a.leading(), b.leading()) == (True, False)
    assert [w.holder for w in store.writes] == ["a"]
    # The same race over an expired Lease: both decide to take over; the second write is stale.
    clock.advance(60)
    store.before_read_returns.append(b.attempt)
    c = leader.Elector(store, "c", clock=clock)
    c.attempt()
    assert (b.leading(), c.leading()) == (True, False)
    assert store.record is not None and (store.record.holder, store.record.transitions) == ("b", 1)


def test_a_leader_that_cannot_renew_stops_leading_at_the_deadline():
    store, clock = MemoryLeases(), Clock()
    a = leader.Elector(store, "a", clock=clock)
    a.attempt()
    store.down = True
    clock.advance(5)
    assert a.attempt() == clock.now + 2 * SECOND  # retried sooner than a renewal
    clock.advance(4.9)
    assert a.leading()
    clock.advance(0.1)
    assert not a.leading()
    a.attempt()
    assert _gauge("a") == 0


def test_a_leader_seeing_another_holder_stops_leading_at_once():
    store, clock = MemoryLeases(), Clock()
    a = leader.Elector(store, "a", clock=clock)
    a.attempt()
    assert store.record is not None
    store.record = dataclasses.replace(store.record, holder="b")  # e.g. after a long pause of a's process
    a.attempt()
    assert not a.leading()


def test_releasing_hands_the_lease_to_a_follower_at_once():
    store, clock = MemoryLeases(), Clock()
    a = leader.Elector(store, "a", clock=clock)
    b = leader.Elector(store, "b", clock=clock)
    a.attempt()
    b.attempt()
    clock.advance(1)
    a.release()
    assert not a.leading()
    assert store.record is not None and (store.record.holder, store.record.duration_seconds) == ("", 1)
    b.attempt()
    assert b.leading()
    writes = len(store.writes)
    a.release()  # not the holder any more: writes nothing
    assert len(store.writes) == writes


def test_the_renewing_thread_reports_a_lost_lease_once():
    timing = leader.Timing(
        lease_duration=dt.timedelta(seconds=1),
        renew_interval=dt.timedelta(seconds=0.1),
        renew_deadline=dt.timedelta(seconds=0.3),
        retry_period=dt.timedelta(seconds=0.05),
    )
    store = MemoryLeases()
    a = leader.Elector(store, "a", timing=timing)
    lost = threading.Event()
    calls = []
    assert a.wait_until_leading(threading.Event())
    a.keep_leading(on_lost=lambda: (calls.append(1), lost.set()))
    time.sleep(0.35)
    assert a.leading() and not lost.is_set()  # renewed past the first deadline
    store.down = True
    assert lost.wait(2)
    time.sleep(0.1)
    assert calls == [1] and not a.leading()


def test_waiting_stops_when_told():
    store, clock = MemoryLeases(), Clock()
    leader.Elector(store, "b", clock=clock).attempt()
    stop = threading.Event()
    stop.set()
    assert not leader.Elector(store, "a", clock=clock).wait_until_leading(stop)


# --- the Kubernetes adapter ----------------------------------------------------------------------


class FakeCoordination:
    """Stands in for CoordinationV1Api: records the bodies, answers with a lease or an ApiException."""

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.bodies: list = []

    def _answer(self, body=None):
        if self.status is not None:
            raise ApiException(status=self.status, reason="Nope")
        spec = body.spec if body is not None else client.V1LeaseSpec(holder_identity="b", lease_duration_seconds=15)
        return client.V1Lease(metadata=client.V1ObjectMeta(resource_version="7"), spec=spec)

    def read_namespaced_lease(self, name, namespace, **_):
        return self._answer()

    def create_namespaced_lease(self, namespace, body, **_):
        self.bodies.append(body)
        return self._answer(body)

    def replace_namespaced_lease(self, name, namespace, body, **_):
        self.bodies.append(body)
        return self._answer(body)


def test_the_adapter_writes_microtimes_and_the_resource_version_it_read():
    api = FakeCoordination()
    leases = leader.KubernetesLeases(api, "ops", "sunblend-leader")  # type: ignore[arg-type]
    assert leases.read() == Record("b", 15, resource_version="7")
    whole = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    taken = leader.decide(Record("b", 15, whole, whole, 2, "7"), "a", whole + 20 * SECOND, TIMING).record
    assert taken is not None
    written = leases.replace(taken)
    assert (written.holder, written.transitions, written.resource_version) == ("a", 3, "7")
    sent = client.ApiClient().sanitize_for_serialization(api.bodies[0])
    assert sent["metadata"] == {"name": "sunblend-leader", "namespace": "ops", "resourceVersion": "7"}
    assert sent["spec"]["renewTime"] == "2026-01-01T00:00:20.000001+00:00"
    assert sent["spec"]["holderIdentity"] == "a" and sent["spec"]["leaseTransitions"] == 3
    leases.replace(Record("", 1, whole, whole, 3, "8"))  # a release clears the holder
    assert "holderIdentity" not in client.ApiClient().sanitize_for_serialization(api.bodies[-1])["spec"]


@pytest.mark.parametrize(
    ("status", "raised"), [(409, leader.LeaseConflict), (403, leader.LeaseUnavailable), (500, leader.LeaseUnavailable)]
)
def test_the_adapter_maps_api_errors(status, raised):
    leases = leader.KubernetesLeases(FakeCoordination(status), "ops", "l")  # type: ignore[arg-type]
    with pytest.raises(raised):
        leases.replace(Record("a", 15, T0, T0, 0, "1"))


def test_the_adapter_reads_a_missing_lease_as_none():
    assert leader.KubernetesLeases(FakeCoordination(404), "ops", "l").read() is None  # type: ignore[arg-type]
    with pytest.raises(leader.LeaseUnavailable):
        leader.KubernetesLeases(FakeCoordination(401), "ops", "l").read()  # type: ignore[arg-type]


def test_identity_and_namespace_come_from_the_downward_api(monkeypatch):
    monkeypatch.setenv("POD_NAME", "sunblend-7f9c-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "sunblend-system")
    assert leader.default_identity() == "sunblend-7f9c-abcde"
    assert leader.default_namespace() == "sunblend-system"
    monkeypatch.delenv("POD_NAME")
    assert leader.default_identity() == f"{socket.gethostname()}-{__import__('os').getpid()}"


# --- a follower stays live -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_follower_answers_the_liveness_endpoint_and_frees_its_port_for_kopf():
    store, clock = MemoryLeases(), Clock()
    leader.Elector(store, "b", clock=clock).attempt()
    follower = leader.Elector(store, "a", clock=clock)
    follower.attempt()
    port = _free_port()
    with leader.following(f"http://127.0.0.1:{port}/healthz", follower):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"leader": False, "holder": "b"}
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as kopf's server (aiohttp) binds
        s.bind(("127.0.0.1", port))  # free again


# --- nothing is written without the Lease --------------------------------------------------------


class RecordingWriter:
    def __init__(self) -> None:
        self.patches: list = []

    def patch_status(self, namespace, name, status):
        self.patches.append((namespace, name))
        return True

    def post_event(self, body, event_type, reason, message, now):
        self.patches.append(reason)


def test_the_fast_loop_writes_nothing_once_the_lease_lapses():
    noon = dt.datetime(2026, 11, 23, 12, 10, tzinfo=dt.UTC)
    services = reconcile.Services()
    body = pools.document()
    body["metadata"].update({"namespace": "default", "generation": 1, "uid": "u1"})
    body["status"] = reconcile.reconcile(body, noon, services).status
    leading = [False]
    memo = {"pools": {("default", "t"): pool.essentials(body)}, "services": services, "leading": lambda: leading[0]}
    writer = RecordingWriter()
    replanner = pool.Replanner(memo, writer)  # type: ignore[arg-type]
    assert replanner.run_once(noon + dt.timedelta(hours=1)) == 0
    assert writer.patches == []
    leading[0] = True
    assert replanner.run_once(noon + dt.timedelta(hours=1)) == 1  # the same step, as the leader: written


def test_the_change_handler_defers_to_the_leader_once_the_lease_lapses():
    body = pools.document()
    patch: dict = {}
    with pytest.raises(kopf.TemporaryError):
        pool.plan_pool(body=body, patch=patch, memo={"leading": lambda: False})  # type: ignore[arg-type]
    assert patch == {}
