"""The operator advises consolidation: a ConsolidationAdvised event on each pool of the same model."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e


def _pool(name: str, tokens_per_second: float, model: str) -> dict:
    return {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {
            "modelServer": {"model": model, "gpusPerReplica": 1, "tokensPerSecondPerReplica": 100},
            "regions": [
                {
                    "name": "r1",
                    "timeZone": "UTC",
                    "demand": {"baselineTokensPerSecond": tokens_per_second, "peakTokensPerSecond": tokens_per_second},
                }
            ],
            "gpuClasses": [{"name": "h100", "gpusPerNode": 8, "prices": {"onDemand": 2.0}}],
            "policy": {"headroom": 0, "minReplicasPerRegion": 1},
        },
    }


def test_pools_of_the_same_model_in_one_region_each_get_an_event_naming_the_other(operator, namespace):
    cluster = operator.cluster
    model = f"e2e/model-{uuid.uuid4().hex[:8]}"  # no other test's pool serves it
    # By hand: alone, 500 and 200 tokens/s each need one 8-GPU node ($16/h); together, one node.
    cluster.apply(_pool("chat", 500.0, model), namespace)
    cluster.apply(_pool("search", 200.0, model), namespace)

    def advised() -> list[dict]:
        events = cluster.get("events", "-n", namespace, "--field-selector", "reason=ConsolidationAdvised")["items"]
        return events if {e["involvedObject"]["name"] for e in events} == {"chat", "search"} else []

    events = wait_for(advised, 120, interval=2, what="ConsolidationAdvised on both pools")
    by_pool = {e["involvedObject"]["name"]: e["message"] for e in events}
    assert f"{namespace}/search" in by_pool["chat"] and f"{namespace}/chat" in by_pool["search"]
    assert all("saving $16.00/h" in message for message in by_pool.values())
    assert all(e["involvedObject"]["kind"] == "InferencePool" for e in events)
