"""The Cluster API provider against a real kube-apiserver holding Cluster API v1.14's own CRDs.

``hack/capi.sh install`` takes the CRDs from the ``sigs.k8s.io/cluster-api`` Go module, so every
write here is checked by the real API server against the real schemas: ``/scale`` of a
MachineDeployment, the delete-machine annotation on Machines, the autoscaler annotations.

What cannot be tested here: no Cluster API controller and no infrastructure provider can run on
this machine (there is no cloud, and no Docker for CAPD), so nothing acts on these objects.
MachineSets are not made from MachineDeployments, Machines are not made from MachineSets, and no
Machine gets a Node. The tests therefore create Machines directly, with the MachineSet
controller's ``cluster.x-k8s.io/deployment-name`` label and a ``status.nodeRef`` written through
the status subresource, and give the provider a snapshot of the pods on those nodes. Whether a
MachineSet then deletes the marked Machines is Cluster API's documented behaviour, not tested here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from sunblend.actuate.providers import clusterapi
from sunblend.api import load, spec
from sunblend.api.spec import CapacityType
from sunblend.core import commands, snapshot
from tests.e2e.conftest import BIN, Cluster
from tests.unit import pools

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
API_VERSION = "cluster.x-k8s.io/v1beta2"
DELETE = clusterapi.DELETE_MACHINE_ANNOTATION
MIN = clusterapi.AUTOSCALER_MIN_ANNOTATION
MAX = clusterapi.AUTOSCALER_MAX_ANNOTATION
INFRA_GROUP = "infrastructure.cluster.x-k8s.io"  # no such CRDs are installed: refs are only names to the API server


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> client.ApiClient:
    """A client for a cluster that serves the Cluster API CRDs, installed the way CI installs them."""
    run = subprocess.run(
        ["bash", str(ROOT / "hack" / "capi.sh"), "install"],
        capture_output=True,
        text=True,
        env={**cluster.env, "KUBECTL": str(BIN / "kubectl")},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return config.new_client_from_config(config_file=str(cluster.kubeconfig), persist_config=False)


class Stage:
    """A namespace with a Cluster, and the offer (region named after the namespace) its MachineDeployments serve."""

    def __init__(self, cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
        self.cluster = cluster
        self.api = api
        self.namespace = namespace
        self.offer = (namespace, "h100", CapacityType.SPOT)  # a region per test: lists are cluster-wide
        document = pools.document()
        document["metadata"] = {"name": "chat", "namespace": namespace}
        self.pool: spec.InferencePool = load.parse_pool(document)
        cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "Cluster",
                "metadata": {"name": "gpu"},
                "spec": {
                    "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
                    "infrastructureRef": {"apiGroup": INFRA_GROUP, "kind": "DockerCluster", "name": "gpu"},
                },
            },
            namespace,
        )

    def deployment(self, name: str, replicas: int, annotations: dict[str, str] | None = None) -> None:
        template_labels = {"cluster.x-k8s.io/cluster-name": "gpu", "pool": name}
        self.cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "MachineDeployment",
                "metadata": {
                    "name": name,
                    "labels": clusterapi.owner_labels(self.offer),
                    "annotations": annotations or {},
                },
                "spec": {
                    "clusterName": "gpu",
                    "replicas": replicas,
                    "selector": {"matchLabels": template_labels},
                    "template": {
                        "metadata": {"labels": template_labels},
                        "spec": {
                            "clusterName": "gpu",
                            "version": "v1.36.3",
                            "bootstrap": {
                                "configRef": {
                                    "apiGroup": "bootstrap.cluster.x-k8s.io",
                                    "kind": "KubeadmConfigTemplate",
                                    "name": name,
                                }
                            },
                            "infrastructureRef": {
                                "apiGroup": INFRA_GROUP,
                                "kind": "DockerMachineTemplate",
                                "name": name,
                            },
                        },
                    },
                },
            },
            self.namespace,
        )

    def machine(self, name: str, deployment: str, node: str, annotations: dict[str, str] | None = None) -> None:
        """A Machine as a MachineSet of ``deployment`` would make it, with a Node in its status."""
        self.cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "Machine",
                "metadata": {
                    "name": name,
                    "labels": {"cluster.x-k8s.io/cluster-name": "gpu", clusterapi.DEPLOYMENT_NAME_LABEL: deployment},
                    "annotations": annotations or {},
                },
                "spec": {
                    "clusterName": "gpu",
                    "bootstrap": {"dataSecretName": f"{name}-bootstrap"},
                    "infrastructureRef": {"apiGroup": INFRA_GROUP, "kind": "DockerMachine", "name": name},
                },
            },
            self.namespace,
        )
        self.cluster.kubectl(
            "patch",
            "machines.cluster.x-k8s.io",
            name,
            "-n",
            self.namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            f'{{"status": {{"nodeRef": {{"name": "{node}"}}}}}}',
        )

    def get(self, plural: str, name: str) -> dict:
        return self.cluster.get(f"{plural}.cluster.x-k8s.io", name, "-n", self.namespace, "--show-managed-fields")

    def set_nodes(
        self, nodes: int, fresh: snapshot.Snapshot | None = None, objects: client.CustomObjectsApi | None = None
    ) -> str:
        provider = clusterapi.ClusterApiProvider(self.api, objects=objects)
        command = commands.SetNodes(self.offer, nodes=nodes, observed=0, reason="e2e")
        return provider.set_nodes(self.pool, "uid", command, fresh or snapshot.Snapshot())


@pytest.fixture
def stage(cluster: Cluster, api: client.ApiClient, namespace: str) -> Iterator[Stage]:
    yield Stage(cluster, api, namespace)


def _scale_writes_by_sunblend(document: dict) -> list[dict]:
    return [
        entry
        for entry in document["metadata"].get("managedFields", [])
        if entry["manager"] == "sunblend" and entry.get("subresource") == "scale"
    ]


def _node(name: str) -> snapshot.NodeView:
    return snapshot.NodeView(name, "r", "h100", CapacityType.SPOT, ready=True, gpus=8)


def test_the_served_storage_version_is_v1beta2(stage: Stage):
    crd = stage.cluster.get("crd", "machinedeployments.cluster.x-k8s.io")
    storage = [v["name"] for v in crd["spec"]["versions"] if v["storage"]]
    assert storage == [clusterapi.VERSION]
    assert crd["spec"]["conversion"]["strategy"] == "None"  # no webhook: none can run here
    scale = next(v for v in crd["spec"]["versions"] if v["name"] == clusterapi.VERSION)["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas"


def test_a_missing_machine_deployment_is_named_by_its_labels(stage: Stage):
    with pytest.raises(clusterapi.MachineDeploymentMissing) as raised:
        stage.set_nodes(2)
    assert f"sunblend.dev/region={stage.namespace}" in str(raised.value)


def test_more_nodes_raise_replicas_through_the_scale_subresource(stage: Stage):
    stage.deployment("gpu-spot", replicas=1)
    said = stage.set_nodes(3)
    md = stage.get("machinedeployments", "gpu-spot")
    assert md["spec"]["replicas"] == 3
    assert _scale_writes_by_sunblend(md), "replicas were not written through /scale by the sunblend field manager"
    assert "replicas 1 -> 3" in said
    assert "already has 3 replicas" in stage.set_nodes(3)


def test_fewer_nodes_mark_the_empty_machine_then_lower_replicas(stage: Stage):
    stage.deployment("gpu-spot", replicas=3)
    stage.machine("m-busy", "gpu-spot", "n-busy", annotations={DELETE: "yes"})  # a stale mark on a busy node
    stage.machine("m-keep", "gpu-spot", "n-keep")
    stage.machine("m-empty", "gpu-spot", "n-empty")
    stage.machine("m-other", "other-deployment", "n-other")  # not this MachineDeployment's
    fresh = snapshot.Snapshot(
        nodes=(_node("n-busy"), _node("n-keep"), _node("n-empty"), _node("n-other")),
        pods=(
            snapshot.PodView("p-1", "n-busy", "chat-spot", ready=True, gpus=1),
            snapshot.PodView("p-2", "n-keep", "chat-spot", ready=True, gpus=1, do_not_disrupt=True),
        ),
    )
    said = stage.set_nodes(0, fresh)

    annotations = {
        name: stage.get("machines", name)["metadata"].get("annotations", {})
        for name in ("m-busy", "m-keep", "m-empty", "m-other")
    }
    assert annotations["m-empty"].get(DELETE) == "yes"
    assert DELETE not in annotations["m-busy"]  # the stale mark was taken off before replicas went down
    assert DELETE not in annotations["m-keep"]
    assert DELETE not in annotations["m-other"]
    md = stage.get("machinedeployments", "gpu-spot")
    assert md["spec"]["replicas"] == 2  # only the one releasable machine
    assert _scale_writes_by_sunblend(md)
    assert "releasing m-empty" in said and "do-not-disrupt" in said


def test_an_autoscaled_deployment_gets_only_its_size_annotations(stage: Stage):
    stage.deployment("gpu-spot", replicas=2, annotations={MIN: "1", MAX: "5"})
    before = stage.get("machinedeployments", "gpu-spot")

    stage.set_nodes(4)
    md = stage.get("machinedeployments", "gpu-spot")
    assert md["metadata"]["annotations"][MIN] == "4" and md["metadata"]["annotations"][MAX] == "5"
    assert md["spec"] == before["spec"]  # replicas are the autoscaler's
    assert md["metadata"]["generation"] == before["metadata"]["generation"]
    assert not _scale_writes_by_sunblend(md)

    stage.set_nodes(7)
    md = stage.get("machinedeployments", "gpu-spot")
    assert (md["metadata"]["annotations"][MIN], md["metadata"]["annotations"][MAX]) == ("7", "7")
    assert md["spec"]["replicas"] == 2


def test_a_real_conflict_is_answered_by_reading_again(stage: Stage, api: client.ApiClient):
    stage.deployment("gpu-spot", replicas=1)

    class Interrupted(client.CustomObjectsApi):
        """Someone else writes the MachineDeployment right after sunblend's first read."""

        reads = 0

        def list_cluster_custom_object(self, *args, **kwargs):
            answer = super().list_cluster_custom_object(*args, **kwargs)
            Interrupted.reads += 1
            if Interrupted.reads == 1:
                stage.cluster.kubectl(
                    "annotate", "machinedeployments.cluster.x-k8s.io", "gpu-spot", "-n", stage.namespace, "touched=yes"
                )
            return answer

    said = stage.set_nodes(2, objects=Interrupted(api))
    assert Interrupted.reads == 2  # the stale write met a 409 from the real API server, and was decided again
    assert stage.get("machinedeployments", "gpu-spot")["spec"]["replicas"] == 2
    assert "replicas 1 -> 2" in said


def test_the_real_schema_is_in_force(stage: Stage):
    """A v1beta1-style reference (apiVersion, no apiGroup) is refused by v1beta2's own schema."""
    stage.deployment("gpu-spot", replicas=1)
    md = stage.get("machinedeployments", "gpu-spot")
    ref = md["spec"]["template"]["spec"]["infrastructureRef"]
    ref.pop("apiGroup")
    ref["apiVersion"] = f"{INFRA_GROUP}/v1beta1"
    for field in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"):
        md["metadata"].pop(field, None)
    refused = stage.cluster.apply(md, stage.namespace, check=False)
    assert refused.returncode != 0
    assert "apiGroup" in refused.stderr
