"""Leader election against a real kube-apiserver: two operators on one pool, one acts.

The session's operator is stopped; two ``sunblend run`` subprocesses with their own Lease (in the
test's namespace) and identities op-a and op-b watch one Enforce pool on kwok GPU nodes. Who
wrote what is read back from the API server: the Lease, the events' ``reportingInstance`` (kopf
stamps it with the operator's identity), the slices' generations, and each operator's metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes import config as kube_config

from sunblend.handlers import leader
from tests.e2e.conftest import Cluster, Operator, enforcing, wait_for
from tests.e2e.test_acting import _pool as acting_pool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import kwok_nodes  # noqa: E402

POOL = "chat"
REGION = "eu-west-2"
SLICE = f"{POOL}-{REGION}-h100-on-demand"
LEASE = "sunblend-leader-e2e"


def _pool(namespace: str, tokens_per_second: int) -> dict:
    """test_acting's pool in London only, at a steady ``tokens_per_second``, on-demand only."""
    london = {
        "name": REGION,
        "timeZone": "Europe/London",
        "demand": {"baselineTokensPerSecond": tokens_per_second, "peakTokensPerSecond": tokens_per_second},
    }
    policy = {"headroom": 0, "maxSpotFraction": 0, "minReplicasPerRegion": 1}
    return acting_pool(namespace, [london], policy=policy, actuation={"mode": "Enforce"})


def _nodes(cluster: Cluster, namespace: str, count: int) -> list[str]:
    names = []
    for i in range(count):
        node = kwok_nodes.node(REGION, "on-demand", i, name=f"{namespace}-{i}")
        node["metadata"]["labels"]["sunblend.dev/test"] = namespace
        cluster.apply(node, namespace)
        names.append(node["metadata"]["name"])
    cluster.kubectl("wait", "--for=condition=Ready", "node", *names, "--timeout=60s")
    return names


def _lease(cluster: Cluster, namespace: str) -> dict:
    run = cluster.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    return {} if run.returncode else json.loads(run.stdout)["spec"]


def _holder(cluster: Cluster, namespace: str) -> str | None:
    return _lease(cluster, namespace).get("holderIdentity")


def _slice(cluster: Cluster, namespace: str) -> dict:
    run = cluster.kubectl("get", "deployment", SLICE, "-n", namespace, "-o", "json", check=False)
    return {} if run.returncode else json.loads(run.stdout)


def _replicas(cluster: Cluster, namespace: str) -> int | None:
    return _slice(cluster, namespace).get("spec", {}).get("replicas")


def _events(cluster: Cluster, namespace: str) -> list[dict]:
    return [
        e for e in cluster.get("events", "-n", namespace)["items"] if e["involvedObject"]["kind"] == "InferencePool"
    ]


def _scaled(events: list[dict]) -> list[tuple[str, str, int]]:
    return sorted((e["reportingInstance"], e["message"], e.get("count", 1)) for e in events if e["reason"] == "Scaled")


def _quiet_offset() -> str:
    """Seconds to add to the real clock so that it reads 02:10 UTC, London's quiet hours."""
    now = dt.datetime.now(dt.UTC)
    target = dt.datetime.combine(now.date(), dt.time(2, 10), tzinfo=dt.UTC)
    if target < now:
        target += dt.timedelta(days=1)
    return str(int((target - now).total_seconds()))


def _sample(text: str, name: str) -> float | None:
    """The value of an unlabelled metric in Prometheus's text format."""
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0].rsplit(" ", 1)[1]) if found else None


@pytest.fixture
def two_operators(operator: Operator, namespace: str, tmp_path: Path) -> Iterator[tuple[Operator, Operator]]:
    """op-a and op-b on the test's namespace and Lease; the session's operator stopped meanwhile."""
    operator.stop()
    common = [
        *enforcing(namespace),
        "--clock-offset-seconds",
        _quiet_offset(),
        "--lease-name",
        LEASE,
        "--lease-namespace",
        namespace,
    ]
    pair = (Operator(operator.cluster, tmp_path / "op-a.log"), Operator(operator.cluster, tmp_path / "op-b.log"))
    for own, identity in zip(pair, ("op-a", "op-b"), strict=True):
        own.extra_args = [*common, "--identity", identity]
    try:
        yield pair
    finally:
        for own in pair:
            own.stop()
        operator.start()


def test_one_of_two_operators_acts_and_the_other_takes_over_within_15_s_of_a_kill(two_operators, namespace):
    a, b = two_operators
    cluster = a.cluster
    nodes = _nodes(cluster, namespace, 2)
    try:
        a.start()
        wait_for(lambda: _holder(cluster, namespace) == "op-a", 15, what="op-a holding the Lease")
        b.start()  # live at once: a follower answers its liveness endpoint itself
        with urllib.request.urlopen(f"http://127.0.0.1:{b.liveness_port}/healthz", timeout=5) as response:
            assert b'"leader": false' in response.read()
        cluster.apply(_pool(namespace, 1000), namespace)
        wait_for(lambda: _replicas(cluster, namespace) == 4, 60, what="the slice scaled to 4 replicas")
        wait_for(lambda: _scaled(_events(cluster, namespace)), 20, what="a Scaled event")
        time.sleep(6)  # three passes of each fast loop

        # Only op-a wrote: its events carry its identity, and op-b sent no write at all.
        events = _events(cluster, namespace)
        instances = {e.get("reportingInstance") for e in events if e.get("reportingComponent") == "sunblend"}
        assert "op-a" in instances and "op-b" not in instances, instances
        a_metrics, b_metrics = a.metrics(), b.metrics()
        assert 'sunblend_leader{identity="op-a"} 1.0' in a_metrics
        assert 'sunblend_leader{identity="op-b"} 0.0' in b_metrics
        assert "sunblend_api_writes_total{" in a_metrics
        assert "sunblend_api_writes_total{" not in b_metrics
        assert "sunblend_reconcile_duration_seconds_count 0.0" in b_metrics  # no step, no plan, no handler
        generation = _slice(cluster, namespace)["metadata"]["generation"]
        scaled_before = _scaled(events)
        print("\nScaled before the kill:", scaled_before)
        # Each scaling happened once. The fast loop's events carry no identity ("sunblend"), but op-b
        # posted none: it counts no event and decided no Command.
        assert len({message for _, message, _ in scaled_before}) == len(scaled_before)
        assert {(instance, count) for instance, _, count in scaled_before} <= {("op-a", 1), ("sunblend", 1)}
        assert "sunblend_events_total{" not in b_metrics and "sunblend_decided_commands_total{" not in b_metrics

        # The leader dies without releasing the Lease: op-b takes over once it expires.
        assert a.process is not None
        a.process.kill()
        killed = time.monotonic()
        a.process.wait()
        a.process = None
        wait_for(lambda: _holder(cluster, namespace) == "op-b", 30, interval=0.05, what="op-b holding the Lease")
        took_lease = time.monotonic() - killed
        wait_for(
            lambda: (_sample(b.metrics(), "sunblend_reconcile_duration_seconds_count") or 0) > 0,
            30,
            interval=0.05,
            what="op-b's first step of the pool",
        )
        first_step = time.monotonic() - killed
        print(f"\ntakeover after SIGKILL: Lease taken {took_lease:.2f} s, first step {first_step:.2f} s after the kill")
        assert took_lease <= 17.0  # at most 15 s after op-a's last renewal, plus op-b's wake-up
        lease = _lease(cluster, namespace)
        assert (lease["holderIdentity"], lease["leaseTransitions"], lease["leaseDurationSeconds"]) == ("op-b", 1, 15)
        assert 'sunblend_leader{identity="op-b"} 1.0' in b.metrics()

        # The new leader repeats nothing: no write to the slice, no second Scaled event.
        time.sleep(6)
        assert _slice(cluster, namespace)["metadata"]["generation"] == generation
        assert _scaled(_events(cluster, namespace)) == scaled_before

        # ...and acts on what changes: more demand, more replicas, one Scaled event, from op-b.
        cluster.apply(_pool(namespace, 6000), namespace)
        wait_for(lambda: (_replicas(cluster, namespace) or 0) > 4, 60, what="the slice scaled up by op-b")
        time.sleep(6)
        scaled_after = [s for s in _scaled(_events(cluster, namespace)) if s not in scaled_before]
        print("Scaled after the takeover:", scaled_after)
        assert scaled_after and len({message for _, message, _ in scaled_after}) == len(scaled_after)
        assert {(instance, count) for instance, _, count in scaled_after} <= {("op-b", 1), ("sunblend", 1)}

        # A clean stop releases the Lease: a follower takes it at its next try, not 15 s later.
        a.start()
        wait_for(lambda: 'sunblend_leader{identity="op-a"} 0.0' in a.metrics(), 10, what="op-a following")
        b.stop()
        stopped = time.monotonic()
        wait_for(lambda: _holder(cluster, namespace) == "op-a", 10, interval=0.05, what="op-a taking the Lease back")
        print(f"takeover after a clean stop: {time.monotonic() - stopped:.2f} s")
        assert _lease(cluster, namespace)["leaseTransitions"] == 2
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_two_candidates_deciding_on_one_read_get_one_winner_from_the_api_server(cluster, namespace):
    api = kube_config.new_client_from_config(str(cluster.kubeconfig))
    store = leader.KubernetesLeases(client.CoordinationV1Api(api), namespace, "race")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # a whole second: written with six digits anyway
    created = [leader.decide(None, who, now, leader.Timing()).record for who in ("a", "b")]
    store.create(created[0])
    with pytest.raises(leader.LeaseConflict):
        store.create(created[1])
    # Both see the same expired Lease and decide to take it over; the second write is stale.
    expired = store.replace(
        leader.Record("a", 15, now, now - dt.timedelta(minutes=1), 0, store.read().resource_version)
    )
    taken = [leader.decide(expired, who, dt.datetime.now(dt.UTC), leader.Timing()).record for who in ("b", "c")]
    store.replace(taken[0])
    with pytest.raises(leader.LeaseConflict):
        store.replace(taken[1])
    lease = cluster.get("lease", "race", "-n", namespace)["spec"]
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("b", 1)
    assert len(lease["renewTime"].split(".")[1].rstrip("Z")) == 6
