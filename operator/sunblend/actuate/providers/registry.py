"""The node providers this operator can use, each made once at start-up over one API client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from kubernetes import client

from sunblend.actuate.providers import base, clusterapi, karpenter, kwok
from sunblend.api.spec import CapacityType
from sunblend.core import nodes


def enabled(
    api: client.ApiClient,
    clock: Callable[[], dt.datetime],
    kwok_delay: dt.timedelta = dt.timedelta(seconds=60),
    rules: Sequence[nodes.CapacityTypeRule] = nodes.DEFAULT_RULES,
    karpenter_node_class: karpenter.NodeClassRef | None = None,
) -> list[base.NodeProvider]:
    """Every provider, ready to use; a pool (or the operator's default) picks one by name."""
    delays = dict.fromkeys(CapacityType, kwok_delay)
    return [
        base.NoProvider(),
        kwok.KwokProvider(api, clock, delays, rules),
        karpenter.KarpenterProvider(api, karpenter_node_class),
        clusterapi.ClusterApiProvider(api),
    ]
