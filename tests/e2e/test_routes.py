"""Traffic follows the plan: HTTPRoute weights against the real Gateway API CRDs in a real kube-apiserver.

The standard-channel CRDs come from the ``sigs.k8s.io/gateway-api`` module (``hack/gateway.sh``),
so the server checks every route with the real schema and CEL rules. The follow-the-sun example
is planned at 17:00 and 18:00 UTC: at 17:00 part of Mumbai's demand is served in London, at 18:00
none is. Applying each hour's routes with ``RouteWriter`` must change the weights on the server.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from sunblend.actuate import routes, workloads
from sunblend.api import constants, crd, load, spec
from sunblend.core import blend, problem, routing
from tests.e2e.conftest import BIN, Cluster, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "follow-the-sun-india-uk.yaml"
MUMBAI = "ap-south-1"
LONDON = "eu-west-2"
SEVENTEEN = dt.datetime(2026, 11, 22, 17, tzinfo=dt.UTC)
EIGHTEEN = SEVENTEEN + dt.timedelta(hours=1)
GATEWAY = routes.GatewayRef(name="inference")


@pytest.fixture(scope="module")
def custom(cluster: Cluster) -> client.CustomObjectsApi:
    """A client for the cluster, with the Gateway API CRDs (from hack/gateway.sh) and sunblend's CRD installed."""
    run = subprocess.run(
        ["bash", str(ROOT / "hack" / "gateway.sh"), "apply"],
        capture_output=True,
        text=True,
        env={**cluster.env, "KUBECTL": str(BIN / "kubectl"), "SUNBLEND_CACHE": _cache()},
        timeout=300,
    )
    assert run.returncode == 0, f"hack/gateway.sh apply failed:\n{run.stderr[-3000:]}"
    crds = Path(run.stdout.strip())
    assert (crds / "gateway.networking.k8s.io_httproutes.yaml").is_file()
    established = cluster.get("crd", "httproutes.gateway.networking.k8s.io")
    assert "v1" in [v["name"] for v in established["spec"]["versions"] if v["served"]]
    cluster.apply(crd.render(), "default")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{constants.CRD_NAME}", "--timeout=30s")
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig), persist_config=False)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(api)


def _cache() -> str:
    return os.environ.get("SUNBLEND_CACHE", str(Path.home() / ".cache" / "sunblend"))


@dataclass
class Stage:
    """The example pool, created for real in a fresh namespace (its uid owns the routes)."""

    namespace: str
    pool: spec.InferencePool
    uid: str
    custom: client.CustomObjectsApi
    writer: routes.RouteWriter

    def read(self, user_region: str) -> dict[str, Any]:
        name = routes.route_name(self.pool.metadata.name, user_region)
        route = self.custom.get_namespaced_custom_object(
            routes.GROUP, routes.VERSION, self.namespace, routes.PLURAL, name, _request_timeout=10
        )
        assert isinstance(route, dict)
        return route

    def route(self, user_region: str, weights: list[tuple[str, int]]) -> dict[str, Any]:
        return routes.http_route(self.pool, self.uid, user_region, weights, GATEWAY)


@pytest.fixture
def stage(cluster: Cluster, custom: client.CustomObjectsApi, namespace: str) -> Stage:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"] = {"name": "chat-india-uk", "namespace": namespace}
    document["spec"]["actuation"] = {"mode": "Advisory"}  # an operator, if one runs, must not act on it
    cluster.apply(document, namespace)
    uid = cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace)["metadata"]["uid"]
    return Stage(namespace, load.parse_pool(document), uid, custom, routes.RouteWriter(custom))


def _weights_at(pool: spec.InferencePool, now: dt.datetime) -> dict[str, list[tuple[str, int]]]:
    plan = blend.plan(problem.from_spec(pool.spec, now))
    assert plan.has_solution, plan.message
    return routing.weights(plan, 0, [r.name for r in pool.spec.regions])


@pytest.fixture(scope="module")
def hourly() -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]]:
    pool = load.load_text(EXAMPLE.read_text())
    return _weights_at(pool, SEVENTEEN), _weights_at(pool, EIGHTEEN)


def _services(stage: Stage, weights: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(f"{stage.pool.metadata.name}-{region}", weight) for region, weight in weights]


def test_the_plans_routes_differ_across_the_hour(
    hourly: tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]],
) -> None:
    before, after = hourly
    # 17:00 UTC (22:30 in Mumbai, 17:00 in London): part of Mumbai's demand is served in London.
    assert [region for region, _ in before[MUMBAI]] == [MUMBAI, LONDON]
    assert all(weight > 0 for _, weight in before[MUMBAI])
    # 18:00 UTC: Mumbai serves itself.
    assert after[MUMBAI] == [(MUMBAI, 100)]
    for weights in (*before.values(), *after.values()):
        assert sum(w for _, w in weights) == 100


def test_route_weights_follow_the_plan_at_the_hour_boundary(
    stage: Stage, hourly: tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]]
) -> None:
    before, after = hourly
    for region, weights in before.items():
        stage.writer.apply(stage.namespace, stage.route(region, weights))
    first = stage.read(MUMBAI)
    assert routes.backends(first) == _services(stage, before[MUMBAI])
    assert first["metadata"]["ownerReferences"][0]["uid"] == stage.uid
    assert first["spec"]["rules"][0]["matches"][0]["headers"] == [
        {"type": "Exact", "name": "x-sunblend-region", "value": MUMBAI}
    ]
    assert routes.backends(stage.read(LONDON)) == _services(stage, before[LONDON])

    # The hour turns: the next plan's weights replace the last ones (London's Service leaves Mumbai's route).
    for region, weights in after.items():
        stage.writer.apply(stage.namespace, stage.route(region, weights))
    second = stage.read(MUMBAI)
    assert routes.backends(second) == _services(stage, after[MUMBAI]) == [("chat-india-uk-ap-south-1", 100)]
    assert routes.backends(second) != routes.backends(first)
    assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert routes.backends(stage.read(LONDON)) == _services(stage, after[LONDON])

    # Applying the same hour again changes nothing (server-side apply of the same fields).
    stage.writer.apply(stage.namespace, stage.route(MUMBAI, after[MUMBAI]))
    assert stage.read(MUMBAI)["metadata"]["generation"] == second["metadata"]["generation"]

    managers = {entry["manager"] for entry in second["metadata"]["managedFields"]}
    assert "sunblend" in managers


def test_the_real_crd_validation_rejects_what_the_schema_forbids(stage: Stage) -> None:
    good = stage.route(MUMBAI, [(MUMBAI, 60), (LONDON, 40)])
    stage.writer.apply(stage.namespace, good)
    kept = routes.backends(stage.read(MUMBAI))

    negative = stage.route(MUMBAI, [(MUMBAI, 60), (LONDON, 40)])
    negative["spec"]["rules"][0]["backendRefs"][1]["weight"] = -5  # the builder itself refuses this
    with pytest.raises(workloads.ActuationFailed, match=r"422.*weight") as raised:
        stage.writer.apply(stage.namespace, negative)
    print(f"negative weight: {raised.value}", file=sys.stderr)

    no_port = stage.route(MUMBAI, [(MUMBAI, 60), (LONDON, 40)])
    del no_port["spec"]["rules"][0]["backendRefs"][0]["port"]  # a CEL rule: a Service reference needs a port
    with pytest.raises(workloads.ActuationFailed, match=r"422.*Must have port for Service reference"):
        stage.writer.apply(stage.namespace, no_port)

    assert (
        routes.backends(stage.read(MUMBAI))
        == kept
        == [("chat-india-uk-ap-south-1", 60), ("chat-india-uk-eu-west-2", 40)]
    )


def test_routes_are_deleted_with_their_pool(cluster: Cluster, stage: Stage) -> None:
    stage.writer.apply(stage.namespace, stage.route(MUMBAI, [(MUMBAI, 100)]))
    name = routes.route_name(stage.pool.metadata.name, MUMBAI)
    cluster.kubectl("delete", "inferencepools.sunblend.dev", stage.pool.metadata.name, "-n", stage.namespace)

    def gone() -> bool:
        found = cluster.kubectl("get", "httproutes.gateway.networking.k8s.io", name, "-n", stage.namespace, check=False)
        return found.returncode != 0 and "NotFound" in found.stderr

    wait_for(gone, 60, 0.5, what=f"HTTPRoute {name} garbage-collected")
