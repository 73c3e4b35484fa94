"""Operator benchmark: apply-to-Ready latency and resident memory with 1, 100 and 1,000 pools.

Not a test: it writes JSON and prints a table. It starts its own local control plane
(hack/cluster.sh, in a temporary state folder), installs the CRD, runs `sunblend run` as a
subprocess, creates pools (variants of the India/UK example) from a thread pool, and watches
for each pool's Ready condition. Latency is measured on this machine's clock, from just before
the create call to the watch event that shows Ready=True. Memory is the operator's VmRSS and
VmHWM from /proc after each round. Everything it starts, it stops.

    python bench/reconcile.py --out bench/results/reconcile.json
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
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/reconcile.json")
    parser.add_argument("--rounds", default="1,100,1000", help="pool counts, comma-separated")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--show", help="only print the table of an earlier run's JSON")
    args = parser.parse_args()
    if args.show:
        render(json.loads(Path(args.show).read_text())["rounds"])
        return 0
    template = yaml.safe_load((ROOT / "examples" / "follow-the-sun-india-uk.yaml").read_text())
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
                    str(free_port()),
                    "--metrics-address",
                    "127.0.0.1",
                    "--liveness",
                    f"http://127.0.0.1:{liveness}/healthz",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            time.sleep(5)
            rounds = []
            for count in (int(c) for c in args.rounds.split(",")):
                result = run_round(api, core, count, template, args.timeout)
                result["memory_kib"] = memory_kib(operator.pid)
                rounds.append(result)
                print(f"{count} pools: {result}", file=sys.stderr)
        finally:
            if operator is not None:
                operator.send_signal(signal.SIGTERM)
                try:
                    operator.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    operator.kill()
            cluster("down", state)
    out = Path(args.out)
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
