"""The loader checks the model-server rules the CRD's CEL checks, naming the field."""

from __future__ import annotations

import pytest

from sunblend.api import load
from tests.unit import pools


def _errors(**model_server):
    document = pools.document(modelServer={"gpusPerReplica": 1, "tokensPerSecondPerReplica": 100, **model_server})
    with pytest.raises(load.InvalidPool) as caught:
        load.parse_pool(document)
    return str(caught.value)


def test_workload_refs_must_name_declared_regions_once_each():
    message = _errors(workloadRefs=[{"region": "mars-1", "name": "a"}, {"region": "mars-1", "name": "b"}])
    assert "spec.modelServer.workloadRefs[0].region: every workloadRefs entry must name a declared region" in message
    assert "spec.modelServer.workloadRefs[1].region: duplicate region 'mars-1'" in message


def test_workload_refs_exclude_a_template_and_a_workload_ref():
    message = _errors(workloadRefs=[{"region": "r1", "name": "a"}], workloadRef={"name": "b"})
    assert "spec.modelServer: set workloadRefs (one per region), workloadRef or template: only one of them" in message


def test_per_region_workload_refs_are_accepted():
    document = pools.document(
        modelServer={"tokensPerSecondPerReplica": 100, "workloadRefs": [{"region": "r1", "name": "server"}]}
    )
    pool = load.parse_pool(document)
    assert pool.spec.model_server.workload_refs[0].kind == "Deployment"
