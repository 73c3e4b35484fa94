"""The Helm chart with the helm binary the local control plane builds: lint, schema, guards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sunblend"


@pytest.fixture(scope="module")
def helm() -> str:
    exports = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout
    path = next(line for line in exports.splitlines() if line.startswith("export PATH="))
    helm_dir = next(p for p in path.removeprefix("export PATH=").split(":") if "/helm-" in p)
    binary = Path(helm_dir) / "helm"
    assert binary.exists(), "run `make cluster-build` first"
    return str(binary)


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    # Offline rendering assumes an old Kubernetes unless told; the chart needs >= 1.30.
    extra = ["--kube-version", "v1.36.3"] if args[0] == "template" else []
    return subprocess.run([helm, *args, *extra], capture_output=True, text=True, timeout=60)


def test_helm_lint_strict_passes(helm):
    run = _helm(helm, "lint", "--strict", str(CHART))
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_typo_in_values_fails_against_the_closed_schema(helm):
    run = _helm(helm, "template", "t", str(CHART), "--set", "metrics.prot=9090")
    assert run.returncode != 0
    assert "additional properties 'prot' not allowed" in run.stderr


def test_several_replicas_need_peering(helm):
    run = _helm(helm, "template", "t", str(CHART), "--set", "replicaCount=2")
    assert run.returncode != 0 and "needs peering.enabled=true" in run.stderr
    run = _helm(helm, "template", "t", str(CHART), "--set", "replicaCount=2", "--set", "peering.enabled=true")
    assert run.returncode == 0, run.stderr
    documents = [d for d in yaml.safe_load_all(run.stdout) if d]
    kinds = {d["kind"] for d in documents}
    assert {"ClusterKopfPeering", "CustomResourceDefinition", "Deployment"} <= kinds
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert "--peering=sunblend" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_every_value_is_documented():
    """Each key has a comment right above it, or sits under a key that has one."""
    documented: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    previous = ""
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-")) and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            while documented and documented[-1][0] >= indent:
                documented.pop()
            ok = previous.startswith("#") or any(flag for _, flag in documented)
            assert ok, f"values.yaml:{number} {stripped!r} is not documented"
            documented.append((indent, ok))
        if stripped:
            previous = stripped


def test_the_operator_is_pointed_at_prometheus_with_a_token_from_a_secret(helm):
    run = _helm(
        helm,
        "template",
        "t",
        str(CHART),
        "--set",
        "prometheus.url=http://prometheus.monitoring:9090",
        "--set",
        "prometheus.bearerTokenSecret.name=prom-token",
    )
    assert run.returncode == 0, run.stderr
    deployment = next(d for d in yaml.safe_load_all(run.stdout) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--prometheus-url=http://prometheus.monitoring:9090" in args
    assert "--prometheus-token-file=/etc/sunblend/prometheus/token" in args
    assert {"name": "prometheus-token", "secret": {"secretName": "prom-token"}} in pod["volumes"]


def test_the_agent_daemonset_is_deployed_on_gpu_nodes_when_enabled(helm):
    run = _helm(helm, "template", "t", str(CHART), "--set", "agent.enabled=true")
    assert run.returncode == 0, run.stderr
    documents = [d for d in yaml.safe_load_all(run.stdout) if d]
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "agent"
    assert pod["hostPID"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod.get("nodeSelector") or pod.get("affinity")
    assert any(e["name"] == "NODE_NAME" for e in container["env"])
    assert {d["kind"] for d in documents} >= {"DaemonSet", "Service"}
    disabled = _helm(helm, "template", "t", str(CHART))
    assert "kind: DaemonSet" not in disabled.stdout
