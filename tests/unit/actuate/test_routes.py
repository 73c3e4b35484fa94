"""The pure builder of a user region's HTTPRoute, and the writer's handling of API answers."""

from __future__ import annotations

import copy

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from sunblend.actuate import routes, workloads
from sunblend.api import constants, load, spec
from tests.unit import pools

UID = "0f5b2c7e-0000-4000-8000-000000000002"
GATEWAY = routes.GatewayRef(name="inference", namespace="gateways")


def _pool(name: str = "chat") -> spec.InferencePool:
    document = pools.document(regions=[pools.region("ap-south-1", "Asia/Kolkata"), pools.region("eu-west-2")])
    document["metadata"] = {"name": name, "namespace": "serving"}
    return load.parse_pool(document)


def test_the_route_sends_one_user_regions_requests_to_the_serving_regions_services_by_weight() -> None:
    route = routes.http_route(_pool(), UID, "ap-south-1", [("ap-south-1", 53), ("eu-west-2", 47)], GATEWAY)
    assert route == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "chat-ap-south-1",
            "namespace": "serving",
            "labels": {
                constants.POOL_LABEL: "chat",
                constants.MANAGED_BY_LABEL: "sunblend",
                "sunblend.dev/user-region": "ap-south-1",
            },
            "ownerReferences": [
                {
                    "apiVersion": "sunblend.dev/v1alpha1",
                    "kind": "InferencePool",
                    "name": "chat",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference", "namespace": "gateways"}
            ],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/"},
                            "headers": [{"type": "Exact", "name": "x-sunblend-region", "value": "ap-south-1"}],
                        }
                    ],
                    "backendRefs": [
                        {"group": "", "kind": "Service", "name": "chat-ap-south-1", "port": 80, "weight": 53},
                        {"group": "", "kind": "Service", "name": "chat-eu-west-2", "port": 80, "weight": 47},
                    ],
                }
            ],
        },
    }
    assert routes.backends(route) == [("chat-ap-south-1", 53), ("chat-eu-west-2", 47)]


def test_the_gateway_ref_carries_only_what_is_configured() -> None:
    assert routes.GatewayRef("gw").parent_ref() == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "gw",
    }
    assert routes.GatewayRef("gw", section_name="https", port=443).parent_ref() == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "gw",
        "sectionName": "https",
        "port": 443,
    }


def test_service_names_follow_the_pattern_and_port() -> None:
    route = routes.http_route(
        _pool(), UID, "eu-west-2", [("eu-west-2", 100)], GATEWAY, service_name_pattern="llm-{region}", port=8000
    )
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "llm-eu-west-2", "port": 8000, "weight": 100}
    ]
    assert route["metadata"]["name"] == "chat-eu-west-2"


@pytest.mark.parametrize(
    ("pattern", "region"),
    [
        ("{pool}.{region}", "eu-west-2"),  # a dot: not a DNS-1035 label
        ("{pool}-{region}", "eu.west"),
        ("{region}", "1-region"),  # must start with a letter
        ("{pool}-{zone}", "eu-west-2"),  # unknown placeholder
        ("{pool}-{region}-" + "x" * 60, "eu-west-2"),  # longer than 63
    ],
)
def test_a_pattern_that_does_not_make_a_valid_service_name_is_refused(pattern: str, region: str) -> None:
    with pytest.raises(routes.RouteError):
        routes.http_route(_pool(), UID, "eu-west-2", [(region, 100)], GATEWAY, service_name_pattern=pattern)


@pytest.mark.parametrize(
    "weights", [[], [("eu-west-2", -1)], [("eu-west-2", 1_000_001)], [(f"r{i}", 1) for i in range(17)]]
)
def test_weights_the_route_cannot_hold_are_refused(weights: list[tuple[str, int]]) -> None:
    with pytest.raises(routes.RouteError):
        routes.http_route(_pool(), UID, "eu-west-2", weights, GATEWAY)


def test_long_or_odd_route_names_are_shortened_with_a_hash() -> None:
    assert routes.route_name("chat", "eu.west-2") == "chat-eu.west-2"
    long_pool = "p" * 250
    name = routes.route_name(long_pool, "ap-south-1")
    assert len(name) <= 253 and name.startswith("p" * 200)
    assert name != routes.route_name(long_pool, "ap-south-2")
    assert routes.route_name("Chat", "EU_West") == routes.route_name("Chat", "EU_West")
    odd = routes.route_name("chat", "eu_west")
    assert odd.startswith("chat-eu-west-") and len(odd) == len("chat-eu-west-") + 8


def test_the_builder_changes_none_of_its_inputs() -> None:
    weights = [("ap-south-1", 60), ("eu-west-2", 40)]
    before = copy.deepcopy(weights)
    routes.http_route(_pool(), UID, "ap-south-1", weights, GATEWAY, labels={"team": "ml"})
    assert weights == before


class FakeCustom:
    def __init__(self, answer: BaseException | None = None) -> None:
        self.answer = answer
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def patch_namespaced_custom_object(self, *args: object, **kwargs: object) -> None:
        self.calls.append((args, kwargs))
        if self.answer is not None:
            raise self.answer


def test_the_writer_applies_server_side_as_sunblend() -> None:
    custom = FakeCustom()
    route = routes.http_route(_pool(), UID, "ap-south-1", [("ap-south-1", 100)], GATEWAY)
    routes.RouteWriter(custom).apply("serving", route)  # type: ignore[arg-type]
    ((args, kwargs),) = custom.calls
    assert args == ("gateway.networking.k8s.io", "v1", "serving", "httproutes", "chat-ap-south-1", route)
    assert kwargs == {
        "field_manager": "sunblend",
        "force": True,
        "_content_type": "application/apply-patch+yaml",
        "_request_timeout": 10,
    }


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            ApiException(status=422, reason="Unprocessable Entity"),
            "applying HTTPRoute serving/chat-ap-south-1: 422 Unprocessable Entity",
        ),
        (urllib3.exceptions.ProtocolError("reset"), "applying HTTPRoute serving/chat-ap-south-1: ProtocolError: reset"),
    ],
)
def test_the_writer_raises_api_errors_as_actuation_failed(error: BaseException, message: str) -> None:
    route = routes.http_route(_pool(), UID, "ap-south-1", [("ap-south-1", 100)], GATEWAY)
    with pytest.raises(workloads.ActuationFailed) as raised:
        routes.RouteWriter(FakeCustom(error)).apply("serving", route)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_the_servers_message_is_kept() -> None:
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = '{"kind":"Status","message":"spec.rules[0].backendRefs[0].weight: Invalid value: -1"}'
    route = routes.http_route(_pool(), UID, "ap-south-1", [("ap-south-1", 100)], GATEWAY)
    with pytest.raises(workloads.ActuationFailed, match=r"422 Unprocessable Entity: spec\.rules\[0\].*-1"):
        routes.RouteWriter(FakeCustom(error)).apply("serving", route)  # type: ignore[arg-type]
