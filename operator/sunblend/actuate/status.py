"""Writes a pool's status and posts its events through the Kubernetes API.

Used by the hourly re-plan loop, which runs outside kopf's handlers and so cannot use kopf's
patch object. Status goes through the ``/status`` subresource as a JSON merge patch (no
resourceVersion, so no 409 from a stale read); a 409 is retried once, a 422 (the API server
rejected the status) is reported, not retried.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sunblend.api import constants

logger = logging.getLogger(__name__)


class StatusRejected(Exception):
    """The API server refused the status patch (422); the message says why."""


class StatusWriter:
    """Patches InferencePool status and creates events."""

    def __init__(self, custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
        self._custom = custom
        self._core = core

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge ``status`` into the pool's status; False if the pool is gone."""
        for attempt in (1, 2):
            try:
                self._custom.patch_namespaced_custom_object_status(
                    constants.GROUP,
                    constants.VERSION,
                    namespace,
                    constants.PLURAL,
                    name,
                    {"status": dict(status)},
                    _request_timeout=10,
                )
                return True
            except ApiException as error:
                if error.status == 404:
                    return False
                if error.status == 409 and attempt == 1:
                    continue
                if error.status == 422:
                    raise StatusRejected(f"{namespace}/{name}: status rejected: {error.body}") from error
                raise
        return False

    def post_event(self, pool: Mapping[str, Any], event_type: str, reason: str, message: str, now: dt.datetime) -> None:
        """Create a core/v1 Event about ``pool``."""
        meta = pool.get("metadata", {})
        namespace = meta.get("namespace", "default")
        stamp = now.astimezone(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta.get('name', 'pool')}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=constants.API_VERSION,
                kind=constants.KIND,
                name=meta.get("name"),
                namespace=namespace,
                uid=meta.get("uid"),
            ),
            type=event_type,
            reason=reason,
            message=message[:1024],
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
            source=client.V1EventSource(component="sunblend"),
            reporting_component="sunblend",
            reporting_instance="sunblend",
        )
        try:
            self._core.create_namespaced_event(namespace, body, _request_timeout=10)
        except ApiException as error:
            logger.warning("posting event %s on %s/%s failed: %s", reason, namespace, meta.get("name"), error.reason)
