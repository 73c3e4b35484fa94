"""Operator benchmark: apply-to-Ready latency and resident memory with 1, 100 and 1,000 pools.

Not a test: it writes JSON and prints a table. It starts its own local control plane
(hack/cluster.sh, in a temporary state folder), installs the CRD, runs `sunblend run` as a
subprocess, creates pools (variants of the India/UK example) from a thread pool, and watches
for each pool's Ready condition. Latency is measured on this machine's clock, from just before
the create call to the watch event that shows Ready=True. Memory is the operator's VmRSS and
VmHWM from /proc after each round. Everything it starts, it stops.

    python bench/reconcile.py --out bench/results/reconcile.json

With --acting it runs the operator in Enforce mode with the kwok node provider instead: N pools
(default 100) with a pod template, small demand and a GPU class only their own nodes match. It
times each pool from create to its planned nodes Ready (kwok Nodes of the pool, Ready and no
longer behind the provisioning taint, at least as many per region and capacity type as
``status.current`` plans), then raises the demand of a few pools (a plan change) and times each
from the patch to its new planned nodes Ready. API writes come from the operator's
``sunblend_api_writes_total`` counter: in the change window (the patch until the changed pools'
nodes are Ready and the counter has been still for a while) and in a quiet window with no change
afterwards, which should stay near zero however many pools and slices are unchanged.

    python bench/reconcile.py --acting --pools 100 --out bench/results/reconcile-acting.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GROUP, VERSION, PLURAL = "sunblend.dev", "v1alpha1", "inferencepools"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster(command: str, state: Path) -> str:
    env = {**os.environ, "SUNBLEND_CLUSTER_DIR": str(state)}
    run = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), command], capture_output=True, text=True, env=env, check=True
    )
    return run.stdout


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class ReadyWatcher:
    """Records when each pool in a namespace first shows Ready=True."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str) -> None:
        self.ready: dict[str, float] = {}
        self._api = api
        self._namespace = namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self._api.list_namespaced_custom_object, GROUP, VERSION, self._namespace, PLURAL, timeout_seconds=5
                ):
                    obj = event["object"]
                    conditions = (obj.get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                        self.ready.setdefault(obj["metadata"]["name"], time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:  # a dropped watch is simply restarted
                time.sleep(0.2)
            finally:
                stream.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_round(
    api: client.CustomObjectsApi, core: client.CoreV1Api, pools: int, template: dict, timeout: float
) -> dict[str, object]:
    namespace = f"bench-{pools}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    watcher = ReadyWatcher(api, namespace)
    time.sleep(1.0)
    created: dict[str, float] = {}

    def create(i: int) -> None:
        body = copy.deepcopy(template)
        body["metadata"] = {"name": f"pool-{i:04d}"}
        # Vary demand so no two pools are identical.
        body["spec"]["regions"][0]["demand"]["peakTokensPerSecond"] += 100 * i
        created[body["metadata"]["name"]] = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(pools)))
    create_seconds = time.monotonic() - started
    deadline = time.monotonic() + timeout
    while len(watcher.ready) < pools and time.monotonic() < deadline:
        time.sleep(0.2)
    watcher.stop()
    latencies = [watcher.ready[name] - created[name] for name in created if name in watcher.ready]
    steady = steady_latencies(api, namespace, template, watcher_timeout=timeout)
    return {
        "pools": pools,
        "ready": len(latencies),
        "create_seconds": round(create_seconds, 3),
        "all_ready_seconds": round(max(watcher.ready.values(), default=started) - started, 3),
        "p50_seconds": round(percentile(latencies, 0.5), 3) if latencies else None,
        "p99_seconds": round(percentile(latencies, 0.99), 3) if latencies else None,
        "mean_seconds": round(statistics.mean(latencies), 3) if latencies else None,
        "steady_p50_seconds": round(percentile(steady, 0.5), 3) if steady else None,
        "steady_p99_seconds": round(percentile(steady, 0.99), 3) if steady else None,
        "steady_samples": len(steady),
    }


STEADY_SAMPLES = 30


def steady_latencies(
    api: client.CustomObjectsApi, namespace: str, template: dict, watcher_timeout: float
) -> list[float]:
    """With the round's pools in place and planned, apply pools one at a time and time each to Ready."""
    watcher = ReadyWatcher(api, namespace)
    time.sleep(1.0)
    latencies = []
    for i in range(STEADY_SAMPLES):
        body = copy.deepcopy(template)
        name = f"steady-{i:03d}"
        body["metadata"] = {"name": name}
        body["spec"]["regions"][1]["demand"]["peakTokensPerSecond"] += 50 * i
        started = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        deadline = started + watcher_timeout
        while name not in watcher.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        if name in watcher.ready:
            latencies.append(watcher.ready[name] - started)
        time.sleep(0.2)
    watcher.stop()
    return latencies


# ---- --acting: Enforce mode with the kwok node provider ----------------------------------------

ACTING_NAMESPACE = "bench-acting"
PROVISIONING_TAINT = "sunblend.dev/provisioning"
# The kwok provider labels capacity types with Karpenter's vocabulary; status.current uses sunblend's.
CAPACITY_LABEL = "karpenter.sh/capacity-type"
CAPACITY_TYPES = {"reserved": "committed", "spot": "spot", "on-demand": "on-demand"}
# Demand a pool starts with (1-2 nodes' worth) and what a plan change raises it to.
SMALL = {"baselineTokensPerSecond": 1000, "peakTokensPerSecond": 2000}
RAISED = {"baselineTokensPerSecond": 30000, "peakTokensPerSecond": 40000}


def acting_pool(name: str, i: int) -> dict[str, Any]:
    """A pool shaped like hack/demo/day.yaml with small demand and a GPU class only its own nodes match."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {
            "modelServer": {
                "gpusPerReplica": 2,
                "tokensPerSecondPerReplica": 2400,
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "vllm",
                                "image": "vllm/vllm-openai:v0.11.0",
                                "resources": {
                                    "requests": {"cpu": "4", "nvidia.com/gpu": "2"},
                                    "limits": {"nvidia.com/gpu": "2"},
                                },
                            }
                        ]
                    },
                },
            },
            "regions": [
                {
                    "name": "ap-south-1",
                    "timeZone": "Asia/Kolkata",
                    # Vary demand a little so no two pools are identical; all stay within one node.
                    "demand": {**SMALL, "peakTokensPerSecond": SMALL["peakTokensPerSecond"] + 10 * i},
                },
                {"name": "eu-west-2", "timeZone": "Europe/London", "demand": dict(SMALL)},
            ],
            "gpuClasses": [
                {
                    "name": "h100",
                    "nodeSelector": {"sunblend.dev/bench-pool": name},
                    "gpusPerNode": 8,
                    "prices": {"committed": 5.10, "spot": 2.25, "onDemand": 8.94},
                    "regionPrices": [{"region": "ap-south-1", "committed": 4.90, "spot": 4.60, "onDemand": 8.26}],
                }
            ],
            "policy": {
                "maxSpotFraction": 0.6,
                "routing": {
                    "maxLatencyMs": 150,
                    "latencies": [{"from": "ap-south-1", "to": "eu-west-2", "milliseconds": 120}],
                },
            },
            "actuation": {"mode": "Enforce", "nodeProvider": "kwok"},
        },
    }


def _condition_ready(node: client.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _node_ready(node: client.V1Node) -> bool:
    """Ready as the operator sees it: the Ready condition, and no longer behind the provisioning taint."""
    if node.metadata.deletion_timestamp is not None:
        return False
    if any(t.key == PROVISIONING_TAINT for t in (node.spec.taints if node.spec else None) or []):
        return False
    return _condition_ready(node)


def planned_nodes(pool: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Nodes ``status.current`` plans per (region, capacity type)."""
    out: dict[tuple[str, str], int] = {}
    for entry in (pool.get("status") or {}).get("current") or []:
        key = (entry["region"], entry["capacityType"])
        out[key] = out.get(key, 0) + int(entry["nodes"])
    return {k: v for k, v in out.items() if v > 0}


def planned_generation(pool: dict[str, Any]) -> int:
    """The generation the pool's plan is for (the Planned condition's, else the status's)."""
    status = pool.get("status") or {}
    planned = next((c for c in status.get("conditions") or [] if c.get("type") == "Planned"), {})
    return int(planned.get("observedGeneration") or status.get("observedGeneration") or 0)


class NodesReadyTracker:
    """Watches the namespace's pools and the kwok nodes; records when each expected pool first has
    its planned nodes Ready (a plan for at least the expected generation, at least as many Ready,
    untainted nodes per region and capacity type as planned). With ``watch_nodes=False`` it watches
    only the pools (subclasses that need no nodes, e.g. Advisory mode in bench/load.py)."""

    def __init__(
        self, api: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str, watch_nodes: bool = True
    ) -> None:
        self.done: dict[str, float] = {}
        self.planned: dict[str, dict[tuple[str, str], int]] = {}
        self._api, self._core, self._namespace = api, core, namespace
        self._pools: dict[str, dict[str, Any]] = {}
        self._nodes: dict[str, client.V1Node] = {}
        # The same nodes by their sunblend.dev/pool label, so that checking a pool reads its own
        # nodes only (with 1,000 pools, scanning every node on every event costs seconds of CPU).
        self._pool_nodes: dict[str, dict[str, client.V1Node]] = {}
        self._expected: dict[str, int] = {}  # pool -> least generation its plan must be for
        self.flaps = 0  # times a kwok node's Ready condition left True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(self._pool_events, self._on_pool), daemon=True)]
        if watch_nodes:
            self._threads.append(
                threading.Thread(target=self._watch, args=(self._node_events, self._on_node), daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def expect(self, name: str, generation: int = 0) -> None:
        with self._lock:
            self.done.pop(name, None)
            self._expected[name] = generation
            self._check([name])

    def ready_nodes(self) -> int:
        with self._lock:
            return sum(1 for n in self._nodes.values() if _node_ready(n))

    def nodes(self) -> int:
        with self._lock:
            return len(self._nodes)

    def _pool_events(self, stream: watch.Watch, resource_version: str | None) -> Iterator[dict]:
        return stream.stream(
            self._api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            resource_version=resource_version,
            timeout_seconds=60,
        )

    def _node_events(self, stream: watch.Watch, resource_version: str | None) -> Iterator[dict]:
        return stream.stream(
            self._core.list_node,
            label_selector=f"sunblend.dev/provider=kwok,sunblend.dev/pool-namespace={self._namespace}",
            resource_version=resource_version,
            timeout_seconds=60,
        )

    def _watch(self, events: Any, handle: Any) -> None:
        resource_version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in events(stream, resource_version):
                    handle(event["type"], event["object"])
                    if self._stop.is_set():
                        break
                resource_version = stream.resource_version
            except Exception:  # a dropped watch resumes; an expired version starts over from a full list
                resource_version = None
                time.sleep(0.2)
            finally:
                stream.stop()

    def _on_pool(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._pools.pop(name, None)
            else:
                self._pools[name] = obj
            self._check([name])

    def _on_node(self, kind: str, node: client.V1Node) -> None:
        name = node.metadata.name
        pool = (node.metadata.labels or {}).get("sunblend.dev/pool")
        with self._lock:
            if kind == "DELETED":
                self._nodes.pop(name, None)
                self._pool_nodes.get(pool or "", {}).pop(name, None)
            else:
                previous = self._nodes.get(name)
                if previous is not None and _condition_ready(previous) and not _condition_ready(node):
                    self.flaps += 1
                self._nodes[name] = node
                if pool is not None:
                    self._pool_nodes.setdefault(pool, {})[name] = node
            if pool is not None:
                self._check([pool])

    def _check(self, names: list[str]) -> None:
        now = time.monotonic()
        for name in names:
            if name not in self._expected or name in self.done or name not in self._pools:
                continue
            pool = self._pools[name]
            planned = planned_nodes(pool)
            if not planned or planned_generation(pool) < self._expected[name]:
                continue
            ready: dict[tuple[str, str], int] = {}
            for node in self._pool_nodes.get(name, {}).values():
                labels = node.metadata.labels or {}
                if not _node_ready(node):
                    continue
                key = (
                    labels.get("topology.kubernetes.io/region", ""),
                    CAPACITY_TYPES.get(labels.get(CAPACITY_LABEL, ""), ""),
                )
                ready[key] = ready.get(key, 0) + 1
            if all(ready.get(key, 0) >= count for key, count in planned.items()):
                self.done[name] = now
                self.planned[name] = planned

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)


def api_writes(port: int) -> dict[str, float]:
    """The operator's ``sunblend_api_writes_total`` by method."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sunblend_api_writes_total{"):
            labels, _, value = line.partition("} ")
            method = labels.split('method="', 1)[1].split('"', 1)[0]
            out[method] = float(value)
    return out


def writes_between(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {m: int(after.get(m, 0) - before.get(m, 0)) for m in sorted(set(before) | set(after))}


def wait_done(tracker: NodesReadyTracker, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(n not in tracker.done for n in names):
        time.sleep(0.2)


def _seconds(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 3) if values else None


def run_acting(
    api: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator: subprocess.Popen,
    metrics_port: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    namespace = ACTING_NAMESPACE
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    tracker = NodesReadyTracker(api, core, namespace)
    time.sleep(1.0)
    names = [f"pool-{i:04d}" for i in range(args.pools)]
    created: dict[str, float] = {}

    def create(i: int) -> None:
        name = names[i]
        tracker.expect(name)
        created[name] = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, acting_pool(name, i))

    writes_start = api_writes(metrics_port)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(args.pools)))
    wait_done(tracker, names, args.timeout)
    create_latencies = [tracker.done[n] - created[n] for n in names if n in tracker.done]
    all_ready = max((tracker.done[n] for n in names if n in tracker.done), default=started) - started
    create_planned = dict(tracker.planned)
    print(f"created: {len(create_latencies)}/{args.pools} pools' nodes Ready in {all_ready:.1f} s", file=sys.stderr)
    # Let the pools settle (pods scheduled, slices and status written) before anything is measured.
    time.sleep(args.settle_seconds)
    writes_settled = api_writes(metrics_port)

    # Quiet window before the change: nothing changes, every pool is stepped quiet/replan times.
    time.sleep(args.quiet_seconds)
    writes_before_change = api_writes(metrics_port)

    # The plan change: more demand in Mumbai for a few pools.
    changed = names[: args.changed]
    patched: dict[str, float] = {}
    nodes_before = tracker.nodes()

    def change(name: str) -> None:
        body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        regions = body["spec"]["regions"]
        regions[0]["demand"] = {**regions[0]["demand"], **RAISED}
        generation = body["metadata"]["generation"] + 1
        tracker.expect(name, generation)
        patched[name] = time.monotonic()
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"regions": regions}})

    change_started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(change, changed))
    wait_done(tracker, changed, args.timeout)
    writes_nodes_ready = api_writes(metrics_port)
    change_latencies = [tracker.done[n] - patched[n] for n in changed if n in tracker.done]
    change_planned = {n: tracker.planned[n] for n in changed if n in tracker.planned}
    print(f"changed: {len(change_latencies)}/{len(changed)} pools' new nodes Ready", file=sys.stderr)
    # The writes that follow the nodes (slices scaled up, status) belong to the change too.
    time.sleep(3 * args.replan_seconds)
    writes_change_settled = api_writes(metrics_port)
    change_window = time.monotonic() - change_started

    # Quiet window after the change.
    time.sleep(args.quiet_seconds)
    writes_after_quiet = api_writes(metrics_port)
    memory = memory_kib(operator.pid)
    nodes_total, nodes_ready = tracker.nodes(), tracker.ready_nodes()
    slices = len(client.AppsV1Api().list_namespaced_deployment(namespace).items)
    tracker.stop()

    def total(writes: dict[str, int]) -> int:
        return sum(writes.values())

    create_writes = writes_between(writes_start, writes_settled)
    quiet_before = writes_between(writes_settled, writes_before_change)
    change_to_ready = writes_between(writes_before_change, writes_nodes_ready)
    change_writes = writes_between(writes_before_change, writes_change_settled)
    quiet_after = writes_between(writes_change_settled, writes_after_quiet)
    return {
        "pools": args.pools,
        "changed_pools": len(changed),
        "create": {
            "nodes_ready": len(create_latencies),
            "all_nodes_ready_seconds": round(all_ready, 3),
            "p50_seconds": _seconds(create_latencies, 0.5),
            "p90_seconds": _seconds(create_latencies, 0.9),
            "max_seconds": _seconds(create_latencies, 1.0),
            "planned_nodes": sum(sum(p.values()) for p in create_planned.values()),
            "writes": create_writes,
            "writes_per_pool": round(total(create_writes) / args.pools, 2),
            "settle_seconds": args.settle_seconds,
        },
        "change": {
            "nodes_ready": len(change_latencies),
            "p50_seconds": _seconds(change_latencies, 0.5),
            "p90_seconds": _seconds(change_latencies, 0.9),
            "max_seconds": _seconds(change_latencies, 1.0),
            "planned_nodes_before": sum(sum(create_planned.get(n, {}).values()) for n in changed),
            "planned_nodes_after": sum(sum(p.values()) for p in change_planned.values()),
            "kwok_nodes_before": nodes_before,
            "writes_to_nodes_ready": change_to_ready,
            "writes": change_writes,
            "writes_per_changed_pool": round(total(change_writes) / max(1, len(changed)), 2),
            "window_seconds": round(change_window, 1),
            "writes_per_changed_pool_above_quiet_rate": round(
                (total(change_writes) - total(quiet_before) / args.quiet_seconds * change_window)
                / max(1, len(changed)),
                2,
            ),
        },
        "quiet_before_change": {
            "seconds": args.quiet_seconds,
            "writes": quiet_before,
            "writes_per_pool": round(total(quiet_before) / args.pools, 3),
        },
        "quiet": {
            "seconds": args.quiet_seconds,
            "writes": quiet_after,
            "writes_per_pool": round(total(quiet_after) / args.pools, 3),
        },
        "slices": slices,
        "kwok_nodes": nodes_total,
        "kwok_nodes_ready": nodes_ready,
        "kwok_node_ready_flaps": tracker.flaps,
        "memory_kib": memory,
    }


def main_acting(args: argparse.Namespace) -> int:
    metrics_port = free_port()
    operator_args = [
        "--actuation-mode",
        "Enforce",
        "--node-provider",
        "kwok",
        "--kwok-delay-seconds",
        str(args.kwok_delay_seconds),
        "--replan-seconds",
        str(args.replan_seconds),
    ]
    with control_plane(operator_args, metrics_port) as (api, core, operator):
        result = run_acting(api, core, operator, metrics_port, args)
    document = {
        "benchmark": "operator-acting",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "command": " ".join(["python", "bench/reconcile.py", *sys.argv[1:]]),
        "operator_args": operator_args,
        "notes": [
            "nodes Ready: the pool's kwok Nodes with Ready=True and no provisioning taint, at least as many per "
            "region and capacity type as status.current plans (for a change: a plan for the patched generation)",
            "times are this machine's monotonic clock, from just before the create or patch call to the watch event",
            "create writes: from the first create until settle_seconds after the last pool's nodes were Ready",
            "change writes: from the first patch until 3 re-plan periods after the changed pools' nodes were Ready; "
            "they include whatever the unchanged pools wrote meanwhile (see the quiet windows for that rate)",
            "quiet windows: no change at all; writes there are what unchanged pools cost",
        ],
        "result": result,
    }
    out = Path(args.out or "bench/results/reconcile-acting.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2))
    render_acting(document)
    print(f"wrote {out}")
    return 0


def render_acting(document: dict[str, Any]) -> None:
    """Print an --acting run as a table."""
    r = document["result"]
    table = Table(
        title="Operator acting (Enforce, kwok nodes): create or plan change -> planned nodes Ready; "
        f"API writes per changed pool (change window, {r['change']['window_seconds']:g} s) and per pool "
        f"in a {r['quiet']['seconds']:g} s quiet window with no change"
    )
    columns = (
        "pools",
        "create p50 s",
        "create p90 s",
        "changed",
        "change p50 s",
        "change p90 s",
        "writes / changed",
        "quiet writes / pool",
        "RSS MiB",
        "peak MiB",
    )
    for column in columns:
        table.add_column(column, justify="right")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    table.add_row(
        str(r["pools"]),
        seconds(r["create"]["p50_seconds"]),
        seconds(r["create"]["p90_seconds"]),
        str(r["changed_pools"]),
        seconds(r["change"]["p50_seconds"]),
        seconds(r["change"]["p90_seconds"]),
        f"{r['change']['writes_per_changed_pool']:g}",
        f"{r['quiet']['writes_per_pool']:g}",
        f"{r['memory_kib']['VmRSS'] / 1024:.0f}",
        f"{r['memory_kib']['VmHWM'] / 1024:.0f}",
    )
    Console().print(table)


@contextlib.contextmanager
def control_plane(
    operator_args: list[str], metrics_port: int
) -> Iterator[tuple[client.CustomObjectsApi, client.CoreV1Api, subprocess.Popen]]:
    """A local control plane with the CRD installed and `sunblend run` against it; all stopped after."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sunblend-bench-"))
        state = Path(tmp) / "cluster"
        exports = cluster("up", state)
        kubeconfig = next(line.split("=", 1)[1] for line in exports.splitlines() if "KUBECONFIG" in line)
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        operator = None
        try:
            subprocess.run(
                [str(BIN / "kubectl"), "apply", "-f", str(ROOT / "crds")], env=env, check=True, capture_output=True
            )
            time.sleep(2)
            config.load_kube_config(kubeconfig)
            api, core = client.CustomObjectsApi(), client.CoreV1Api()
            log = stack.enter_context((Path(tmp) / "operator.log").open("wb"))
            liveness = free_port()
            operator = subprocess.Popen(
                [
                    str(BIN / "sunblend"),
                    "run",
                    "--metrics-port",
                    str(metrics_port),
                    "--metrics-address",
                    "127.0.0.1",
                    "--liveness",
                    f"http://127.0.0.1:{liveness}/healthz",
                    *operator_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            time.sleep(5)
            try:
                yield api, core, operator
            except BaseException:
                # The operator's log goes with the temporary folder: show its end first.
                tail = (Path(tmp) / "operator.log").read_bytes()[-6000:].decode(errors="replace")
                print(f"--- the operator's log, its end ---\n{tail}", file=sys.stderr, flush=True)
                raise
        finally:
            if operator is not None:
                operator.send_signal(signal.SIGTERM)
                try:
                    operator.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    operator.kill()
                    operator.wait()
            cluster("down", state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON to write (default bench/results/reconcile.json, -acting.json)")
    parser.add_argument("--rounds", default="1,100,1000", help="pool counts, comma-separated")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--show", help="only print the table of an earlier run's JSON")
    parser.add_argument("--acting", action="store_true", help="Enforce mode with the kwok node provider")
    parser.add_argument("--pools", type=int, default=100, help="--acting: pools")
    parser.add_argument("--changed", type=int, default=10, help="--acting: pools whose plan is changed")
    parser.add_argument("--quiet-seconds", type=float, default=30, help="--acting: the quiet window")
    parser.add_argument("--kwok-delay-seconds", type=float, default=10, help="--acting: nodes' provisioning delay")
    parser.add_argument("--replan-seconds", type=float, default=5, help="--acting: the operator's fast loop")
    parser.add_argument("--settle-seconds", type=float, default=30, help="--acting: wait after create, unmeasured")
    args = parser.parse_args()
    if args.show:
        shown = json.loads(Path(args.show).read_text())
        if shown.get("benchmark") == "operator-acting":
            render_acting(shown)
        else:
            render(shown["rounds"])
        return 0
    if args.acting:
        return main_acting(args)
    template = yaml.safe_load((ROOT / "examples" / "follow-the-sun-india-uk.yaml").read_text())
    with control_plane([], free_port()) as (api, core, operator):
        rounds = []
        for count in (int(c) for c in args.rounds.split(",")):
            result = run_round(api, core, count, template, args.timeout)
            result["memory_kib"] = memory_kib(operator.pid)
            rounds.append(result)
            print(f"{count} pools: {result}", file=sys.stderr)
    out = Path(args.out or "bench/results/reconcile.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"benchmark": "operator", "python": platform.python_version(), "cpus": os.cpu_count(), "rounds": rounds},
            indent=2,
        )
    )
    render(rounds)
    print(f"wrote {out}")
    return 0


def render(rounds: list[dict]) -> None:
    """Print the results as a table."""
    table = Table(
        title="Operator: apply -> Ready=True. Burst: N pools created at once by 8 client threads; "
        f"steady: {STEADY_SAMPLES} more applied one at a time with the N in place"
    )
    columns = (
        "pools",
        "ready",
        "create s",
        "all ready s",
        "burst p50 s",
        "burst p99 s",
        "steady p50 s",
        "steady p99 s",
        "RSS MiB",
        "peak RSS MiB",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for r in rounds:
        mem = r["memory_kib"]
        table.add_row(
            *(
                str(r[k])
                for k in (
                    "pools",
                    "ready",
                    "create_seconds",
                    "all_ready_seconds",
                    "p50_seconds",
                    "p99_seconds",
                    "steady_p50_seconds",
                    "steady_p99_seconds",
                )
            ),
            f"{mem['VmRSS'] / 1024:.0f}",
            f"{mem['VmHWM'] / 1024:.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
