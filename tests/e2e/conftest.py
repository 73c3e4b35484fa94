"""End-to-end fixtures: a real local control plane (hack/cluster.sh), the chart, the operator.

The control plane runs as plain processes on 127.0.0.1 in a temporary state folder, so a
user's own `make cluster` is left alone. The operator runs as a subprocess of `sunblend run`
with the cluster's kubeconfig. Everything started here is stopped here, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHART_NAMESPACE = "sunblend-system"
RELEASE = "sunblend"
SERVICE_ACCOUNT = f"system:serviceaccount:{CHART_NAMESPACE}:{RELEASE}"

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running local control plane."""

    kubeconfig: Path
    path: str  # PATH with the control plane's binaries (helm) first

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": self.path}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [str(BIN / "kubectl"), *args], input=input, capture_output=True, text=True, env=self.env, timeout=60
        )
        if check and run.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {run.stderr}")
        return run

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, document: dict | str, namespace: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        return self.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=check)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(["helm", *args], capture_output=True, text=True, env=self.env, timeout=120)
        assert run.returncode == 0, run.stderr
        return run


def _cluster_sh(command: str, state: Path) -> str:
    env = {**os.environ, "SUNBLEND_CLUSTER_DIR": str(state)}
    run = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), command], capture_output=True, text=True, env=env, timeout=300
    )
    if run.returncode != 0:
        raise RuntimeError(f"hack/cluster.sh {command} failed:\n{run.stderr[-3000:]}")
    return run.stdout


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster")
    exports = _cluster_sh("up", state)
    try:
        values = dict(
            line.removeprefix("export ").split("=", 1) for line in exports.splitlines() if line.startswith("export ")
        )
        path = values["PATH"].replace("$PATH", os.environ.get("PATH", ""))
        yield Cluster(Path(values["KUBECONFIG"]), path)
    finally:
        _cluster_sh("down", state)


@pytest.fixture(scope="session")
def chart(cluster: Cluster) -> Cluster:
    """The chart installed into the real API server (its pods cannot run: there is no container runtime)."""
    cluster.helm(
        "install",
        RELEASE,
        str(ROOT / "charts" / "sunblend"),
        "--namespace",
        CHART_NAMESPACE,
        "--create-namespace",
        "--wait=false",
    )
    return cluster


class Operator:
    """`sunblend run` as a subprocess, with its metrics and liveness ports."""

    def __init__(self, cluster: Cluster, log: Path) -> None:
        self.cluster = cluster
        self.log = log
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []

    def start(self) -> None:
        command = [
            str(BIN / "sunblend"),
            "run",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            *self.extra_args,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.cluster.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator not live in 30 s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()


def enforcing(namespace: str) -> list[str]:
    """`sunblend run` arguments for a test's own operator: its namespace only, Enforce mode, 2 s passes."""
    return ["-n", namespace, "--actuation-mode", "Enforce", "--replan-seconds", "2"]


@contextmanager
def swapped_operator(operator: Operator, log: Path, *args: str) -> Iterator[Operator]:
    """The session's operator stopped; one run with ``args`` instead, then the session's started again."""
    operator.stop()
    own = Operator(operator.cluster, log)
    own.extra_args = list(args)
    try:
        own.start()
        yield own
    finally:
        own.stop()
        operator.start()


@pytest.fixture(scope="session")
def operator(chart: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    running = Operator(chart, tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
