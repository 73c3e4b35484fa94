"""Builders of small pools for tests: a valid minimal pool, changed only where a test says."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from sunblend.api import load, spec
from sunblend.core import problem

MONDAY_NOON = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)


def region(name: str, tz: str = "UTC", base: float = 100.0, peak: float | None = None, busy=(9, 18)) -> dict[str, Any]:
    return {
        "name": name,
        "timeZone": tz,
        "demand": {
            "baselineTokensPerSecond": base,
            "peakTokensPerSecond": base if peak is None else peak,
            "busyHours": {"start": busy[0], "end": busy[1]},
        },
    }


def gpu_class(name: str = "gpu", gpus_per_node: int = 1, **prices: float | None) -> dict[str, Any]:
    return {"name": name, "gpusPerNode": gpus_per_node, "prices": {"onDemand": 3.0, **prices}}


def document(**spec_fields: Any) -> dict[str, Any]:
    """A whole InferencePool document; ``spec_fields`` replace top-level spec fields."""
    pool_spec: dict[str, Any] = {
        "modelServer": {"gpusPerReplica": 1, "tokensPerSecondPerReplica": 100},
        "regions": [region("r1")],
        "gpuClasses": [gpu_class()],
        "policy": {"headroom": 0, "maxSpotFraction": 1, "spotLossServedFraction": 0, "minReplicasPerRegion": 0},
    }
    pool_spec.update(copy.deepcopy(spec_fields))
    return {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "t"},
        "spec": pool_spec,
    }


def pool_spec(**spec_fields: Any) -> spec.InferencePoolSpec:
    return load.parse_pool(document(**spec_fields)).spec


def blend_problem(now: dt.datetime = MONDAY_NOON, **spec_fields: Any) -> problem.BlendProblem:
    return problem.from_spec(pool_spec(**spec_fields), now)
