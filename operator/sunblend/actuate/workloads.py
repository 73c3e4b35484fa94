"""Writes workloads: applies a pool's slices and their PDBs, and scales workloads through ``/scale``.

The executor (``actuate.execute``) calls it after ``actuate.validate`` has re-checked each command
against a fresh read. Slices and PDBs are written with server-side apply (field manager
``sunblend``, forced), which creates an absent object and updates only the fields sunblend owns
on a present one. Replicas of a user's workload go through the scale subresource, guarded by the
resourceVersion and the replicas the decision was made from. Deleting a slice is left to the garbage collector
(each slice has an ownerReference to its pool). Every API error is raised as ``ActuationFailed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

FIELD_MANAGER = "sunblend"
TIMEOUT_SECONDS = 10
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
TRANSPORT_ERRORS = (ApiException, OSError, urllib3.exceptions.HTTPError)


class ActuationFailed(Exception):
    """A write to the API server failed; the message says which object and why."""


class ScaleConflict(ActuationFailed):
    """The workload changed between the decision and the write (409 twice); re-read and decide again."""


class UnknownWorkloadKind(ActuationFailed):
    """Only Deployments and StatefulSets are scaled."""


MESSAGE_MAX = 2000


def explain(error: BaseException) -> str:
    """Status, reason and the server's message (a validation failure names the field), or the transport error."""
    if isinstance(error, ApiException):
        try:
            message = str(json.loads(error.body or "{}").get("message") or "")
        except (ValueError, AttributeError):
            message = str(error.body or "")
        return f"{error.status} {error.reason}" + (f": {message[:MESSAGE_MAX]}" if message else "")
    return f"{type(error).__name__}: {error}"


def server_side_apply(patch: Callable[..., Any], what: str, *target: str, body: Mapping[str, Any]) -> None:
    """Apply ``body`` with ``patch`` (a client's patch call, given its path arguments ``target``) as
    sunblend's field manager; failures become ``ActuationFailed`` naming ``what``."""
    try:
        patch(
            *target,
            dict(body),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _request_timeout=TIMEOUT_SECONDS,
        )
    except TRANSPORT_ERRORS as error:
        raise ActuationFailed(f"applying {what}: {explain(error)}") from error


def _name(document: Mapping[str, Any]) -> str:
    return str(document["metadata"]["name"])


def _replicas(scale: Any) -> int | None:
    """``spec.replicas`` of a V1Scale read from the API server (absent when zero)."""
    return None if scale.spec is None else scale.spec.replicas


def _scale_options(content_type: str) -> dict[str, Any]:
    return {"field_manager": FIELD_MANAGER, "_content_type": content_type, "_request_timeout": TIMEOUT_SECONDS}


def _merge_body(replicas: int, resource_version: str | None) -> dict[str, Any]:
    """A merge patch of ``/scale``; with a resourceVersion the API server refuses it (409) if that is stale."""
    body: dict[str, Any] = {"spec": {"replicas": replicas}}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def _tested_body(current: int, replicas: int) -> list[dict[str, Any]]:
    """A JSON patch of ``/scale`` that applies only while its spec is still ``current`` replicas (else 422).

    The Scale's spec has the one field ``replicas``, left out when zero.
    """
    spec = {"replicas": current} if current else {}
    return [{"op": "test", "path": "/spec", "value": spec}, {"op": "add", "path": "/spec/replicas", "value": replicas}]


class WorkloadWriter:
    """Applies slices and PDBs, and scales Deployments and StatefulSets."""

    def __init__(self, apps: client.AppsV1Api, policy: client.PolicyV1Api) -> None:
        self._apps = apps
        self._policy = policy

    def apply_slice(self, namespace: str, deployment: Mapping[str, Any]) -> None:
        """Create the slice Deployment, or bring its labels, replicas and template to ``deployment``."""
        name = _name(deployment)
        patch = self._apps.patch_namespaced_deployment
        server_side_apply(patch, f"Deployment {namespace}/{name}", name, namespace, body=deployment)

    def apply_budget(self, namespace: str, pdb: Mapping[str, Any]) -> None:
        """Create the slice's PodDisruptionBudget, or bring it to ``pdb``."""
        name = _name(pdb)
        patch = self._policy.patch_namespaced_pod_disruption_budget
        server_side_apply(patch, f"PodDisruptionBudget {namespace}/{name}", name, namespace, body=pdb)

    def _scale_calls(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """(read, patch) of the scale subresource of ``kind``."""
        if kind == "Deployment":
            return self._apps.read_namespaced_deployment_scale, self._apps.patch_namespaced_deployment_scale
        if kind == "StatefulSet":
            return self._apps.read_namespaced_stateful_set_scale, self._apps.patch_namespaced_stateful_set_scale
        raise UnknownWorkloadKind(f"cannot scale a {kind}: only Deployment and StatefulSet")

    def scale(
        self,
        namespace: str,
        kind: str,
        name: str,
        replicas: int,
        expected_resource_version: str | None,
        expected_replicas: int | None = None,
    ) -> None:
        """Set ``kind``/``name``'s replicas through ``/scale``.

        With ``expected_resource_version`` the write is refused (409) if the workload changed since
        that read. A Deployment's version also moves with every status write, so a 409 is answered
        by one fresh read: if the replicas are already ``replicas`` there is nothing to do; if they
        differ from ``expected_replicas`` (when given) someone else scaled it, a ``ScaleConflict``;
        otherwise the write is tried once more as a JSON patch that tests the freshly read replicas,
        which the API server applies to the latest version (a failed test is a ``ScaleConflict``).
        """
        read, patch = self._scale_calls(kind)
        where = f"{kind} {namespace}/{name}"
        try:
            try:
                patch(name, namespace, _merge_body(replicas, expected_resource_version), **_scale_options(MERGE))
                return
            except ApiException as error:
                if error.status != 409:
                    raise
            current = _replicas(read(name, namespace, _request_timeout=TIMEOUT_SECONDS)) or 0
            if current == replicas:
                return
            if expected_replicas is not None and current != expected_replicas:
                raise ScaleConflict(f"scaling {where}: it has {current} replicas now, not {expected_replicas}")
            logger.info("%s changed since it was read; writing %d replicas once more", where, replicas)
            patch(name, namespace, _tested_body(current, replicas), **_scale_options(JSON_PATCH))
        except ApiException as error:
            if error.status in (409, 422):
                raise ScaleConflict(f"scaling {where}: its replicas changed while being written") from error
            raise ActuationFailed(f"scaling {where} to {replicas}: {explain(error)}") from error
        except TRANSPORT_ERRORS as error:
            raise ActuationFailed(f"scaling {where} to {replicas}: {explain(error)}") from error
