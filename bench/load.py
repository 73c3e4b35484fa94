"""Load benchmark: 1,000 pools created in a burst, in Advisory mode and in Enforce mode.

Not a test: it writes JSON and prints a table. For each mode it starts a fresh local control
plane and `sunblend run` (bench/reconcile.py's ``control_plane``), creates one warm-up pool and
waits for it (so the operator is up), deletes it, then:

1. Burst: creates N pools at once from 8 client threads and times each from just before its
   create call to the watch event that shows its Ready=True condition, as a user would read it
   (``kubectl wait --for=condition=Ready``). In Enforce mode it also times each pool to its planned
   kwok Nodes Ready (bench/reconcile.py's ``NodesReadyTracker``), and then all to their pods Ready
   (one pod per planned node): until then the controllers are still creating and scheduling pods.
2. Settle: waits ``--settle-seconds`` and at least two fast-loop passes over every pool (in Enforce
   mode, after the planned nodes and the pods are Ready), so the burst's own writes (nodes, slices,
   pods, status) are over.
   A burst not done within ``--timeout`` has no steady state: then nothing is waited for, the quiet
   window is measured at once and marked ``steady_state: false``.
3. Quiet window (``--quiet-seconds``, and at least one pass): nothing is changed; the API writes
   the operator sends in it (its ``sunblend_api_writes_total`` counter), scaled to a minute, are
   the steady-state write rate; the API server's own count of writes to pools
   (``apiserver_request_total``) is recorded beside it, as it also sees kopf's status patches.
   The operator's RSS at its end is the steady-state RSS.
4. Steady state: with the N pools in place, ``--steady-samples`` times (for at most
   ``--steady-budget-seconds``), one at a time and
   ``--steady-interval`` seconds apart (so the samples span fast-loop passes), either a new pool
   is created or an existing pool's spec is changed (its demand nudged, which re-plans it but
   keeps it on its one node per region); each is timed to Ready=True for its new generation.
5. Memory: the operator's peak RSS (VmHWM in /proc/PID/status) over the whole run.

The operator runs with its production fast loop (``--replan-seconds``, default 30) in both modes;
Enforce mode uses the kwok node provider (``--kwok-delay-seconds``, default 10). Every pool has
the shape of bench/reconcile.py's ``--acting`` pool with one 8-GPU replica per node: two regions
with small demand, one node per region, so N pools in Enforce mode make 2N kwok Nodes and 2N
one-replica Deployments (each with a PodDisruptionBudget). The JSON is written after each mode
(``complete: false`` until the last), so a later mode's failure keeps what was measured.

    python bench/load.py --pools 1000 --timeout 300 --out bench/results/load.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

from kubernetes import client, watch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reconcile as rc  # bench/reconcile.py: control plane, pools, trackers

NAMESPACE = "load"
MODES = ("Advisory", "Enforce")
# The goals of issue 11, reported as met or missed (never tuned).
GOAL_BURST_ALL_READY_SECONDS = 30.0
GOAL_STEADY_P99_SECONDS = 3.0
GOAL_PEAK_MB = 250.0


class PoolTracker(rc.NodesReadyTracker):
    """NodesReadyTracker that also records, per expected pool, when its Ready condition is True for
    at least the expected generation (one watch of the pools serves both); with ``nodes``, it also
    watches the pools' pods and counts the Ready ones."""

    def __init__(self, api: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str, nodes: bool) -> None:
        self.ready: dict[str, float] = {}
        self._ready_expected: dict[str, int] = {}
        self._ready_generation: dict[str, int] = {}  # pool -> generation of its Ready=True condition
        self._ready_pods: set[str] = set()
        super().__init__(api, core, namespace, watch_nodes=nodes)
        if nodes:
            pods = threading.Thread(target=self._watch, args=(self._pod_events, self._on_pod), daemon=True)
            self._threads.append(pods)
            pods.start()

    def ready_pods(self) -> int:
        """The pools' pods (labelled with a pool) that are Ready and not being deleted."""
        with self._lock:
            return len(self._ready_pods)

    def _pod_events(self, stream: watch.Watch, resource_version: str | None) -> Any:
        return stream.stream(
            self._core.list_namespaced_pod,
            self._namespace,
            label_selector="sunblend.dev/pool",
            resource_version=resource_version,
            timeout_seconds=60,
        )

    def _on_pod(self, kind: str, pod: client.V1Pod) -> None:
        conditions = (pod.status.conditions if pod.status is not None else None) or []
        ready = (
            kind != "DELETED"
            and pod.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in conditions)
        )
        with self._lock:
            (self._ready_pods.add if ready else self._ready_pods.discard)(pod.metadata.name)

    def expect_ready(self, name: str, generation: int = 0) -> None:
        with self._lock:
            self.ready.pop(name, None)
            self._ready_expected[name] = generation
            self._check_ready(name, time.monotonic())

    def _on_pool(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready" and c.get("status") == "True"), None)
        with self._lock:
            if kind == "DELETED" or ready is None:
                self._ready_generation.pop(name, None)
            else:
                self._ready_generation[name] = int(ready.get("observedGeneration") or 0)
            self._check_ready(name, now)
        super()._on_pool(kind, obj)

    def _check_ready(self, name: str, now: float) -> None:
        expected = self._ready_expected.get(name)
        if expected is not None and name not in self.ready and self._ready_generation.get(name, -1) >= expected:
            self.ready[name] = now


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's write counter by method, and its step-time histogram's sum and count."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sunblend_api_writes_total{"):
            labels, _, value = line.partition("} ")
            out["writes_" + labels.split('method="', 1)[1].split('"', 1)[0]] = float(value)
        elif line.startswith(
            ("sunblend_reconcile_duration_seconds_sum ", "sunblend_reconcile_duration_seconds_count ")
        ):
            key, _, value = line.partition(" ")
            out["steps_" + key.rsplit("_", 1)[1]] = float(value)
    return out


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def apiserver_writes() -> dict[str, float]:
    """The API server's own count of write requests (``apiserver_request_total``), by resource[/subresource],
    from every client: the operator (kopf's status patches and its leader Lease included), kwok,
    the controller-manager and the scheduler."""
    api_client = client.ApiClient()
    request = api_client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api_client.call_api(*request, _request_timeout=10)
    text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.partition("} ")
        labels = dict(
            (part.split("=", 1)[0], part.split("=", 1)[1].strip('"'))
            for part in labels_text.removeprefix("apiserver_request_total{").split('",')
            if "=" in part
        )
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
        out[key] = out.get(key, 0) + float(value)
    return out


def writes(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    keys = sorted(k for k in set(before) | set(after) if k.startswith("writes_"))
    return {k.removeprefix("writes_"): int(after.get(k, 0) - before.get(k, 0)) for k in keys}


def steps(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Pool steps (handler calls and fast-loop steps) between two readings, and their mean time."""
    count = after.get("steps_count", 0) - before.get("steps_count", 0)
    total = after.get("steps_sum", 0) - before.get("steps_sum", 0)
    return {"steps": int(count), "mean_step_seconds": round(total / count, 4) if count else None}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The processes whose CPU time a burst reports beside the operator's (by their /proc comm name).
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok")


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far: the whole machine ("busy": all but idle and iowait, over every CPU) and
    each control-plane process by name, so a burst's reading shows who shared the machine's CPUs."""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    ticks = os.sysconf("SC_CLK_TCK")
    out = {"busy": (sum(fields) - fields[3] - fields[4]) / ticks, "bench_client": cpu_seconds(os.getpid())}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name.startswith(CONTROL_PLANE):
            values = text.rsplit(")", 1)[1].split()
            key = next(n for n in CONTROL_PLANE if name.startswith(n))
            out[key] = out.get(key, 0.0) + (int(values[11]) + int(values[12])) / ticks
    return out


def cpu_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU seconds used between two ``machine_cpu_seconds`` readings, and the machine's busy share of its CPUs."""
    used = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in after}
    used["busy_fraction"] = round(used["busy"] / (seconds * (os.cpu_count() or 1)), 3) if seconds > 0 else 0.0
    return used


def load_pool(name: str, i: int, mode: str) -> dict[str, Any]:
    """bench/reconcile.py's --acting pool with one replica per node (8 GPUs, 9,600 tokens/s), so that a pool
    is one node and one pod per region: the control plane then runs 2N pods for N pools, not 8N."""
    body = rc.acting_pool(name, i)
    server = body["spec"]["modelServer"]
    server["gpusPerReplica"], server["tokensPerSecondPerReplica"] = 8, 9600
    resources = server["template"]["spec"]["containers"][0]["resources"]
    resources["requests"]["nvidia.com/gpu"] = resources["limits"]["nvidia.com/gpu"] = "8"
    body["spec"]["actuation"] = {"mode": mode, "nodeProvider": "kwok"} if mode == "Enforce" else {"mode": mode}
    return body


def wait_for(names: list[str], done: dict[str, float], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(n not in done for n in names):
        time.sleep(0.1)


def summary(latencies: list[float]) -> dict[str, float | int | None]:
    return {
        "samples": len(latencies),
        "p50_seconds": rc._seconds(latencies, 0.5),
        "p99_seconds": rc._seconds(latencies, 0.99),
        "max_seconds": rc._seconds(latencies, 1.0),
    }


def run_mode(
    api: client.CustomObjectsApi,
    core: client.CoreV1Api,
    pid: int,
    metrics_port: int,
    mode: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    enforce = mode == "Enforce"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    tracker = PoolTracker(api, core, NAMESPACE, nodes=enforce)
    time.sleep(1.0)
    try:
        return _measure(api, tracker, pid, metrics_port, mode, args)
    finally:
        tracker.stop()


def _measure(
    api: client.CustomObjectsApi,
    tracker: PoolTracker,
    pid: int,
    metrics_port: int,
    mode: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    enforce = mode == "Enforce"

    def log(text: str) -> None:
        print(f"[{mode}] {text}", file=sys.stderr, flush=True)

    # Warm-up: the operator is watching once a pool gets Ready; an Advisory pool acts on nothing.
    tracker.expect_ready("warmup", 1)
    api.create_namespaced_custom_object(rc.GROUP, rc.VERSION, NAMESPACE, rc.PLURAL, load_pool("warmup", 0, "Advisory"))
    wait_for(["warmup"], tracker.ready, max(args.timeout, 120))
    if "warmup" not in tracker.ready:
        raise RuntimeError("the warm-up pool never got Ready: is the operator running?")
    api.delete_namespaced_custom_object(rc.GROUP, rc.VERSION, NAMESPACE, rc.PLURAL, "warmup")
    time.sleep(2.0)

    # 1. Burst.
    names = [f"pool-{i:04d}" for i in range(args.pools)]
    created: dict[str, float] = {}

    def create(i: int) -> None:
        name = names[i]
        tracker.expect_ready(name, 1)
        if enforce:
            tracker.expect(name)
        created[name] = time.monotonic()
        api.create_namespaced_custom_object(rc.GROUP, rc.VERSION, NAMESPACE, rc.PLURAL, load_pool(name, i, mode))

    memory_before = rc.memory_kib(pid)  # the operator with no pool (after the warm-up pool's deletion)
    metrics_start, cpu_start, machine_start = operator_metrics(metrics_port), cpu_seconds(pid), machine_cpu_seconds()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(args.pools)))
    create_seconds = time.monotonic() - started
    log(f"created {args.pools} pools in {create_seconds:.1f} s")
    wait_for(names, tracker.ready, args.timeout)
    ready = [n for n in names if n in tracker.ready]
    all_ready = max((tracker.ready[n] for n in ready), default=started) - started
    metrics_ready, cpu_ready = operator_metrics(metrics_port), cpu_seconds(pid)
    machine_ready = cpu_used(machine_start, machine_cpu_seconds(), time.monotonic() - started)
    memory_ready = rc.memory_kib(pid)
    log(f"{len(ready)}/{args.pools} Ready {all_ready:.1f} s after the first create")
    burst: dict[str, Any] = {
        "create_seconds": round(create_seconds, 3),
        "ready": len(ready),
        "all_ready_seconds": round(all_ready, 3),
        **summary([tracker.ready[n] - created[n] for n in ready]),
        "operator_cpu_seconds": round(cpu_ready - cpu_start, 1),
        "cpu_seconds": machine_ready,
        "writes": writes(metrics_start, metrics_ready),
        **steps(metrics_start, metrics_ready),
        "memory_kib": memory_ready,
        "memory_before_kib": memory_before,
    }
    if enforce:
        if len(ready) == args.pools:  # else some pools have no plan yet: no use waiting for their nodes
            rc.wait_done(tracker, names, args.timeout)
        nodes_done = [n for n in names if n in tracker.done]
        # One replica per node: the pools serve once as many of their pods are Ready as nodes were planned.
        planned = sum(sum(p.values()) for p in tracker.planned.values())
        pods_deadline = time.monotonic() + args.timeout
        while len(nodes_done) == args.pools and tracker.ready_pods() < planned and time.monotonic() < pods_deadline:
            time.sleep(0.5)
        pods_ready = time.monotonic() - started if tracker.ready_pods() >= planned else None
        burst["nodes"] = {
            "pools_with_nodes_ready": len(nodes_done),
            "all_nodes_ready_seconds": round(max((tracker.done[n] for n in nodes_done), default=started) - started, 3),
            **summary([tracker.done[n] - created[n] for n in nodes_done]),
            "planned_nodes": planned,
            "kwok_nodes": tracker.nodes(),
            "kwok_nodes_ready": tracker.ready_nodes(),
            "ready_pods": tracker.ready_pods(),
            "all_pods_ready_seconds": None if pods_ready is None else round(pods_ready, 3),
        }
        log(f"{len(nodes_done)}/{args.pools} pools' planned nodes Ready {burst['nodes']['all_nodes_ready_seconds']} s")
        log(f"{tracker.ready_pods()}/{planned} pods Ready {burst['nodes']['all_pods_ready_seconds']} s")

    # 2. Settle, then 3. the quiet window; each lasts its seconds and at least `passes` fast-loop passes
    # over every pool (a pass over 1,000 pools can take longer than the loop's interval).
    def wait_passes(seconds: float, passes: int) -> float:
        began, first = time.monotonic(), operator_metrics(metrics_port).get("steps_count", 0)
        deadline = began + max(seconds, args.timeout)
        time.sleep(seconds)
        while time.monotonic() < deadline:
            if operator_metrics(metrics_port).get("steps_count", 0) - first >= passes * args.pools:
                break
            time.sleep(1.0)
        return time.monotonic() - began

    # A burst that did not finish within the timeout has no steady state to wait for: the window is
    # then measured at once, for its seconds only, and marked so.
    steady_state = len(ready) == args.pools and (
        not enforce
        or (
            burst["nodes"]["pools_with_nodes_ready"] == args.pools
            and burst["nodes"]["all_pods_ready_seconds"] is not None
        )
    )
    settled = wait_passes(args.settle_seconds, 2) if steady_state else 0.0
    metrics_quiet, cpu_quiet, server_quiet = operator_metrics(metrics_port), cpu_seconds(pid), apiserver_writes()
    quiet_seconds = wait_passes(args.quiet_seconds, 1 if steady_state else 0)
    metrics_quiet_end, cpu_quiet_end = operator_metrics(metrics_port), cpu_seconds(pid)
    server_quiet_end = apiserver_writes()
    quiet_writes = writes(metrics_quiet, metrics_quiet_end)
    server = {
        k: int(server_quiet_end[k] - server_quiet.get(k, 0))
        for k in sorted(server_quiet_end)
        if server_quiet_end[k] > server_quiet.get(k, 0)
    }
    pool_writes = sum(v for k, v in server.items() if k.split("/")[0] == rc.PLURAL)
    quiet: dict[str, Any] = {
        "steady_state": steady_state,
        "settle_seconds": round(settled, 1),
        "seconds": round(quiet_seconds, 1),
        "writes": quiet_writes,
        "writes_per_minute": round(sum(quiet_writes.values()) * 60 / quiet_seconds, 1),
        "apiserver_writes": server,
        "apiserver_pool_writes_per_minute": round(pool_writes * 60 / quiet_seconds, 1),
        "operator_cpu_fraction": round((cpu_quiet_end - cpu_quiet) / quiet_seconds, 3),
        **steps(metrics_quiet, metrics_quiet_end),
        "memory_kib": rc.memory_kib(pid),
    }
    if enforce:
        quiet["kwok_nodes"], quiet["kwok_nodes_ready"] = tracker.nodes(), tracker.ready_nodes()
    log(f"quiet: {quiet['writes_per_minute']} writes/min, RSS {quiet['memory_kib']['VmRSS'] / 1024:.0f} MiB")

    # 4. Steady state: a new pool, or a spec change, one at a time.
    new_pool: list[float] = []
    spec_change: list[float] = []
    missed = 0
    sampling_ends = time.monotonic() + args.steady_budget_seconds
    for k in range(args.steady_samples):
        if time.monotonic() > sampling_ends:
            break
        if k % 2 == 0:
            name = f"steady-{k // 2:03d}"
            tracker.expect_ready(name, 1)
            body = load_pool(name, args.pools + k, mode)
            sent = time.monotonic()
            api.create_namespaced_custom_object(rc.GROUP, rc.VERSION, NAMESPACE, rc.PLURAL, body)
            samples = new_pool
        else:
            name = names[(k * 37) % len(names)]  # spread over the pools
            body = cast(
                dict[str, Any], api.get_namespaced_custom_object(rc.GROUP, rc.VERSION, NAMESPACE, rc.PLURAL, name)
            )
            regions = body["spec"]["regions"]
            regions[1]["demand"] = {**regions[1]["demand"], "peakTokensPerSecond": 2000 + k}
            tracker.expect_ready(name, body["metadata"]["generation"] + 1)
            sent = time.monotonic()
            api.patch_namespaced_custom_object(
                rc.GROUP, rc.VERSION, NAMESPACE, rc.PLURAL, name, {"spec": {"regions": regions}}
            )
            samples = spec_change
        wait_for([name], tracker.ready, args.timeout)
        if name in tracker.ready:
            samples.append(tracker.ready[name] - sent)
        else:
            missed += 1
        time.sleep(max(0.0, sent + args.steady_interval - time.monotonic()))
    both = new_pool + spec_change
    steady = {
        "interval_seconds": args.steady_interval,
        "missed": missed,
        **summary(both),
        "new_pool": summary(new_pool),
        "spec_change": summary(spec_change),
    }
    log(f"steady: p50 {steady['p50_seconds']} s, p99 {steady['p99_seconds']} s ({len(both)} samples)")
    memory_end = rc.memory_kib(pid)
    return {
        "mode": mode,
        "pools": args.pools,
        "burst": burst,
        "quiet": quiet,
        "steady": steady,
        "memory_kib": {
            "peak_VmHWM": memory_end["VmHWM"],
            "steady_VmRSS": quiet["memory_kib"]["VmRSS"],
            "end_VmRSS": memory_end["VmRSS"],
        },
    }


def goals(result: dict[str, Any]) -> dict[str, bool]:
    return {
        "burst_all_ready_within_30s": result["burst"]["ready"] == result["pools"]
        and result["burst"]["all_ready_seconds"] < GOAL_BURST_ALL_READY_SECONDS,
        "steady_p99_under_3s": result["steady"]["p99_seconds"] is not None
        and result["steady"]["missed"] == 0
        and result["steady"]["p99_seconds"] < GOAL_STEADY_P99_SECONDS,
        "peak_memory_under_250MB": result["memory_kib"]["peak_VmHWM"] * 1024 / 1e6 < GOAL_PEAK_MB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/load.json", help="JSON to write")
    parser.add_argument("--pools", type=int, default=1000)
    parser.add_argument("--modes", default=",".join(MODES), help="Advisory, Enforce or both, comma-separated")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for any one phase")
    parser.add_argument(
        "--settle-seconds", type=float, default=60, help="wait after the burst (and two fast-loop passes), unmeasured"
    )
    parser.add_argument("--quiet-seconds", type=float, default=60, help="the quiet window (and one fast-loop pass)")
    parser.add_argument("--steady-samples", type=int, default=60, help="new pools and spec changes, alternately")
    parser.add_argument(
        "--steady-budget-seconds", type=float, default=300, help="take no further steady sample after this long"
    )
    parser.add_argument("--steady-interval", type=float, default=1.0, help="seconds between steady samples' starts")
    parser.add_argument("--replan-seconds", type=float, default=30, help="the operator's fast loop")
    parser.add_argument("--kwok-delay-seconds", type=float, default=10, help="Enforce: nodes' provisioning delay")
    parser.add_argument("--show", help="only print the table of an earlier run's JSON")
    args = parser.parse_args()
    # A plain SIGTERM would skip the finally blocks that stop the control plane and the operator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.show:
        render(json.loads(Path(args.show).read_text()))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in modes):
        parser.error(f"--modes: one or more of {', '.join(MODES)}")
    started = time.monotonic()
    results: list[dict[str, Any]] = []

    def document_of(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "benchmark": "operator-load",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "command": " ".join(["python", "bench/load.py", *sys.argv[1:]]),
            "seconds": round(time.monotonic() - started, 1),
            "goals": {
                "burst_all_ready_seconds": GOAL_BURST_ALL_READY_SECONDS,
                "steady_p99_seconds": GOAL_STEADY_P99_SECONDS,
                "peak_memory_mb": GOAL_PEAK_MB,
            },
            "notes": [
                "Ready: the pool's Ready condition is True for the expected generation, seen on a watch of the pools; "
                "times are this machine's monotonic clock from just before the create or patch call",
                "burst: N pools created by 8 client threads; all_ready_seconds from the first create to the last Ready",
                "burst cpu_seconds: CPU time used from the first create to the last Ready by the whole machine (busy, "
                "and busy_fraction of all its CPUs), by each control-plane process and by this client",
                "steady: with the N pools in place, new pools and spec changes alternately, one at a time, "
                "interval_seconds apart; p99 of so few samples is close to their maximum",
                "writes_per_minute: the operator's sunblend_api_writes_total in the quiet window (no change at all), "
                "after settle_seconds and two fast-loop passes (in Enforce mode, after every pool's planned kwok nodes "
                "and then as many of the pools' pods were Ready); the window lasts quiet seconds and at least one "
                "pass; it counts what the operator sends through its kubernetes client (the fast loop's status "
                "patches, events, nodes, slices), not kopf's own status patches nor the leader Lease renewals "
                "(every 5 s)",
                "apiserver_writes: the API server's apiserver_request_total (POST, PUT, PATCH, DELETE, APPLY) by "
                "resource in the quiet window, from every client; apiserver_pool_writes_per_minute counts those on "
                "inferencepools (and their status), which only the operator writes then",
                "memory: peak_VmHWM is the operator's peak RSS over the whole run; steady_VmRSS at the quiet "
                "window's end",
                "the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok), the operator and this "
                "client share the machine's CPUs",
            ],
            "settings": {
                "settle_seconds": args.settle_seconds,
                "steady_samples": args.steady_samples,
                "kwok_delay_seconds": args.kwok_delay_seconds,
                "replan_seconds": args.replan_seconds,
            },
            "results": results,
        }

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(results: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        document = document_of(results)
        document["complete"] = complete  # False: written after a mode, before the next one ran
        out.write_text(json.dumps(document, indent=2) + "\n")
        return document

    for mode in modes:
        operator_args = ["--actuation-mode", mode, "--replan-seconds", str(args.replan_seconds)]
        if mode == "Enforce":
            operator_args += ["--node-provider", "kwok", "--kwok-delay-seconds", str(args.kwok_delay_seconds)]
        metrics_port = rc.free_port()
        mode_started = time.monotonic()
        with rc.control_plane(operator_args, metrics_port) as (api, core, operator):
            result = run_mode(api, core, operator.pid, metrics_port, mode, args)
        result["operator_args"] = operator_args
        result["seconds"] = round(time.monotonic() - mode_started, 1)
        result["goals"] = goals(result)
        results.append(result)
        write(results, False)  # what has been measured survives a later mode's failure
    document = write(results, True)
    render(document)
    print(f"wrote {out} ({document['seconds']:.0f} s)")
    return 0


def render(document: dict[str, Any]) -> None:
    """Print a run as a table."""
    table = Table(
        title=f"Operator under load: a burst of N pools, then the N held still (medians and p99 of one run, "
        f"{document['cpus']} CPUs)"
    )
    columns = (
        "mode",
        "pools",
        "burst all Ready s",
        "burst p50 s",
        "burst p99 s",
        "steady p50 s",
        "steady p99 s",
        "writes / min",
        "pool writes / min",
        "RSS MiB",
        "peak MiB",
    )
    for column in columns:
        table.add_column(column, justify="right")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in document["results"]:
        b, s, q, m = r["burst"], r["steady"], r["quiet"], r["memory_kib"]
        table.add_row(
            r["mode"],
            str(r["pools"]) if b["ready"] == r["pools"] else f"{b['ready']}/{r['pools']}",
            seconds(b["all_ready_seconds"]),
            seconds(b["p50_seconds"]),
            seconds(b["p99_seconds"]),
            seconds(s["p50_seconds"]),
            seconds(s["p99_seconds"]),
            f"{q['writes_per_minute']:g}",
            f"{q.get('apiserver_pool_writes_per_minute', '-')}",
            f"{m['steady_VmRSS'] / 1024:.0f}",
            f"{m['peak_VmHWM'] / 1024:.0f}",
        )
    Console(width=None if sys.stdout.isatty() else 130).print(table)
    for r in document["results"]:
        met = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r.get("goals", {}).items())
        print(f"{r['mode']}: {met}")
        nodes = r["burst"].get("nodes")
        if nodes:
            print(
                f"{r['mode']}: planned kwok nodes Ready for {nodes['pools_with_nodes_ready']}/{r['pools']} pools, "
                f"the last {nodes['all_nodes_ready_seconds']:.1f} s after the first create "
                f"(p50 {seconds(nodes['p50_seconds'])} s)"
            )
            if nodes.get("all_pods_ready_seconds") is not None:
                print(
                    f"{r['mode']}: all {nodes['ready_pods']} pods Ready "
                    f"{nodes['all_pods_ready_seconds']:.1f} s after the first create"
                )
        cpu = r["burst"].get("cpu_seconds")
        if cpu:
            shares = ", ".join(f"{k} {v:g}" for k, v in cpu.items() if k not in ("busy", "busy_fraction"))
            print(
                f"{r['mode']}: burst CPU seconds: operator {r['burst']['operator_cpu_seconds']:g}, {shares}; "
                f"the machine was {cpu['busy_fraction']:.0%} busy"
            )


if __name__ == "__main__":
    sys.exit(main())
