"""GPU agent benchmark: CPU overhead at 1 s sampling, and the cost of one sample in-process.

Not a test: it writes JSON and prints a table. It runs ``python -m sunblend.agent --fake`` (a
fake NVML node of 8 H100s; no GPU needed) as a subprocess on 127.0.0.1, lets it warm up, and
reads its CPU time (utime + stime) from /proc/PID/stat at the edges of several equal windows.
The overhead is CPU seconds over wall seconds, as a percentage of one core; the figure reported
is the median window. While it runs, the benchmark scrapes /metrics every 15 s, as Prometheus
would, so serving the metrics is counted too. Then it times ``Exporter.sample`` in this process
over the same fake node, and one exposition of the registry.

The fake stands in for NVML's C calls, which take microseconds each on a real GPU; the figures
are those of the agent's own code. Everything it starts, it stops.

    python bench/agent.py --out bench/results/agent.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import prometheus_client as prom
from rich.console import Console
from rich.table import Table

from sunblend.agent import exporter, nvml

ROOT = Path(__file__).resolve().parents[1]

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return len(response.read())


def measure_process(duration: float, windows: int, interval: float, gpus: int, scrape_every: float) -> dict:
    """Run the agent and measure its CPU use over ``windows`` equal windows of ``duration`` in total."""
    port = free_port()
    command = [sys.executable, "-m", "sunblend.agent", "--fake", "--fake-gpus", str(gpus), "--fake-utilization", "0.6"]
    command += ["--address", "127.0.0.1", "--port", str(port), "--interval", str(interval), "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "NODE_NAME": "bench-node"}
    agent = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited: {agent.stderr.read().decode() if agent.stderr else ''}")
            try:
                exposition_bytes = scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(3)  # past start-up: imports and the first samples
        window = duration / windows
        percents: list[float] = []
        next_scrape = time.monotonic()
        started_cpu, started_wall = cpu_seconds(agent.pid), time.monotonic()
        for _ in range(windows):
            cpu_before, wall_before = cpu_seconds(agent.pid), time.monotonic()
            end = wall_before + window
            while (now := time.monotonic()) < end:
                if now >= next_scrape:
                    scrape(port)
                    next_scrape = now + scrape_every
                time.sleep(min(0.25, max(0.0, end - now)))
            cpu_after, wall_after = cpu_seconds(agent.pid), time.monotonic()
            percents.append(100.0 * (cpu_after - cpu_before) / (wall_after - wall_before))
        total_cpu, total_wall = cpu_seconds(agent.pid) - started_cpu, time.monotonic() - started_wall
        return {
            "gpus": gpus,
            "sample_interval_seconds": interval,
            "scrape_interval_seconds": scrape_every,
            "window_seconds": window,
            "resolution_cpu_percent": round(100.0 / (TICKS * window), 3),  # one clock tick per window
            "window_cpu_percent": [round(p, 3) for p in percents],
            "median_cpu_percent": round(statistics.median(percents), 3),
            "overall_cpu_percent": round(100.0 * total_cpu / total_wall, 3),
            "rss_kib": rss_kib(agent.pid),
            "exposition_bytes": exposition_bytes,
        }
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait()


def measure_in_process(profile: str, gpus: int, calls: int, batches: int) -> dict:
    """Time Exporter.sample, and one exposition of its registry, over a fake node."""
    agent = exporter.Exporter(nvml.fake_profile(profile, gpus=gpus, utilization=0.6), "bench-node")
    agent.sample()  # the first sample learns what is unsupported
    sample_means = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(calls):
            agent.sample()
        sample_means.append((time.perf_counter() - started) / calls)
    exposition = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(calls // 10):
            prom.generate_latest(agent.registry)
        exposition.append((time.perf_counter() - started) / (calls // 10))
    return {
        "profile": profile,
        "gpus": gpus,
        "calls_per_batch": calls,
        "batches": batches,
        "sample_microseconds_median": round(statistics.median(sample_means) * 1e6, 1),
        "sample_microseconds_batches": [round(m * 1e6, 1) for m in sample_means],
        "exposition_microseconds_median": round(statistics.median(exposition) * 1e6, 1),
    }


def render(result: dict, console: Console) -> None:
    process = result["process"]
    table = Table(title=f"sunblend agent, fake NVML, {process['gpus']} GPUs, {result['cpus']} CPUs")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        f"CPU, % of one core, median of {len(process['window_cpu_percent'])} x {process['window_seconds']:.0f} s",
        f"{process['median_cpu_percent']:.2f}",
    )
    table.add_row("CPU, % of one core, whole run", f"{process['overall_cpu_percent']:.2f}")
    table.add_row("resolution per window (one clock tick), %", f"{process['resolution_cpu_percent']:.2f}")
    table.add_row("CPU per window, %", " ".join(f"{p:.2f}" for p in process["window_cpu_percent"]))
    table.add_row("resident memory, MiB", f"{process['rss_kib'] / 1024:.1f}")
    table.add_row(
        "sample interval / scrape interval, s",
        f"{process['sample_interval_seconds']:g} / {process['scrape_interval_seconds']:g}",
    )
    for cost in result["in_process"]:
        table.add_row(
            f"one sample(), {cost['profile']} x {cost['gpus']}, us", f"{cost['sample_microseconds_median']:.1f}"
        )
        table.add_row(
            f"one exposition, {cost['profile']} x {cost['gpus']}, us", f"{cost['exposition_microseconds_median']:.1f}"
        )
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/agent.json")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measurement (60)")
    parser.add_argument("--windows", type=int, default=6, help="equal windows in the duration (6)")
    parser.add_argument("--interval", type=float, default=1.0, help="the agent's sample interval (1 s)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs on the fake node (8)")
    parser.add_argument("--scrape-every", type=float, default=15.0, help="seconds between scrapes (15)")
    parser.add_argument("--show", help="print the table of an earlier JSON result and exit")
    args = parser.parse_args()
    console = Console()
    logging.getLogger("sunblend.agent").setLevel(logging.ERROR)  # the MIG profile's one warning is expected
    if args.show:
        render(json.loads(Path(args.show).read_text()), console)
        return 0
    result = {
        "benchmark": "agent",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "process": measure_process(args.duration, args.windows, args.interval, args.gpus, args.scrape_every),
        "in_process": [
            measure_in_process("h100", args.gpus, calls=2000, batches=5),
            measure_in_process("h100-mig", args.gpus, calls=2000, batches=5),
        ],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    render(result, console)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
