"""The karpenter node provider against a real Karpenter (its kwok cloud provider) and API server.

Karpenter v1.15.0 is built by ``hack/cluster.sh build`` (with its CRDs copied next to the
binary) and runs here as a subprocess against the local control plane. The provider writes
sunblend's NodePools; pending pods make Karpenter launch kwok nodes, which the control plane's
kwok marks Ready and the kube-scheduler binds the pods to. The operator is not involved:
``KarpenterProvider.set_nodes`` is called directly, as ``actuate.execute`` would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from sunblend.actuate.providers import base, karpenter
from sunblend.api import constants, load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from tests.e2e.conftest import ROOT, Cluster, free_port, wait_for

INSTANCE_TYPE = "gpu-8x-h100"
PRODUCT = "NVIDIA-H100-E2E-KARPENTER"  # a value no other test's GPU class selects
POOL_NAME = "chat"
POOL_NAMESPACE = "karpenter-e2e"
UID = "5d7c9a10-0000-4000-8000-00000000e2e1"
AP_SPOT = ("ap-south-1", "h100", CapacityType.SPOT)
EU_ON_DEMAND = ("eu-west-2", "h100", CapacityType.ON_DEMAND)
EU_SPOT = ("eu-west-2", "h100", CapacityType.SPOT)
EU_RESERVED = ("eu-west-2", "h100", CapacityType.COMMITTED)
AP_COMMITTED = ("ap-south-1", "h100", CapacityType.COMMITTED)


def _karpenter_dir() -> Path:
    """The cache folder ``hack/cluster.sh build`` puts Karpenter and its CRDs in."""
    script = (ROOT / "hack" / "cluster.sh").read_text()
    match = re.search(r"^KARPENTER_VERSION=(\S+)", script, re.MULTILINE)
    assert match, "hack/cluster.sh pins no KARPENTER_VERSION"
    cache = Path(os.environ.get("SUNBLEND_CACHE", Path.home() / ".cache" / "sunblend"))
    return cache / "bin" / f"karpenter-{match.group(1)}"


def _offering(capacity_type: str, region: str, price: float) -> dict[str, Any]:
    requirements = [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [capacity_type]},
        {"key": constants.REGION_LABEL, "operator": "In", "values": [region]},
        {"key": constants.ZONE_LABEL, "operator": "In", "values": [f"{region}a"]},
    ]
    return {"Price": price, "Available": True, "Requirements": requirements}


def instance_types() -> list[dict[str, Any]]:
    """One 8-GPU instance type, offered as spot and on-demand in ap-south-1 and eu-west-2.

    In eu-west-2 spot costs more than on-demand, so only the NodePools' weights can make Karpenter
    pick spot first there. No reserved offering: Karpenter v1.15.0's kwok cloud provider sets no
    reservation-ID label, and its scheduler panics ("attempted to reserve non-existent offering")
    on a reserved offering.
    """
    prices = {
        "ap-south-1": (("spot", 10.0), ("on-demand", 30.0)),
        "eu-west-2": (("spot", 40.0), ("on-demand", 30.0)),
    }
    offerings = [_offering(kind, region, price) for region, offered in prices.items() for kind, price in offered]
    return [
        {
            "name": INSTANCE_TYPE,
            "architecture": "amd64",
            "operatingSystems": ["linux"],
            "resources": {"cpu": "96", "memory": "1024Gi", "pods": "110", constants.GPU_RESOURCE: "8"},
            "offerings": offerings,
        }
    ]


def pool_document() -> dict[str, Any]:
    def region(name: str, tz: str) -> dict[str, Any]:
        demand = {"baselineTokensPerSecond": 100, "peakTokensPerSecond": 100, "busyHours": {"start": 9, "end": 18}}
        return {"name": name, "timeZone": tz, "demand": demand}

    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": POOL_NAME, "namespace": POOL_NAMESPACE},
        "spec": {
            "modelServer": {"gpusPerReplica": 8, "tokensPerSecondPerReplica": 100},
            "regions": [region("ap-south-1", "Asia/Kolkata"), region("eu-west-2", "Europe/London")],
            "gpuClasses": [
                {
                    "name": "h100",
                    "gpusPerNode": 8,
                    "nodeSelector": {
                        "node.kubernetes.io/instance-type": INSTANCE_TYPE,
                        "nvidia.com/gpu.product": PRODUCT,
                    },
                    "prices": {"onDemand": 4.0, "spot": 1.5, "committed": 2.5},
                }
            ],
        },
    }


@dataclass
class Karpenter:
    """A running Karpenter, the provider under test and the pool it serves."""

    cluster: Cluster
    api: client.ApiClient
    provider: karpenter.KarpenterProvider
    pool: spec.InferencePool
    log: Path
    process: subprocess.Popen[bytes]

    def set_nodes(self, offer: Any, nodes: int, observed: int = 0) -> str:
        command = commands.SetNodes(offer=offer, nodes=nodes, observed=observed, reason="e2e")
        return self.provider.set_nodes(self.pool, UID, command, snapshot.Snapshot())

    def nodes_of(self, nodepool: str) -> list[dict[str, Any]]:
        found = self.cluster.get("nodes", "-l", f"karpenter.sh/nodepool={nodepool}")["items"]
        return [n for n in found if not n["metadata"].get("deletionTimestamp")]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"karpenter exited: {self.log.read_text()[-4000:]}")


def _apply_crds(cluster: Cluster, crds: Path) -> None:
    files = sorted(crds.glob("*.yaml"))
    assert files, f"no CRDs in {crds}; run: hack/cluster.sh build"
    for path in files:
        # The NodePool CRD is larger than client-side apply's last-applied annotation allows.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in ("nodepools.karpenter.sh", "nodeclaims.karpenter.sh", "kwoknodeclasses.karpenter.kwok.sh"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def karpenter_run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Karpenter]:
    folder = _karpenter_dir()
    binary = folder / "karpenter"
    if not binary.exists():
        pytest.fail(f"{binary} is missing; run: hack/cluster.sh build")
    _apply_crds(cluster, folder / "crds")
    cluster.apply(
        {"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass", "metadata": {"name": "default"}},
        "default",
    )
    for name in ("karpenter", POOL_NAMESPACE):
        cluster.kubectl("create", "namespace", name, check=False)

    work = tmp_path_factory.mktemp("karpenter")
    types_file = work / "instance-types.json"
    types_file.write_text(json.dumps(instance_types(), indent=2))
    log = work / "karpenter.log"
    health = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "SYSTEM_NAMESPACE": "karpenter",
        "KARPENTER_SERVICE": "karpenter",
        "METRICS_PORT": str(free_port()),
        "HEALTH_PROBE_PORT": str(health),
        "DISABLE_LEADER_ELECTION": "true",
        "INSTANCE_TYPES_FILE_PATH": str(types_file),
        "BATCH_IDLE_DURATION": "1s",
        "BATCH_MAX_DURATION": "2s",
        "LOG_LEVEL": "debug",
    }
    with log.open("ab") as out:
        process = subprocess.Popen([str(binary)], stdout=out, stderr=subprocess.STDOUT, env=env)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig), persist_config=False)  # type: ignore[no-untyped-call]
    pool = load.parse_pool(pool_document())
    running = Karpenter(cluster, api, karpenter.KarpenterProvider(api), pool, log, process)
    try:
        deadline = time.monotonic() + 60
        while not _healthy(health):
            running.alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"karpenter not healthy in 60 s: {log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield running
    finally:
        _clean_up(cluster, running)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"karpenter log: {log}")


def _clean_up(cluster: Cluster, running: Karpenter) -> None:
    """The test (not sunblend) removes its NodePools while Karpenter runs, so it drains its own nodes."""
    cluster.kubectl("delete", "deployments", "--all", "-n", POOL_NAMESPACE, "--wait=false", check=False)
    cluster.kubectl(
        "delete", "nodepools", "-l", f"{constants.POOL_NAMESPACE_LABEL}={POOL_NAMESPACE}", "--wait=false", check=False
    )
    unowned = karpenter.nodepool_name(POOL_NAME, AP_COMMITTED)
    cluster.kubectl("delete", "nodepool", unowned, "--wait=false", check=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and running.process.poll() is None:
        left = cluster.get("nodes", "-l", f"{constants.POOL_NAMESPACE_LABEL}={POOL_NAMESPACE}")["items"]
        if not left:
            break
        time.sleep(1)
    cluster.kubectl("delete", "namespace", POOL_NAMESPACE, "--wait=false", check=False)


def _deployment(name: str, offer: Any, replicas: int) -> dict[str, Any]:
    region, _, capacity_type = offer
    labels = {"app": name}
    selector = {
        constants.REGION_LABEL: region,
        "karpenter.sh/capacity-type": karpenter.CAPACITY_TYPES[capacity_type],
        "nvidia.com/gpu.product": PRODUCT,
    }
    container = {
        "name": "server",
        "image": "registry.invalid/vllm:fake",
        "resources": {
            "requests": {"cpu": "1", constants.GPU_RESOURCE: "8"},
            "limits": {constants.GPU_RESOURCE: "8"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": selector,
                    "tolerations": [{"key": constants.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                },
            },
        },
    }


def _running_pods(cluster: Cluster, app: str) -> list[dict[str, Any]]:
    pods = cluster.get("pods", "-n", POOL_NAMESPACE, "-l", f"app={app}")["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")]


def _launched(run: Karpenter, nodepool: str, count: int) -> list[dict[str, Any]] | None:
    run.alive()
    found = [n for n in run.nodes_of(nodepool) if _ready(n)]
    return found if len(found) >= count else None


def _ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _check_node(node: dict[str, Any], offer: Any) -> None:
    labels = node["metadata"]["labels"]
    region, _, capacity_type = offer
    assert labels[constants.REGION_LABEL] == region
    assert labels["karpenter.sh/capacity-type"] == karpenter.CAPACITY_TYPES[capacity_type]
    assert labels["node.kubernetes.io/instance-type"] == INSTANCE_TYPE
    assert labels["nvidia.com/gpu.product"] == PRODUCT
    assert labels[constants.POOL_LABEL] == POOL_NAME
    assert node["status"]["allocatable"][constants.GPU_RESOURCE] == "8"


def test_karpenter_launches_the_planned_offers_and_sunblend_never_removes_nodes(karpenter_run: Karpenter) -> None:
    run, cluster = karpenter_run, karpenter_run.cluster
    spot_pool = karpenter.nodepool_name(POOL_NAME, AP_SPOT)
    eu_pool = karpenter.nodepool_name(POOL_NAME, EU_ON_DEMAND)

    said = run.set_nodes(AP_SPOT, 1)
    assert said == f"NodePool {spot_pool} created: limit nvidia.com/gpu 8 (1 nodes)"
    assert run.set_nodes(EU_ON_DEMAND, 1).startswith(f"NodePool {eu_pool} created")
    written = cluster.get("nodepool", spot_pool)
    assert written["spec"]["limits"] == {constants.GPU_RESOURCE: "8"}
    assert written["spec"]["weight"] == 20
    assert written["metadata"]["labels"][constants.MANAGED_BY_LABEL] == constants.MANAGED_BY
    shown = cluster.kubectl("get", "nodepool", spot_pool, "-o", "json", "--show-managed-fields").stdout
    writers = {(f["manager"], f["operation"]) for f in json.loads(shown)["metadata"]["managedFields"]}
    assert ("sunblend", "Apply") in writers and ("sunblend", "Update") not in writers  # server-side apply only

    # Pods drive provisioning: pending pods of each offer, and Karpenter launches the nodes.
    started = time.monotonic()
    cluster.apply(_deployment("spot", AP_SPOT, 1), POOL_NAMESPACE)
    cluster.apply(_deployment("eu", EU_ON_DEMAND, 1), POOL_NAMESPACE)
    [spot_node] = wait_for(lambda: _launched(run, spot_pool, 1), 60, 1, f"a Ready node of {spot_pool}")
    [eu_node] = wait_for(lambda: _launched(run, eu_pool, 1), 60, 1, f"a Ready node of {eu_pool}")
    launched_in = time.monotonic() - started
    _check_node(spot_node, AP_SPOT)
    _check_node(eu_node, EU_ON_DEMAND)
    spot_pods = wait_for(lambda: _running_pods(cluster, "spot"), 60, 1, "the spot pod Running")
    assert spot_pods[0]["spec"]["nodeName"] == spot_node["metadata"]["name"]
    eu_pods = wait_for(lambda: _running_pods(cluster, "eu"), 60, 1, "the eu pod Running")
    assert eu_pods[0]["spec"]["nodeName"] == eu_node["metadata"]["name"]
    print(f"two nodes launched in {launched_in:.1f} s")

    # The limit caps the offer at the plan: a second spot pod stays pending, no second node comes.
    cluster.kubectl("scale", "deployment/spot", "--replicas=2", "-n", POOL_NAMESPACE)
    blocked = f"exceed limits for nodepool (NodePool={spot_pool})"
    wait_for(lambda: blocked in run.log.read_text(), 30, 1, f"Karpenter to say: {blocked}")
    time.sleep(5)
    run.alive()
    assert [n["metadata"]["name"] for n in run.nodes_of(spot_pool)] == [spot_node["metadata"]["name"]]
    assert len(_running_pods(cluster, "spot")) == 1
    cluster.kubectl("scale", "deployment/spot", "--replicas=1", "-n", POOL_NAMESPACE)

    # Lowering the limit only blocks new launches: the node and its NodeClaim stay.
    said = run.set_nodes(AP_SPOT, 0, observed=1)
    assert said.startswith(f"NodePool {spot_pool} applied: limit nvidia.com/gpu 0 (0 nodes)")
    assert "only blocks new launches" in said
    assert cluster.get("nodepool", spot_pool)["spec"]["limits"] == {constants.GPU_RESOURCE: "0"}
    claims_before = {
        c["metadata"]["name"] for c in cluster.get("nodeclaims", "-l", f"karpenter.sh/nodepool={spot_pool}")["items"]
    }
    assert claims_before
    time.sleep(20)
    run.alive()
    node = cluster.get("node", spot_node["metadata"]["name"])
    assert not node["metadata"].get("deletionTimestamp")
    assert not node["spec"].get("unschedulable")
    claims = cluster.get("nodeclaims", "-l", f"karpenter.sh/nodepool={spot_pool}")["items"]
    assert {c["metadata"]["name"] for c in claims} == claims_before
    assert all(not c["metadata"].get("deletionTimestamp") for c in claims)
    assert _running_pods(cluster, "spot")[0]["spec"]["nodeName"] == spot_node["metadata"]["name"]


def test_a_nodepool_sunblend_does_not_own_is_left_alone(karpenter_run: Karpenter) -> None:
    cluster = karpenter_run.cluster
    name = karpenter.nodepool_name(POOL_NAME, AP_COMMITTED)
    theirs = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name, "labels": {"team": "platform"}},
        "spec": {
            "limits": {constants.GPU_RESOURCE: "64"},
            "template": {
                "spec": {
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
                    "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["reserved"]}],
                }
            },
        },
    }
    cluster.apply(theirs, "default")
    before = cluster.get("nodepool", name)
    with pytest.raises(base.ProviderFailed, match="not labelled"):
        karpenter_run.set_nodes(AP_COMMITTED, 2)
    after = cluster.get("nodepool", name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"] or (
        after["spec"] == before["spec"] and after["metadata"].get("labels") == before["metadata"].get("labels")
    )
    assert after["spec"]["limits"] == {constants.GPU_RESOURCE: "64"}
    shown = cluster.kubectl("get", "nodepool", name, "-o", "json", "--show-managed-fields").stdout
    managers = {f.get("manager") for f in json.loads(shown)["metadata"].get("managedFields") or []}
    assert "sunblend" not in managers


def test_weights_prefer_reserved_then_spot_then_on_demand(karpenter_run: Karpenter) -> None:
    """Pods that take any capacity type go to the heaviest NodePool that can launch: here spot, though dearer.

    The reserved NodePool (weight 30) is tried first; with no reserved capacity offered it
    launches nothing, and Karpenter moves on to spot (20), then on-demand (10).
    """
    run, cluster = karpenter_run, karpenter_run.cluster
    run.set_nodes(EU_RESERVED, 1)
    run.set_nodes(EU_SPOT, 1)
    on_demand_nodes = len(run.nodes_of(karpenter.nodepool_name(POOL_NAME, EU_ON_DEMAND)))
    run.set_nodes(EU_ON_DEMAND, on_demand_nodes + 1, observed=on_demand_nodes)
    reserved = cluster.get("nodepool", karpenter.nodepool_name(POOL_NAME, EU_RESERVED))
    assert reserved["spec"]["weight"] == 30
    assert reserved["spec"]["template"]["spec"]["requirements"][0]["values"] == ["reserved"]

    deployment = _deployment("any", EU_SPOT, 1)
    del deployment["spec"]["template"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"]
    for replicas, offer in enumerate((EU_SPOT, EU_ON_DEMAND), start=1):
        deployment["spec"]["replicas"] = replicas
        cluster.apply(deployment, POOL_NAMESPACE)
        nodepool = karpenter.nodepool_name(POOL_NAME, offer)
        expected = on_demand_nodes + 1 if offer == EU_ON_DEMAND else 1
        launched = wait_for(
            lambda pool=nodepool, count=expected: _launched(run, pool, count), 60, 1, f"a Ready node of {nodepool}"
        )
        newest = max(launched, key=lambda n: n["metadata"]["creationTimestamp"])
        _check_node(newest, offer)
        wait_for(lambda want=replicas: len(_running_pods(cluster, "any")) == want, 60, 1, f"{replicas} pods Running")
    assert run.nodes_of(karpenter.nodepool_name(POOL_NAME, EU_RESERVED)) == []


def _template(app: str) -> dict[str, Any]:
    """A pod template for a slice: one 8-GPU replica per node."""
    gpus = {constants.GPU_RESOURCE: "8"}
    container = {"name": "server", "image": "vllm/vllm-openai", "resources": {"requests": gpus, "limits": gpus}}
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [container]}}


def test_the_operator_writes_its_nodepools_and_karpenter_launches_the_planned_nodes(
    karpenter_run: Karpenter, operator: Any, tmp_path: Path
) -> None:
    """sunblend run --node-provider karpenter, in Enforce mode: NodePools per planned offer, and
    the slices' pending pods make the real Karpenter launch nodes of those offers."""
    from tests.e2e.conftest import Operator

    cluster = karpenter_run.cluster
    document = pool_document()
    document["metadata"]["name"] = "acting"
    document["spec"]["gpuClasses"][0]["nodeSelector"]["sunblend.dev/e2e-pool"] = "acting"
    document["spec"]["modelServer"]["template"] = _template("acting")
    document["spec"]["actuation"] = {"mode": "Enforce", "nodeProvider": "karpenter"}
    operator.stop()
    own = Operator(cluster, tmp_path / "operator.log")
    own.extra_args = ["-n", POOL_NAMESPACE, "--replan-seconds", "2"]
    try:
        own.start()
        cluster.apply(document, POOL_NAMESPACE)
        # 100 tokens/s with 20% headroom is two 100-tokens/s replicas, one per node, in each region;
        # spot may be at most half of a region: one spot and one on-demand node in each.
        offers = [AP_SPOT, ("ap-south-1", "h100", CapacityType.ON_DEMAND), EU_SPOT, EU_ON_DEMAND]
        names = {karpenter.nodepool_name("acting", offer): offer for offer in offers}

        def nodepools() -> dict[str, Any]:
            listed = cluster.get("nodepools", "-l", f"{constants.POOL_LABEL}=acting")["items"]
            return {p["metadata"]["name"]: p for p in listed}

        found = wait_for(
            lambda: set(names) <= set(nodepools()) and nodepools(),
            60,
            what="sunblend's NodePools for the planned offers",
        )
        for name in names:
            assert str(found[name]["spec"]["limits"][constants.GPU_RESOURCE]) == "8", found[name]["spec"]
        for name, offer in names.items():
            launched = wait_for(lambda name=name: karpenter_run.nodes_of(name), 90, what=f"a node of {name}")
            assert launched[0]["metadata"]["labels"]["karpenter.sh/capacity-type"] == offer[2].value
            assert launched[0]["metadata"]["labels"][constants.REGION_LABEL] == offer[0]
        wait_for(lambda: len(_running_pods(cluster, "acting")) == 4, 90, what="two replicas running per region")
    finally:
        own.stop()
        operator.start()
        cluster.kubectl(
            "delete", "inferencepools.sunblend.dev", "acting", "-n", POOL_NAMESPACE, "--wait=false", check=False
        )


def test_a_spot_interruption_under_karpenter_falls_back_to_on_demand(
    karpenter_run: Karpenter, operator: Any, tmp_path: Path
) -> None:
    """Mumbai needs two nodes, at most half on spot: one spot and one on-demand NodePool. The spot
    node gets Node Termination Handler's taint; sunblend raises the on-demand NodePool's limit and
    grows the on-demand slice, and Karpenter launches the second on-demand node."""
    from tests.e2e.conftest import Operator

    cluster = karpenter_run.cluster
    document = pool_document()
    document["metadata"]["name"] = "fallback"
    # Its own nodes: the earlier tests' nodes match the shared selector, and a pool counts every
    # node its GPU class selects.
    document["spec"]["gpuClasses"][0]["nodeSelector"]["sunblend.dev/e2e-pool"] = "fallback"
    mumbai = document["spec"]["regions"][0]
    mumbai["demand"] = {"baselineTokensPerSecond": 200, "peakTokensPerSecond": 200}
    document["spec"]["regions"] = [mumbai]
    document["spec"]["policy"] = {"headroom": 0}
    document["spec"]["modelServer"]["template"] = _template("fallback")
    document["spec"]["actuation"] = {"mode": "Enforce", "nodeProvider": "karpenter"}
    spot_pool = karpenter.nodepool_name("fallback", AP_SPOT)
    on_demand_pool = karpenter.nodepool_name("fallback", ("ap-south-1", "h100", CapacityType.ON_DEMAND))
    operator.stop()
    own = Operator(cluster, tmp_path / "operator.log")
    own.extra_args = ["-n", POOL_NAMESPACE, "--replan-seconds", "2"]
    try:
        own.start()
        cluster.apply(document, POOL_NAMESPACE)
        spot_nodes = wait_for(lambda: karpenter_run.nodes_of(spot_pool), 90, what="a spot node from Karpenter")
        wait_for(lambda: karpenter_run.nodes_of(on_demand_pool), 90, what="an on-demand node from Karpenter")
        wait_for(lambda: len(_running_pods(cluster, "fallback")) == 2, 90, what="both replicas running")
        spot = spot_nodes[0]["metadata"]["name"]
        cluster.kubectl("taint", "node", spot, "aws-node-termination-handler/spot-itn=true:NoSchedule")
        wait_for(
            lambda: str(cluster.get("nodepool", on_demand_pool)["spec"]["limits"][constants.GPU_RESOURCE]) == "16",
            30,
            what="the on-demand NodePool's limit raised to two nodes",
        )
        wait_for(lambda: len(karpenter_run.nodes_of(on_demand_pool)) == 2, 90, what="a second on-demand node")
        reasons = {e["reason"] for e in cluster.get("events", "-n", POOL_NAMESPACE)["items"]}
        assert {"SpotInterrupted", "FellBackToOnDemand"} <= reasons
    finally:
        own.stop()
        operator.start()
        cluster.kubectl(
            "delete", "inferencepools.sunblend.dev", "fallback", "-n", POOL_NAMESPACE, "--wait=false", check=False
        )
