"""The GPU agent's entry point: sample NVML every interval and serve /metrics until stopped.

``python -m sunblend.agent`` calls ``main``; the ``sunblend agent`` subcommand can call ``main``
with its own arguments, or add ``add_arguments`` to its parser and call ``serve``. SIGTERM and
SIGINT stop the loop, detach from NVML and return 0. ``--fake`` replaces NVML with a built-in
``FakeNvml`` node, for tests and demos on machines without a GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence

import prometheus_client as prom

from sunblend.agent import exporter, nvml

DEFAULT_PORT = 9402

log = logging.getLogger("sunblend.agent")


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a ratio between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options, for its own parser or a ``sunblend agent`` subparser."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"metrics port (default {DEFAULT_PORT})")
    parser.add_argument("--address", default="0.0.0.0", help="address to serve /metrics on (default all)")
    parser.add_argument("--interval", type=_positive, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--node", default=None, help="node name label (default $NODE_NAME, else the hostname)")
    parser.add_argument("--fake", action="store_true", help="read a built-in fake NVML node instead of the GPUs")
    parser.add_argument("--fake-profile", choices=nvml.PROFILES, default="h100", help="fake node (default h100)")
    parser.add_argument("--fake-gpus", type=int, default=8, help="GPUs on the fake node (default 8)")
    parser.add_argument("--fake-utilization", type=_ratio, default=0.5, help="fake GPU utilisation, 0-1 (0.5)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def node_name(explicit: str | None = None) -> str:
    """The node label: ``--node``, else $NODE_NAME (the downward API), else the hostname."""
    return explicit or os.environ.get("NODE_NAME") or socket.gethostname()


def sample_forever(agent: exporter.Exporter, interval: float, stop: threading.Event) -> None:
    """Sample every ``interval`` seconds on a fixed schedule (skipping missed ticks) until ``stop``."""
    next_at = time.monotonic()
    while True:
        next_at += interval
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at, delay = time.monotonic(), 0.0
        if stop.wait(delay):
            return
        agent.sample()


def serve(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run the agent with parsed ``args`` until ``stop`` is set or a SIGTERM/SIGINT arrives."""
    if not logging.getLogger().handlers:  # `sunblend agent` and `python -m` alike; tests bring their own
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop.set())
    library: nvml.Nvml = (
        nvml.fake_profile(args.fake_profile, args.fake_gpus, args.fake_utilization)
        if args.fake
        else nvml.PynvmlLibrary()
    )
    prom.disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series beside each counter
    agent = exporter.Exporter(library, node_name(args.node))
    agent.sample()
    try:
        server, _thread = prom.start_http_server(args.port, addr=args.address, registry=agent.registry)
    except OSError as error:
        log.error("cannot serve metrics on %s:%s: %s", args.address, args.port, error)
        agent.close()
        return 1
    log.info(
        "sunblend agent for node %s: %s, sampling every %ss, metrics on http://%s:%s/metrics",
        agent.node,
        "fake NVML" if args.fake else "NVML",
        args.interval,
        args.address,
        server.server_port,
    )
    try:
        sample_forever(agent, args.interval, stop)
    finally:
        server.shutdown()
        server.server_close()
        agent.close()
    log.info("sunblend agent stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the agent; the exit code."""
    parser = argparse.ArgumentParser(prog="sunblend agent", description="Export NVML GPU metrics for Prometheus.")
    add_arguments(parser)
    return serve(parser.parse_args(argv))
