"""The operator reading a real Prometheus: observed utilisation and demand reach the pool's status.

Reuses the Prometheus, agent and model-server fixtures of test_prometheus.py (fresh instances
for this module): two fake-NVML agent processes for the nodes gpu-mumbai-1 (ap-south-1) and
gpu-london-1 (eu-west-2), scraped by Debian's Prometheus. The cluster gets kwok nodes of the same
names, and a second operator, pointed at that Prometheus, replaces the session's operator for
the duration of the test.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Operator, wait_for
from tests.e2e.test_operator import _condition, _example
from tests.e2e.test_prometheus import agents, model_servers, prometheus_binary, server  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
import kwok_nodes  # the same fake GPU nodes `make demo` creates

pytestmark = pytest.mark.e2e


def _has_agent_data(url: str) -> bool:
    query = urllib.parse.urlencode({"query": "count(sunblend_gpu_utilization_ratio)"})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=2) as response:
            return bool(json.loads(response.read())["data"]["result"])
    except OSError:
        return False


def test_observed_utilisation_and_demand_reach_the_status(operator, namespace, server, tmp_path):  # noqa: F811
    cluster = operator.cluster
    for name, region in (("gpu-mumbai-1", "ap-south-1"), ("gpu-london-1", "eu-west-2")):
        cluster.apply(kwok_nodes.node(region, "on-demand", 0, name=name), namespace)
    wait_for(lambda: _has_agent_data(server.url), 30, what="the agents' metrics in Prometheus")
    operator.stop()
    measuring = Operator(cluster, tmp_path / "operator.log")
    measuring.extra_args = ["--prometheus-url", server.url, "--prometheus-timeout", "3"]
    try:
        measuring.start()
        cluster.apply(_example(), namespace)
        pool = wait_for(
            lambda: (
                (p := cluster.get("inferencepools.sunblend.dev", "chat-india-uk", "-n", namespace))
                and _condition(p, "MetricsAvailable").get("status") == "True"
                and p
            ),
            20,
            what="MetricsAvailable=True",
        )
    finally:
        measuring.stop()
        operator.start()
        for name in ("gpu-mumbai-1", "gpu-london-1"):
            cluster.kubectl("delete", "node", name, "--wait=false", check=False)
    observed = {o["region"]: o for o in pool["status"]["observed"]}
    # Mumbai's two fake GPUs run at 80%; London's GPU 1 at 30% and GPU 0 in MIG (no agent value).
    assert observed["ap-south-1"]["utilizationRatio"] == pytest.approx(0.8)
    assert observed["eu-west-2"]["utilizationRatio"] == pytest.approx(0.3)
    assert observed["ap-south-1"]["demandTokensPerSecond"] > 0
    assert _condition(pool, "Ready")["status"] == "True"
    assert yaml.safe_dump(pool["status"]["observed"])  # the status round-trips through the API server
