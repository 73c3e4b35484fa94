"""Gateway API ``HTTPRoute``s that send each user region's traffic where the plan serves it.

One route per user region, named ``{pool}-{user_region}`` and owned by the pool (deleting the pool
deletes its routes). It attaches to a configured Gateway (``GatewayRef``) and has one rule: requests
carrying the header ``x-sunblend-region: <user region>`` go to the per-region Services
(``service_name_pattern``, by default ``{pool}-{region}``) with the weights of
``core.routing.weights`` for the hour. ``http_route`` is a pure builder; ``RouteWriter`` applies a
route with server-side apply (field manager ``sunblend``, forced), so each hour's weights replace
the last ones and fields other managers own are kept. Every API error is raised as
``workloads.ActuationFailed``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client

from sunblend.actuate import workloads
from sunblend.actuate.manifests import label_value, owner_reference
from sunblend.api import constants, spec

GROUP: Final = "gateway.networking.k8s.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "HTTPRoute"
PLURAL: Final = "httproutes"
REGION_HEADER: Final = "x-sunblend-region"
USER_REGION_LABEL: Final = "sunblend.dev/user-region"
DEFAULT_SERVICE_NAME_PATTERN: Final = "{pool}-{region}"
MAX_BACKENDS: Final = 16  # HTTPRoute's backendRefs maxItems
MAX_WEIGHT: Final = 1_000_000  # HTTPRoute's backendRef weight maximum
SUBDOMAIN_MAX: Final = 253
DNS_LABEL_MAX: Final = 63
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HASH_CHARS = 8


class RouteError(ValueError):
    """The route cannot be built (a Service name is not valid, weights are missing or out of range)."""


@dataclass(frozen=True)
class GatewayRef:
    """The Gateway the routes attach to (an HTTPRoute ``parentRef``); no namespace means the route's."""

    name: str
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None

    def parent_ref(self) -> dict[str, Any]:
        """The ``parentRefs`` entry."""
        ref: dict[str, Any] = {"group": GROUP, "kind": "Gateway", "name": self.name}
        if self.namespace is not None:
            ref["namespace"] = self.namespace
        if self.section_name is not None:
            ref["sectionName"] = self.section_name
        if self.port is not None:
            ref["port"] = self.port
        return ref


def route_name(pool_name: str, user_region: str) -> str:
    """``{pool}-{user_region}``, a DNS-1123 subdomain; long or odd names get a sha256 suffix."""
    raw = f"{pool_name}-{user_region}".lower()
    if len(raw) <= SUBDOMAIN_MAX and _SUBDOMAIN.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:_HASH_CHARS]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    head = cleaned[: SUBDOMAIN_MAX - _HASH_CHARS - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def service_name(pool_name: str, region: str, pattern: str = DEFAULT_SERVICE_NAME_PATTERN) -> str:
    """The Service serving ``region``: ``pattern`` with ``{pool}`` and ``{region}`` filled in.

    Raises ``RouteError`` unless the result is a valid Service name (a DNS-1035 label), since it
    must name a real Service and cannot be shortened or hashed.
    """
    try:
        name = pattern.format(pool=pool_name, region=region)
    except (KeyError, IndexError, ValueError) as error:
        raise RouteError(f"service name pattern {pattern!r}: {error!r}") from None
    if len(name) > DNS_LABEL_MAX or not _DNS_1035.match(name):
        raise RouteError(f"{name!r} (from {pattern!r}) is not a valid Service name (a DNS-1035 label)")
    return name


def backend_refs(
    pool_name: str,
    weights: Sequence[tuple[str, int]],
    pattern: str = DEFAULT_SERVICE_NAME_PATTERN,
    port: int = 80,
) -> list[dict[str, Any]]:
    """The weighted ``backendRefs``: one per serving region, in the order given."""
    if not weights:
        raise RouteError("no serving region: at least one weight is needed")
    if len(weights) > MAX_BACKENDS:
        raise RouteError(f"{len(weights)} serving regions; an HTTPRoute rule holds at most {MAX_BACKENDS}")
    refs = []
    for region, weight in weights:
        if not 0 <= weight <= MAX_WEIGHT:
            raise RouteError(f"weight {weight} of {region!r} is outside 0-{MAX_WEIGHT}")
        name = service_name(pool_name, region, pattern)
        refs.append({"group": "", "kind": "Service", "name": name, "port": port, "weight": weight})
    return refs


def http_route(
    pool: spec.InferencePool,
    uid: str,
    user_region: str,
    weights: Sequence[tuple[str, int]],
    gateway: GatewayRef,
    service_name_pattern: str = DEFAULT_SERVICE_NAME_PATTERN,
    port: int = 80,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``gateway.networking.k8s.io/v1`` HTTPRoute sending ``user_region``'s requests by ``weights``.

    ``weights`` is ``[(serving_region, weight), ...]`` (``core.routing.weights`` of one user
    region); ``port`` is the Services' port. The route lives in the pool's namespace.
    """
    name = pool.metadata.name
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": route_name(name, user_region),
            "namespace": pool.metadata.namespace,
            "labels": {
                **(labels or {}),
                constants.POOL_LABEL: label_value(name),
                constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
                USER_REGION_LABEL: label_value(user_region),
            },
            "ownerReferences": [owner_reference(pool, uid)],
        },
        "spec": {
            "parentRefs": [gateway.parent_ref()],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/"},
                            "headers": [{"type": "Exact", "name": REGION_HEADER, "value": user_region}],
                        }
                    ],
                    "backendRefs": backend_refs(name, weights, service_name_pattern, port),
                }
            ],
        },
    }


def backends(route: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(Service name, weight) of each backendRef of a route's first rule (an absent weight is 1)."""
    rules = route.get("spec", {}).get("rules") or [{}]
    return [(str(ref["name"]), int(ref.get("weight", 1))) for ref in rules[0].get("backendRefs") or []]


class RouteWriter:
    """Applies HTTPRoutes with server-side apply."""

    def __init__(self, custom: client.CustomObjectsApi) -> None:
        self._custom = custom

    def apply(self, namespace: str, route: Mapping[str, Any]) -> None:
        """Create the HTTPRoute, or bring the fields sunblend owns (its rules and weights) to ``route``."""
        name = str(route["metadata"]["name"])
        patch = self._custom.patch_namespaced_custom_object
        workloads.server_side_apply(
            patch, f"HTTPRoute {namespace}/{name}", GROUP, VERSION, namespace, PLURAL, name, body=route
        )


class RoutePublisher:
    """Owns one HTTPRoute per user region of a pool, its weights following the plan (Enforce mode)."""

    def __init__(self, writer: RouteWriter, gateway: GatewayRef, port: int = 80) -> None:
        self._writer = writer
        self._gateway = gateway
        self._port = port

    def publish(
        self, pool: spec.InferencePool, uid: str, weights: Mapping[str, Sequence[tuple[str, int]]]
    ) -> list[str]:
        """Apply every user region's route; say what was applied."""
        done = []
        for user_region, shares in sorted(weights.items()):
            route = http_route(pool, uid, user_region, list(shares), self._gateway, port=self._port)
            self._writer.apply(pool.metadata.namespace, route)
            text = ", ".join(f"{region} {weight}" for region, weight in shares)
            done.append(f"HTTPRoute {route['metadata']['name']}: {text}")
        return done
