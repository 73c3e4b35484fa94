"""A follow-the-sun day in a few minutes: the operator acting with the kwok node provider.

Used by `make demo` (its last step) against the cluster in $KUBECONFIG. It starts its own
operator for one namespace, with its clock at 00:00 UTC and running ``--speed`` times faster,
applies hack/demo/day.yaml, and prints a line whenever the nodes per region and capacity type
change. At 14:00 UTC (India's evening, London's afternoon) it interrupts a spot node the way
AWS Node Termination Handler does, then lets the "cloud" take the node away. At the end it
writes a PNG of nodes by capacity type per region over the day. Everything it starts, it stops
by PID; the nodes the kwok provider made are deleted.

    python hack/demo_day.py --out DIR [--speed 360]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMESPACE = "demo-day"
POOL = "follow-the-sun"
REGIONS = ("ap-south-1", "eu-west-2")
TYPES = ("reserved", "spot", "on-demand")
COLOURS = {"reserved": "#4c72b0", "spot": "#55a868", "on-demand": "#c44e52"}


def kubectl(*args: str, check: bool = True) -> str:
    run = subprocess.run([str(BIN / "kubectl"), *args], capture_output=True, text=True, timeout=60)
    if check and run.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout


def nodes() -> list[dict]:
    selector = f"sunblend.dev/provider=kwok,sunblend.dev/pool-namespace={NAMESPACE}"
    return json.loads(kubectl("get", "nodes", "-l", selector, "-o", "json"))["items"]


def counts(found: list[dict]) -> dict[tuple[str, str], int]:
    """Booted nodes per (region, capacity type); a node under an interruption notice is not counted."""
    out: dict[tuple[str, str], int] = {}
    for node in found:
        taints = {t["key"] for t in node["spec"].get("taints", [])}
        if taints & {"sunblend.dev/provisioning", "aws-node-termination-handler/spot-itn"}:
            continue
        labels = node["metadata"]["labels"]
        key = (labels["topology.kubernetes.io/region"], labels["karpenter.sh/capacity-type"])
        out[key] = out.get(key, 0) + 1
    return out


def decided_at() -> dt.datetime | None:
    text = kubectl("get", "inferencepools.sunblend.dev", POOL, "-n", NAMESPACE, "-o", "json", check=False)
    if not text:
        return None
    at = json.loads(text).get("status", {}).get("actuation", {}).get("decidedAt")
    return None if at is None else dt.datetime.fromisoformat(at.replace("Z", "+00:00"))


def line(at: dt.datetime, now: dict[tuple[str, str], int]) -> str:
    parts = []
    for region in REGIONS:
        held = ", ".join(f"{now[(region, t)]} {t}" for t in TYPES if now.get((region, t)))
        parts.append(f"{region}: {held or 'none'}")
    return f"  {at:%H:%M} UTC   " + "  |  ".join(parts)


def draw(samples: list[tuple[float, dict[tuple[str, str], int]]], path: Path) -> None:
    figure, axes = plt.subplots(len(REGIONS), 1, figsize=(10, 6), sharex=True)
    hours = [h for h, _ in samples]
    for axis, region in zip(axes, REGIONS, strict=True):
        stacks = [[c.get((region, t), 0) for _, c in samples] for t in TYPES]
        axis.stackplot(hours, *stacks, labels=TYPES, colors=[COLOURS[t] for t in TYPES], step="post")
        axis.set_ylabel(f"{region}\nnodes")
        axis.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    axes[0].set_title("Nodes by capacity type, a follow-the-sun day (kwok provider, operator in Enforce mode)")
    axes[-1].set_xlabel("hour of the day, UTC (India is UTC+5:30, London UTC+0 in winter)")
    axes[-1].set_xlim(0, 24)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the operator's log and the PNG")
    parser.add_argument("--speed", type=float, default=360.0, help="how many times faster the operator's clock runs")
    parser.add_argument(
        "--gateway", help="NAMESPACE/NAME of a Gateway: the pool then owns HTTPRoutes following the plan"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    kubectl("create", "namespace", NAMESPACE, check=False)
    log = (args.out / "day-operator.log").open("wb")
    operator = subprocess.Popen(
        [
            str(BIN / "sunblend"),
            "run",
            "-n",
            NAMESPACE,
            "--actuation-mode",
            "Enforce",
            "--node-provider",
            "kwok",
            "--kwok-delay-seconds",
            "180",
            "--clock-offset-seconds",
            str(int((midnight - now).total_seconds())),
            "--clock-speed",
            str(args.speed),
            "--replan-seconds",
            "1",
            "--metrics-port",
            "0",
            "--liveness",
            "",
            *(["--gateway", args.gateway] if args.gateway else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ,
    )
    samples: list[tuple[float, dict[tuple[str, str], int]]] = []
    try:
        kubectl("apply", "-n", NAMESPACE, "-f", str(ROOT / "hack" / "demo" / "day.yaml"))
        print(f"  one hour of the operator's clock takes {3600 / args.speed:.0f} s here")
        last: dict[tuple[str, str], int] | None = None
        interrupted = ""
        taken_at = 0.0
        deadline = time.monotonic() + 24 * 3600 / args.speed + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            at = decided_at()
            if at is None:
                continue
            hour = (at - midnight).total_seconds() / 3600
            if hour >= 24:
                break
            found = nodes()
            now_counts = counts(found)
            samples.append((hour, now_counts))
            if now_counts != last:
                print(line(at, now_counts), flush=True)
                last = now_counts
            if not interrupted and hour >= 14:
                spot = [n for n in found if n["metadata"]["labels"].get("karpenter.sh/capacity-type") == "spot"]
                if spot:
                    interrupted = spot[0]["metadata"]["name"]
                    kubectl("taint", "node", interrupted, "aws-node-termination-handler/spot-itn=true:NoSchedule")
                    print(f"  {at:%H:%M} UTC   spot interruption notice on {interrupted} (the NTH taint)", flush=True)
                    taken_at = time.monotonic()
            if interrupted and taken_at and time.monotonic() - taken_at > 120 * 60 / args.speed:
                kubectl("delete", "node", interrupted, "--wait=false", check=False)
                print(f"  {at:%H:%M} UTC   the cloud took {interrupted} back", flush=True)
                taken_at = 0.0
        events = kubectl(
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            f"involvedObject.name={POOL}",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        )
        print("  the pool's spot events:")
        for row in events.splitlines():
            if row.split(" ", 1)[0] in ("SpotInterrupted", "FellBackToOnDemand", "ReturnedToSpot"):
                print(f"    {row[:160]}")
        if args.gateway:
            routes = json.loads(kubectl("get", "httproutes", "-n", NAMESPACE, "-o", "json", check=False) or "{}")
            print("  the HTTPRoutes sunblend owns now (weights follow the plan's routes):")
            for route in routes.get("items", []):
                rule = route["spec"]["rules"][0]
                backends = ", ".join(f"{b['name']} {b.get('weight', 1)}" for b in rule["backendRefs"])
                header = rule["matches"][0]["headers"][0]["value"]
                print(f"    {route['metadata']['name']}: requests from {header} -> {backends}")
            (args.out / "httproutes.yaml").write_text(
                kubectl("get", "httproutes", "-n", NAMESPACE, "-o", "yaml", check=False)
            )
        if samples:
            path = args.out / "day.png"
            draw(samples, path)
            print(f"  wrote {path}")
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            operator.kill()
        log.close()
        selector = f"sunblend.dev/provider=kwok,sunblend.dev/pool-namespace={NAMESPACE}"
        kubectl("delete", "nodes", "-l", selector, "--wait=false", check=False)
        kubectl("delete", "namespace", NAMESPACE, "--timeout=90s", check=False)  # the pool, its slices, events


if __name__ == "__main__":
    main()
