"""Faults against the real control plane: a killed operator, a restarted API server, Prometheus down, a flapping node.

Each test stops the session's operator and runs its own (``sunblend run`` as a subprocess) on the
test's namespace, in Enforce mode with a fast loop, then swaps the session's operator back. The
faults are real: ``kill -9`` of the operator process; kube-apiserver and etcd stopped and started
again from the same command lines as ``hack/cluster.sh up`` started them (etcd keeps its data
folder); Debian's Prometheus stopped and started again; a kwok node's Ready condition flipped
through the status subresource. What the operator did is read back from the API server: every
pod, node and slice change is recorded by ``kubectl get --watch``, and events and status through
kubectl, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes import config as kube_config

from tests.e2e import test_prometheus as prometheus_e2e
from tests.e2e.conftest import BIN, Cluster, Operator, wait_for
from tests.e2e.test_acting import (
    INDIA_EVENING,
    LONDON,
    MUMBAI,
    POOL,
    QUIET,
    _by_offer,
    _condition,
    _if,
    _keep_all_pods,
    _kwok_nodes,
    _nodes,
    _offset,
    _pool,
    _pool_status,
    _replicas,
    _running_pods,
    _slices,
)

pytestmark = pytest.mark.e2e

LONDON_SLICE = f"{POOL}-eu-west-2-h100-on-demand"
LEASE = "sunblend-faults"
IDENTITY = "faults-0"  # one pod's name: a container restarted in place keeps it, and so its Lease


# ---- the test's own operators -------------------------------------------------------------------


class Operators:
    """This test's operators, one at a time: started, killed with SIGKILL, started again."""

    def __init__(self, session: Operator, tmp_path: Path, args: list[str]) -> None:
        self.cluster = session.cluster
        self._tmp_path = tmp_path
        self._args = args
        self.started = 0
        self.running: Operator | None = None

    def start(self) -> Operator:
        assert self.running is None, "one operator at a time"
        self.started += 1
        own = Operator(self.cluster, self._tmp_path / f"operator-{self.started}.log")
        own.extra_args = list(self._args)
        own.start()
        self.running = own
        return own

    def kill(self) -> None:
        """``kill -9``: no handler finishes, no Lease is released, nothing is flushed."""
        assert self.running is not None and self.running.process is not None
        os.kill(self.running.process.pid, signal.SIGKILL)
        self.running.process.wait()
        self.running.process = None
        self.running = None

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None


@contextmanager
def _operators(session: Operator, namespace: str, tmp_path: Path, *args: str) -> Iterator[Operators]:
    """The session's operator stopped; this test's own, on the test's namespace and Lease, meanwhile."""
    session.stop()
    common = ["-n", namespace, "--actuation-mode", "Enforce", "--replan-seconds", "1"]
    lease = ["--lease-name", LEASE, "--lease-namespace", namespace, "--identity", IDENTITY]
    own = Operators(session, tmp_path, [*common, *lease, *args])
    try:
        yield own
    finally:
        own.stop()
        session.start()


def _steps(own: Operator) -> float:
    """Steps the operator has finished (its reconcile histogram's count)."""
    for line in own.metrics().splitlines():
        if line.startswith("sunblend_reconcile_duration_seconds_count "):
            return float(line.split()[1])
    return 0.0


def _stepping(own: Operator, steps: int, timeout: float = 30) -> None:
    """Wait until ``own`` has finished ``steps`` more steps than now."""
    start = _steps(own)
    wait_for(lambda: _steps(own) >= start + steps, timeout, what=f"{steps} more steps of the operator")


# ---- what happened, read back from the API server ----------------------------------------------


class Recorder:
    """``kubectl get --watch`` of some objects, every event kept in a file (stopped by PID)."""

    def __init__(self, cluster: Cluster, path: Path, *what: str) -> None:
        self.path = path
        command = [str(BIN / "kubectl"), "get", *what, "--watch", "--output-watch-events", "-o", "json"]
        with path.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=cluster.env)

    def events(self) -> list[dict]:
        """The watch events so far, oldest first (a half-written last one is left out)."""
        text = self.path.read_text()
        decoder = json.JSONDecoder()
        found, at = [], 0
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return found
            try:
                event, at = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                return found
            found.append(event)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def _recording(cluster: Cluster, path: Path, *what: str) -> Iterator[Recorder]:
    recorder = Recorder(cluster, path, *what)
    try:
        yield recorder
    finally:
        recorder.stop()


def _replica_changes(recorder: Recorder) -> dict[str, list[int]]:
    """Each slice's successive ``spec.replicas``, one entry per change."""
    out: dict[str, list[int]] = {}
    for event in recorder.events():
        deployment = event["object"]
        name, replicas = deployment["metadata"]["name"], deployment["spec"].get("replicas")
        seen = out.setdefault(name, [])
        if not seen or seen[-1] != replicas:
            seen.append(replicas)
    return out


def _force_deleted(recorder: Recorder) -> list[str]:
    """Pods that went without an eviction through the Eviction API before them.

    An eviction sets the pod's ``DisruptionTarget`` condition (reason ``EvictionByEvictionAPI``)
    and deletes it gracefully; a forced delete (grace period 0) removes it at once, with neither.
    """
    evicted: set[str] = set()
    gone: list[str] = []
    for event in recorder.events():
        pod = event["object"]
        name = pod["metadata"]["name"]
        conditions = pod.get("status", {}).get("conditions") or []
        graceful = pod["metadata"].get("deletionTimestamp") and (pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        if graceful and any(
            c["type"] == "DisruptionTarget" and c.get("reason") == "EvictionByEvictionAPI" for c in conditions
        ):
            evicted.add(name)
        if event["type"] == "DELETED" and name not in evicted:
            gone.append(name)
    return gone


def _pool_events(cluster: Cluster, namespace: str) -> list[dict]:
    return [
        e for e in cluster.get("events", "-n", namespace)["items"] if e["involvedObject"]["kind"] == "InferencePool"
    ]


def _messages(events: list[dict], reason: str) -> list[str]:
    """The messages of events with ``reason``, each as often as it was posted."""
    return sorted(m for e in events if e["reason"] == reason for m in [e["message"]] * e.get("count", 1))


def _once_each(messages: list[str]) -> bool:
    return len(set(messages)) == len(messages)


def _node_uids(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {n["metadata"]["name"]: n["metadata"]["uid"] for n in _kwok_nodes(cluster, namespace)}


def _generations(cluster: Cluster, namespace: str) -> dict[str, int]:
    return {name: d["metadata"]["generation"] for name, d in _slices(cluster, namespace).items()}


def _on_demand_only(document: dict) -> dict:
    """The pool on on-demand capacity only (no spot slice for nodes the test did not make)."""
    document["spec"]["policy"] = {"headroom": 0, "maxSpotFraction": 0, "minReplicasPerRegion": 1}
    return document


def _london(tokens_per_second: int) -> dict:
    return {
        **LONDON,
        "demand": {"baselineTokensPerSecond": tokens_per_second, "peakTokensPerSecond": tokens_per_second},
    }


# ---- 1. kill -9 mid-drain and mid-scale ----------------------------------------------------------


def test_a_killed_operator_continues_a_held_drain_without_repeating_it(operator, namespace, tmp_path):
    cluster = operator.cluster
    nodes = _nodes(cluster, namespace, {("eu-west-2", "on-demand"): 2})
    try:
        with (
            _recording(cluster, tmp_path / "pods.json", "pods", "-n", namespace) as pods_seen,
            _operators(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(QUIET)) as own,
        ):
            own.start()
            # Four replicas on two nodes (the scheduler spreads them); the plan wants one node, and a
            # PodDisruptionBudget allows no eviction: the drain starts and is held.
            _keep_all_pods(cluster, namespace)
            cluster.apply(_pool(namespace, [LONDON]), namespace)
            pods = wait_for(
                lambda: _if(_running_pods(cluster, namespace), lambda p: len(p) == 4), 90, what="4 pods running"
            )
            assert len({p["spec"]["nodeName"] for p in pods}) == 2, "the scheduler was expected to spread the pods"
            wait_for(
                lambda: _condition(_pool_status(cluster, namespace), "DrainBlocked").get("reason") == "DrainBlocked",
                60,
                what="DrainBlocked=True",
            )
            cordoned = [n for n in nodes if cluster.get("node", n)["spec"].get("unschedulable")]
            assert len(cordoned) == 1
            kept = next(n for n in nodes if n not in cordoned)
            on_cordoned = sum(p["spec"]["nodeName"] == cordoned[0] for p in pods)
            assert _pool_status(cluster, namespace)["actuation"]["draining"] == cordoned
            generation = _generations(cluster, namespace)
            scaled = _messages(_pool_events(cluster, namespace), "Scaled")

            own.kill()  # mid-drain
            restarted = own.start()
            _stepping(restarted, 3)

            # The new operator continues the drain from the status: nothing cordoned again, nothing
            # scaled again, no pod gone, and the budget still holds the drain.
            events = _pool_events(cluster, namespace)
            cordons = [m for m in _messages(events, "Draining") if m.startswith("Cordon")]
            assert len(cordons) == 1 and cordoned[0] in cordons[0], cordons
            assert _messages(events, "Scaled") == scaled and _once_each(scaled), scaled
            assert _generations(cluster, namespace) == generation
            assert {p["metadata"]["uid"] for p in _running_pods(cluster, namespace)} == {
                p["metadata"]["uid"] for p in pods
            }
            status = _pool_status(cluster, namespace)
            assert _condition(status, "DrainBlocked")["reason"] == "DrainBlocked"
            assert status["actuation"]["draining"] == cordoned
            assert not cluster.get("node", kept)["spec"].get("unschedulable")

            # The budget is lifted: the drain completes once, and only by evictions.
            cluster.kubectl("delete", "pdb", "keep-all", "-n", namespace)
            wait_for(
                lambda: (
                    len(running := _running_pods(cluster, namespace)) == 4
                    and {p["spec"]["nodeName"] for p in running} == {kept}
                ),
                90,
                what="all 4 pods on the node that was kept",
            )
            wait_for(
                lambda: not _pool_status(cluster, namespace)["actuation"].get("draining"), 30, what="the drain over"
            )
            _stepping(restarted, 2)
            events = _pool_events(cluster, namespace)
            assert [m for m in _messages(events, "Draining") if m.startswith("Cordon")] == cordons
            evicted = [
                int(m.rsplit("(", 1)[1].split()[0])
                for m in _messages(events, "Draining")
                if m.startswith("Drain") and "evicted)" in m
            ]
            assert sum(evicted) == on_cordoned, evicted  # the pods on the cordoned node, each evicted once
            assert _generations(cluster, namespace) == generation
            assert _messages(events, "Scaled") == scaled
        assert not _force_deleted(pods_seen), _force_deleted(pods_seen)
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def _lose_drain_records(name: str, namespace: str) -> list[dict]:
    """A ValidatingAdmissionPolicy (and its binding) refusing any pool status in ``namespace`` that records a drain.

    It stands for an operator killed between its cordon and the status write that would have
    recorded the drain: that write can never land, whenever the kill comes.
    """
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["sunblend.dev"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["UPDATE"],
                        "resources": ["inferencepools/status"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.status) || !has(object.status.actuation) || "
                    "!has(object.status.actuation.draining) || size(object.status.actuation.draining) == 0",
                    "message": "a status that records a drain is lost (test)",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    return [policy, binding]


def test_a_drain_whose_status_write_was_lost_to_a_kill_is_still_finished(operator, namespace, tmp_path):
    cluster = operator.cluster
    nodes = _nodes(cluster, namespace, {("eu-west-2", "on-demand"): 2})
    lost = _lose_drain_records(f"{namespace}-lose-drain", namespace)
    try:
        with (
            _recording(cluster, tmp_path / "pods.json", "pods", "-n", namespace) as pods_seen,
            _operators(operator, namespace, tmp_path, "--clock-offset-seconds", _offset(QUIET)) as own,
        ):
            _keep_all_pods(cluster, namespace)
            cluster.apply(_pool(namespace, [LONDON]), namespace)
            for document in lost:
                cluster.apply(document, namespace)
            recorded = json.dumps({"status": {"actuation": {"mode": "Enforce", "draining": ["x"]}}})
            wait_for(
                lambda: "is lost" in cluster.kubectl(
                    "patch", "inferencepools.sunblend.dev", POOL, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", recorded, "--dry-run=server", check=False,
                ).stderr,
                30,
                what="the admission policy in force",
            )  # fmt: skip

            own.start()
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 4, 90, what="4 pods running")
            cordoned = wait_for(
                lambda: [n for n in nodes if cluster.get("node", n)["spec"].get("unschedulable")],
                60,
                interval=0.05,
                what="a node cordoned",
            )
            own.kill()  # after the cordon; the status write recording the drain never landed
            assert len(cordoned) == 1
            kept = next(n for n in nodes if n not in cordoned)
            assert not _pool_status(cluster, namespace).get("actuation", {}).get("draining")
            for document in reversed(lost):
                cluster.kubectl("delete", document["kind"], document["metadata"]["name"])

            restarted = own.start()
            _stepping(restarted, 3)
            # The node was cordoned for this pool's drain: the new operator continues it.
            status = wait_for(
                lambda: _if(_pool_status(cluster, namespace), lambda s: s["actuation"].get("draining") == cordoned),
                20,
                what="the cordoned node's drain continued",
            )
            assert _condition(status, "DrainBlocked")["reason"] == "DrainBlocked"
            cluster.kubectl("delete", "pdb", "keep-all", "-n", namespace)
            wait_for(
                lambda: (
                    len(running := _running_pods(cluster, namespace)) == 4
                    and {p["spec"]["nodeName"] for p in running} == {kept}
                ),
                90,
                what="all 4 pods on the node that was kept",
            )
        assert not _force_deleted(pods_seen), _force_deleted(pods_seen)
    finally:
        for document in reversed(lost):
            cluster.kubectl("delete", document["kind"], document["metadata"]["name"], "--ignore-not-found", check=False)
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_a_killed_operator_finishes_a_scale_up_without_asking_for_nodes_twice(operator, namespace, tmp_path):
    cluster = operator.cluster
    api = kube_config.new_client_from_config(str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    offset = _offset(INDIA_EVENING)  # one clock for both operators: the nodes' boot times are on it
    args = ("--node-provider", "kwok", "--kwok-delay-seconds", "5", "--clock-offset-seconds", offset)
    wanted = {("ap-south-1", "spot"): 1, ("ap-south-1", "on-demand"): 1, ("eu-west-2", "on-demand"): 1}
    try:
        with (
            _recording(cluster, tmp_path / "slices.json", "deployments", "-n", namespace) as slices_seen,
            _operators(operator, namespace, tmp_path, *args) as own,
        ):
            own.start()
            cluster.apply(_pool(namespace, [MUMBAI, LONDON]), namespace)
            # kill -9 the moment the first write of the scale-up lands (a node asked of the provider):
            # the rest of the step (other nodes, the slices, the status, the events) may not have run.
            nodes = watch.Watch()
            for _ in nodes.stream(
                core.list_node, label_selector=f"sunblend.dev/pool-namespace={namespace}", timeout_seconds=60
            ):
                own.kill()
                nodes.stop()
                break
            assert own.running is None, "no kwok node was asked for within 60 s"
            first = _node_uids(cluster, namespace)
            print(f"\nkilled after {len(first)} node(s), {len(_slices(cluster, namespace))} slice(s) were written")

            restarted = own.start()
            wait_for(lambda: _by_offer(_kwok_nodes(cluster, namespace)) == wanted, 30, what="the planned kwok nodes")
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 12, 90, what="12 pods running on booted nodes")
            _stepping(restarted, 3)

            uids = _node_uids(cluster, namespace)
            assert len(uids) == 3 and all(uids[name] == uid for name, uid in first.items())  # none made twice
            assert set(_replicas(cluster, namespace).values()) == {4}
            assert set(_generations(cluster, namespace).values()) == {1}  # each slice written once
            assert all(changes == [4] for changes in _replica_changes(slices_seen).values())
            scaled = _messages(_pool_events(cluster, namespace), "Scaled")
            for name in uids:
                assert sum(name in m and m.startswith("kwok: created") for m in scaled) <= 1, scaled
                assert sum(m == f"kwok: node {name} has booted" for m in scaled) <= 1, scaled
            assert _once_each(scaled), scaled
    finally:
        cluster.kubectl(
            "delete", "nodes", "-l", f"sunblend.dev/pool-namespace={namespace}", "--wait=false", check=False
        )


# ---- 2. the API server and etcd restart ----------------------------------------------------------


class ControlPlaneProcess:
    """One of hack/cluster.sh's processes, found through its PID file, restarted with its own command line."""

    def __init__(self, state: Path, name: str) -> None:
        self.state, self.name = state, name
        self.pid = int((state / "pids" / f"{name}.pid").read_text())
        self.argv = Path(f"/proc/{self.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert Path(os.fsdecode(self.argv[0])).name == name, self.argv[0]
        self.started: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited within 5 s (hack/cluster.sh's ``stop`` waits 10 s).

        kube-apiserver stops listening at once on SIGTERM but, here, does not exit within 30 s.
        """
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            wait_for(lambda: not self.alive(), 10, what=f"{self.name} to exit")
        if self.started is not None:
            self.started.wait(timeout=5)

    def start(self) -> None:
        """Start it again as hack/cluster.sh does (own session, log appended), and record the new PID."""
        with (self.state / "logs" / f"{self.name}.log").open("ab") as log:
            self.started = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.started.pid
        (self.state / "pids" / f"{self.name}.pid").write_text(f"{self.pid}\n")


def _restart_api_server_and_etcd(cluster: Cluster, down_seconds: float) -> float:
    """Stop kube-apiserver, then etcd (its data folder kept); start both again; return the seconds without an API.

    Whatever fails, both are running again when this returns or raises, for the rest of the session.
    """
    state = cluster.kubeconfig.parent
    etcd, apiserver = ControlPlaneProcess(state, "etcd"), ControlPlaneProcess(state, "kube-apiserver")
    ports = dict(line.split("=", 1) for line in (state / "ports.env").read_text().split())
    stopped = time.monotonic()
    try:
        apiserver.stop()
        etcd.stop()
        time.sleep(down_seconds)
    finally:
        if not etcd.alive():
            etcd.start()
        wait_for(
            lambda: prometheus_e2e.http_ok(f"http://127.0.0.1:{ports['ETCD_PORT']}/health") or not etcd.alive(),
            30,
            what="etcd healthy",
        )
        assert etcd.alive(), f"etcd did not start again (log: {state / 'logs' / 'etcd.log'})"
        if not apiserver.alive():
            apiserver.start()
        wait_for(
            lambda: not apiserver.alive() or cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
            90,
            interval=0.5,
            what="kube-apiserver ready",
        )
        assert apiserver.alive(), f"kube-apiserver did not start again (log: {state / 'logs' / 'kube-apiserver.log'})"
    return time.monotonic() - stopped


def test_the_operator_recovers_from_an_api_server_and_etcd_restart_without_repeating_or_losing_anything(
    operator, namespace, tmp_path
):
    cluster = operator.cluster
    nodes = _nodes(cluster, namespace, {("eu-west-2", "on-demand"): 1})
    # No leader election: a leader that cannot renew its Lease for 10 s steps down and exits (as
    # client-go's do, for its Deployment to restart it); this test is about one process riding it out.
    args = ("--no-leader-election", "--clock-offset-seconds", _offset(QUIET))
    try:
        with _operators(operator, namespace, tmp_path, *args) as own:
            running = own.start()
            cluster.apply(_on_demand_only(_pool(namespace, [LONDON])), namespace)
            wait_for(lambda: _replicas(cluster, namespace) == {LONDON_SLICE: 4}, 60, what="the slice at 4 replicas")
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 4, 90, what="4 pods running")
            _stepping(running, 2)
            before = _pool_status(cluster, namespace)
            generation = _generations(cluster, namespace)
            scaled = _messages(_pool_events(cluster, namespace), "Scaled")
            assert scaled and _once_each(scaled)

            outage = _restart_api_server_and_etcd(cluster, down_seconds=3)
            print(f"\nno API server for {outage:.1f} s")
            assert running.process is not None and running.process.poll() is None, "the operator exited"
            _stepping(running, 3, timeout=90)

            # Nothing lost: the plan, the conditions and the engine's state are all still there.
            after = _pool_status(cluster, namespace)
            for key in ("plannedHour", "current", "policyState", "actuation", "observedGeneration", "solveStatus"):
                assert after.get(key), f"status.{key} lost: {after}"
            assert after["plannedHour"] == before["plannedHour"]
            assert after["policyState"]["planned"] == before["policyState"]["planned"]
            assert {c["type"] for c in before["conditions"]} <= {c["type"] for c in after["conditions"]}
            assert _condition(after, "Ready")["status"] == "True"
            # Nothing repeated: no write to the slice, no second Scaled event.
            assert _generations(cluster, namespace) == generation
            assert _messages(_pool_events(cluster, namespace), "Scaled") == scaled

            # ...and it still acts on what changes: kopf's watch is back, and the fast loop writes.
            cluster.apply(_on_demand_only(_pool(namespace, [_london(6000)])), namespace)
            wait_for(lambda: _replicas(cluster, namespace) == {LONDON_SLICE: 8}, 60, what="the slice scaled to 8")
            _stepping(running, 3)
            new = [m for m in _messages(_pool_events(cluster, namespace), "Scaled") if m not in scaled]
            assert len(new) == 1 and "4 -> 8" in new[0], new
            assert running.process is not None and running.process.poll() is None
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


# ---- 3. Prometheus down during the fast loop -----------------------------------------------------


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[prometheus_e2e.Prometheus]:
    """Debian's Prometheus with nothing to scrape: every query answers, with no series."""
    if not prometheus_e2e.PROMETHEUS.is_file():
        pytest.fail(f"no Prometheus binary at {prometheus_e2e.PROMETHEUS}: run `make prometheus`")
    folder = tmp_path / "prometheus"
    folder.mkdir()
    server = prometheus_e2e.Prometheus(folder, {})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_no_scale_down_while_prometheus_is_down_and_metrics_come_back(operator, namespace, tmp_path, prometheus_server):
    cluster = operator.cluster
    nodes = _nodes(cluster, namespace, {("eu-west-2", "on-demand"): 2})
    args = ("--prometheus-url", prometheus_server.url, "--prometheus-timeout", "2")

    def metrics_available() -> str | None:
        return _condition(_pool_status(cluster, namespace), "MetricsAvailable").get("status")

    try:
        with (
            _recording(cluster, tmp_path / "slices.json", "deployments", "-n", namespace) as slices_seen,
            _operators(operator, namespace, tmp_path, *args, "--clock-offset-seconds", _offset(QUIET)) as own,
        ):
            running = own.start()
            # Five replicas' worth of demand: two nodes, eight replicas.
            cluster.apply(_on_demand_only(_pool(namespace, [_london(5000)])), namespace)
            wait_for(lambda: metrics_available() == "True", 30, what="MetricsAvailable=True")
            wait_for(lambda: _replicas(cluster, namespace) == {LONDON_SLICE: 8}, 60, what="the slice at 8 replicas")
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 8, 90, what="8 pods running")

            prometheus_server.stop()
            # Answers are cached for up to a minute, so the outage shows within one.
            status = wait_for(
                lambda: _if(
                    _pool_status(cluster, namespace),
                    lambda s: _condition(s, "MetricsAvailable").get("status") == "False",
                ),
                75,
                interval=0.5,
                what="MetricsAvailable=False",
            )
            message = _condition(status, "MetricsAvailable")["message"]
            assert _condition(status, "MetricsAvailable")["reason"] == "PrometheusUnavailable"
            assert "cannot connect to Prometheus" in message, message

            # Demand falls to one node's worth while Prometheus is down: the plan follows, the
            # capacity does not (nothing is removed on missing data).
            cluster.apply(_on_demand_only(_pool(namespace, [_london(1000)])), namespace)
            wait_for(
                lambda: _pool_status(cluster, namespace).get("observedGeneration") == 2, 30, what="the new spec handled"
            )
            _stepping(running, 5)
            status = _pool_status(cluster, namespace)
            assert status["policyState"]["planned"] == {"eu-west-2/h100/on-demand": 1}  # the plan: one node
            assert _replicas(cluster, namespace) == {LONDON_SLICE: 8}
            assert not any(cluster.get("node", n)["spec"].get("unschedulable") for n in nodes)
            assert not [c for c in status["actuation"].get("commands") or [] if c["kind"] in ("Cordon", "Drain")]
            assert len(_running_pods(cluster, namespace)) == 8
            assert _condition(status, "MetricsAvailable")["status"] == "False"
            events = _pool_events(cluster, namespace)
            assert not [m for m in _messages(events, "Scaled") if "8 -> 4" in m]
            assert not _messages(events, "Draining")

            prometheus_server.start()
            wait_for(lambda: metrics_available() == "True", 75, interval=0.5, what="MetricsAvailable=True again")
            # With measurements back the lower plan is carried out.
            wait_for(lambda: _replicas(cluster, namespace) == {LONDON_SLICE: 4}, 30, what="the slice down to 4")
        assert _replica_changes(slices_seen) == {LONDON_SLICE: [8, 4]}
    finally:
        for name in nodes:
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)


# ---- 4. a kwok node flapping Ready/NotReady -----------------------------------------------------


def _set_ready(cluster: Cluster, node: str, ready: bool) -> None:
    """Write the node's Ready condition through the status subresource, as a kubelet would."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "flapping (test)",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    patch = {"status": {"conditions": [condition]}}  # a strategic merge: conditions merge by type
    cluster.kubectl("patch", "node", node, "--subresource=status", "-p", json.dumps(patch))


def _flap(cluster: Cluster, node: str, times: int, seconds: float, sample: Callable[[], None]) -> None:
    """``node`` NotReady then Ready again, ``times`` times, each state held ``seconds``.

    kwok sets a node it manages Ready again at once, so the node is taken out of kwok's hands for the
    flapping (its annotation changed) and handed back after, Ready.
    """
    cluster.kubectl("annotate", "node", node, "kwok.x-k8s.io/node=flapping", "--overwrite")
    try:
        for _ in range(times):
            for ready in (False, True):
                _set_ready(cluster, node, ready)
                held = time.monotonic() + seconds
                while time.monotonic() < held:
                    sample()
                    time.sleep(0.2)
    finally:
        cluster.kubectl("annotate", "node", node, "kwok.x-k8s.io/node=fake", "--overwrite")


def test_a_flapping_node_moves_no_replicas_and_asks_for_no_nodes(operator, namespace, tmp_path):
    cluster = operator.cluster
    args = ("--node-provider", "kwok", "--kwok-delay-seconds", "3", "--clock-offset-seconds", _offset(QUIET))
    try:
        with (
            _recording(cluster, tmp_path / "slices.json", "deployments", "-n", namespace) as slices_seen,
            _recording(cluster, tmp_path / "nodes.json", "nodes", "-l", "sunblend.dev/provider=kwok") as nodes_seen,
            _operators(operator, namespace, tmp_path, *args) as own,
        ):
            running = own.start()
            cluster.apply(_on_demand_only(_pool(namespace, [_london(5000)])), namespace)
            wait_for(
                lambda: _by_offer(_kwok_nodes(cluster, namespace)) == {("eu-west-2", "on-demand"): 2},
                30,
                what="two kwok nodes",
            )
            wait_for(lambda: len(_running_pods(cluster, namespace)) == 8, 90, what="8 pods running on booted nodes")
            wait_for(
                lambda: _condition(_pool_status(cluster, namespace), "CapacityAvailable").get("status") == "True",
                30,
                what="CapacityAvailable=True",
            )
            _stepping(running, 2)
            uids = _node_uids(cluster, namespace)
            generation = _generations(cluster, namespace)
            events_before = _pool_events(cluster, namespace)
            flapping = sorted(uids)[0]

            seen: list[str | None] = []

            def sample() -> None:
                seen.append(_condition(_pool_status(cluster, namespace), "CapacityAvailable").get("status"))

            started = time.monotonic()
            _flap(cluster, flapping, times=4, seconds=3, sample=sample)
            runs = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
            print(f"\nflapped {flapping} 4 times in {time.monotonic() - started:.0f} s; CapacityAvailable: {runs}")
            assert "False" in seen, "the operator never saw the node NotReady: the flapping proved nothing"
            wait_for(
                lambda: _condition(_pool_status(cluster, namespace), "CapacityAvailable").get("status") == "True",
                30,
                what="CapacityAvailable=True after the flapping",
            )
            _stepping(running, 3)

            # Hysteresis: a node that is NotReady for seconds counts as booting, not as lost: no
            # replica moves away and back, no node is asked for or given back.
            changes = _replica_changes(slices_seen)
            assert changes == {LONDON_SLICE: [8]}, changes
            assert _generations(cluster, namespace) == generation
            assert _node_uids(cluster, namespace) == uids
            created_or_deleted = {
                e["object"]["metadata"]["name"]
                for e in nodes_seen.events()
                if e["type"] in ("ADDED", "DELETED")
                and e["object"]["metadata"]["labels"].get("sunblend.dev/pool-namespace") == namespace
            }
            assert created_or_deleted == set(uids)  # the two made at the start, nothing since
            new = [e for e in _pool_events(cluster, namespace) if e not in events_before]
            acted = [(e["reason"], e["message"]) for e in new if e["reason"] in ("Scaled", "Draining", "StaleCommand")]
            assert not acted, acted
            assert len(_running_pods(cluster, namespace)) == 8
    finally:
        cluster.kubectl(
            "delete", "nodes", "-l", f"sunblend.dev/pool-namespace={namespace}", "--wait=false", check=False
        )
