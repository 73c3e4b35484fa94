"""The Helm chart with the helm binary the local control plane builds: lint, schema, guards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import RELEASE, SERVICE_ACCOUNT

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


def test_several_replicas_need_an_election(helm):
    # Two replicas by default, with Lease leader election; no ClusterKopfPeering unless asked for.
    run = _helm(helm, "template", "t", str(CHART))
    assert run.returncode == 0, run.stderr
    documents = [d for d in yaml.safe_load_all(run.stdout) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "ClusterKopfPeering" not in {d["kind"] for d in documents}
    run = _helm(helm, "template", "t", str(CHART), "--set", "replicaCount=2", "--set", "leaderElection.enabled=false")
    assert run.returncode != 0 and "needs leaderElection.enabled=true" in run.stderr
    run = _helm(
        helm,
        "template",
        "t",
        str(CHART),
        "--set",
        "replicaCount=2",
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "peering.enabled=true",
    )
    assert run.returncode == 0, run.stderr
    documents = [d for d in yaml.safe_load_all(run.stdout) if d]
    assert {"ClusterKopfPeering", "CustomResourceDefinition", "Deployment"} <= {d["kind"] for d in documents}
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


def _deployment(helm: str, *sets: str) -> dict:
    args = [a for s in sets for a in ("--set", s)]
    run = _helm(helm, "template", "t", str(CHART), *args)
    assert run.returncode == 0, run.stderr
    return next(d for d in yaml.safe_load_all(run.stdout) if d and d["kind"] == "Deployment")


def test_the_actuation_mode_reaches_the_operator_and_the_schema_rejects_a_bad_one(helm):
    advisory = _deployment(helm)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--actuation-mode=Advisory" in advisory
    enforce = _deployment(helm, "actuation.mode=Enforce")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--actuation-mode=Enforce" in enforce
    assert not any(a.startswith("--clock-offset") for a in enforce), "the test clock is not for clusters"
    bogus = _helm(helm, "template", "t", str(CHART), "--set", "actuation.mode=Bogus")
    assert bogus.returncode != 0
    assert "value must be one of 'Advisory', 'Enforce'" in bogus.stderr


def test_interruption_rules_are_mounted_from_the_configmap_only_when_set(helm):
    pod = _deployment(helm)["spec"]["template"]["spec"]
    assert not any(a.startswith("--interruption-rules") for a in pod["containers"][0]["args"])
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]

    sets = ("interruptionRules[0].taintKey=example.com/reclaim", "interruptionRules[0].effect=NoExecute")
    run = _helm(helm, "template", "t", str(CHART), *[a for s in sets for a in ("--set", s)])
    assert run.returncode == 0, run.stderr
    documents = [d for d in yaml.safe_load_all(run.stdout) if d]
    configmap = next(d for d in documents if d["kind"] == "ConfigMap")
    assert yaml.safe_load(configmap["data"]["interruption-rules.yaml"]) == [
        {"taintKey": "example.com/reclaim", "effect": "NoExecute"}
    ]
    assert "rules.yaml" not in configmap["data"]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert "--interruption-rules=/etc/sunblend/interruption-rules.yaml" in container["args"]
    assert {"name": "config", "mountPath": "/etc/sunblend", "readOnly": True} in container["volumeMounts"]
    assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in template["spec"]["volumes"]
    assert "checksum/config" in template["metadata"]["annotations"]

    bad = _helm(helm, "template", "t", str(CHART), "--set", "interruptionRules[0].effect=NoSchedule")
    assert bad.returncode != 0 and "missing property 'taintKey'" in bad.stderr


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        # Enforce mode: drain through evictions, cordon, scale, apply slices and their budgets.
        ("create", "pods/eviction", True),
        ("get", "pods", True),
        ("list", "pods", True),
        ("watch", "pods", True),  # the steps' watch-fed records (observe/watched.py)
        ("watch", "deployments.apps", True),
        ("patch", "nodes", True),
        ("watch", "nodes", True),
        ("patch", "deployments.apps/scale", True),
        ("patch", "statefulsets.apps/scale", True),
        ("create", "deployments.apps", True),
        ("patch", "deployments.apps", True),
        ("get", "statefulsets.apps", True),
        ("create", "poddisruptionbudgets.policy", True),
        ("patch", "poddisruptionbudgets.policy", True),
        ("list", "horizontalpodautoscalers.autoscaling", True),
        # ... and nothing more.
        ("delete", "nodes", False),
        ("create", "nodes", False),
        ("delete", "pods", False),
        ("create", "pods", False),
        ("get", "secrets", False),
        ("list", "secrets", False),
        ("delete", "deployments.apps", False),
        ("patch", "statefulsets.apps", False),
        ("delete", "poddisruptionbudgets.policy", False),
        ("patch", "horizontalpodautoscalers.autoscaling", False),
        ("delete", "inferencepools.sunblend.dev", False),
    ],
)
def test_the_service_account_can_act_on_plans_and_nothing_more(chart, verb, resource, allowed):
    subresource = []
    if "/" in resource:
        resource, sub = resource.split("/")
        subresource = ["--subresource", sub]
    run = chart.kubectl("auth", "can-i", verb, resource, *subresource, "--as", SERVICE_ACCOUNT, "-A", check=False)
    assert run.stdout.strip() == ("yes" if allowed else "no"), f"{verb} {resource}: {run.stdout}{run.stderr}"


def test_keda_scaled_objects_are_only_read(chart):
    """kubectl cannot ask about a resource whose CRD is not installed (no KEDA here): read the rule."""
    rules = chart.get("clusterrole", RELEASE)["rules"]
    keda = [r for r in rules if "keda.sh" in r["apiGroups"]]
    assert keda == [{"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["get", "list"]}]
