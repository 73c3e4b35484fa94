"""The loader refuses what the CRD refuses (rules, odd numbers) and hostile YAML, naming the field."""

from __future__ import annotations

import math

import pytest
import yaml

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


def _refused(document) -> str:
    with pytest.raises(load.InvalidPool) as caught:
        load.parse_pool(document)
    return str(caught.value)


def _with_server(**fields):
    return pools.document(modelServer={"gpusPerReplica": 1, "tokensPerSecondPerReplica": 100, **fields})


NUMBERS_THAT_BREAK_NOTHING = {
    "infinite peak": (
        pools.document(regions=[pools.region("r1", peak=math.inf)]),
        "spec.regions[0].demand.peakTokensPerSecond: must be a finite number, not infinity",
    ),
    "NaN baseline": (
        pools.document(regions=[pools.region("r1", base=math.nan, peak=10)]),
        "spec.regions[0].demand.baselineTokensPerSecond: must be a finite number, not NaN",
    ),
    "infinite budget": (
        pools.document(policy={"budgetDollarsPerHour": math.inf}),
        "spec.policy.budgetDollarsPerHour: must be a finite number, not infinity",
    ),
    "infinite price": (
        pools.document(gpuClasses=[pools.gpu_class(spot=math.inf)]),
        "spec.gpuClasses[0].prices.spot: must be a finite number, not infinity",
    ),
    "absurd peak": (
        pools.document(regions=[pools.region("r1", peak=1e25)]),
        "spec.regions[0].demand.peakTokensPerSecond: Input should be less than or equal to 1000000000",
    ),
    "absurd throughput": (
        _with_server(tokensPerSecondPerReplica=1e308),
        "spec.modelServer.tokensPerSecondPerReplica: Input should be less than or equal to 1000000000",
    ),
    "absurd price": (
        pools.document(gpuClasses=[pools.gpu_class(onDemand=1e300)]),
        "spec.gpuClasses[0].prices.onDemand: Input should be less than or equal to 1000",
    ),
    "absurd budget": (
        pools.document(policy={"budgetDollarsPerHour": 1e8}),
        "spec.policy.budgetDollarsPerHour: Input should be less than or equal to 10000000",
    ),
    "number in a string": (
        _with_server(tokensPerSecondPerReplica="2000"),
        "spec.modelServer.tokensPerSecondPerReplica: must be a number, not a string ('2000');"
        " write numbers without quotes",
    ),
    "boolean as a number": (
        _with_server(tokensPerSecondPerReplica=True),
        "spec.modelServer.tokensPerSecondPerReplica: must be a number, not a boolean (true)",
    ),
    "boolean as an integer": (
        _with_server(gpusPerReplica=True),
        "spec.modelServer.gpusPerReplica: must be an integer, not a boolean (true)",
    ),
    "fraction as an integer": (
        _with_server(gpusPerReplica=1.5),
        "spec.modelServer.gpusPerReplica: must be an integer, not 1.5",
    ),
}


@pytest.mark.parametrize("case", list(NUMBERS_THAT_BREAK_NOTHING), ids=list(NUMBERS_THAT_BREAK_NOTHING))
def test_odd_numbers_are_refused_naming_the_field(case):
    document, message = NUMBERS_THAT_BREAK_NOTHING[case]
    assert message in _refused(document)


def test_integers_serve_as_numbers_and_yaml_1_2_exponents_are_numbers():
    pool = load.load_text(
        yaml.safe_dump(pools.document()).replace("tokensPerSecondPerReplica: 100", "tokensPerSecondPerReplica: 1e3")
    )
    assert pool.spec.model_server.tokens_per_second_per_replica == 1000.0
    assert pool.spec.gpu_classes[0].prices.on_demand == 3.0
    assert load.load_text(yaml.safe_dump(pools.document(policy={"headroom": 0}))).spec.policy.headroom == 0


BILLION_LAUGHS = """
apiVersion: sunblend.dev/v1alpha1
kind: InferencePool
spec:
  modelServer:
    tokensPerSecondPerReplica: 100
    template:
      a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

HOSTILE_YAML = {
    "deep nesting": ("[" * 100_000, "(yaml): document nests deeper than 64 levels"),
    "deep nesting, closed": ("[" * 100_000 + "]" * 100_000, "(yaml): document nests deeper than 64 levels"),
    "billion laughs": (BILLION_LAUGHS, "(yaml): document expands to more than 100000 nodes through its aliases"),
    "alias loop": ("spec: &a {modelServer: *a}", "(yaml): document refers to itself through an alias"),
    "impossible date": ("spec: {x: 2024-13-45}", "(yaml): not valid YAML: month must be in 1..12"),
    "huge document": ("#" * (load.MAX_DOCUMENT_CHARS + 1), "(yaml): document is longer than 1048576 characters"),
    "not YAML": ("regions: [unclosed", "(yaml): not valid YAML"),
}


@pytest.mark.parametrize("case", list(HOSTILE_YAML), ids=list(HOSTILE_YAML))
def test_hostile_yaml_is_refused_without_a_traceback(case):
    text, message = HOSTILE_YAML[case]
    with pytest.raises(load.InvalidPool) as caught:
        load.load_text(text)
    assert message in str(caught.value)


ANCHORED = """
apiVersion: sunblend.dev/v1alpha1
kind: InferencePool
spec:
  modelServer: {tokensPerSecondPerReplica: 100}
  regions:
    - {name: r1, timeZone: UTC, demand: &demand {baselineTokensPerSecond: 10, peakTokensPerSecond: 20}}
    - {name: r2, timeZone: UTC, demand: *demand}
  gpuClasses:
    - {name: a, prices: &prices {onDemand: 3, spot: 1.0e+0}}
    - {name: b, prices: *prices}
"""


def test_ordinary_anchors_and_aliases_still_load():
    pool = load.load_text(ANCHORED)
    assert pool.spec.regions[1].demand.peak_tokens_per_second == 20
    assert pool.spec.gpu_classes[1].prices == pool.spec.gpu_classes[0].prices


def _class_with_region_prices(**region_prices):
    return {
        **pools.gpu_class(onDemand=3.0, spot=1.0, committed=2.0),
        "regionPrices": [{"region": "r1", **region_prices}],
    }


def test_a_region_entry_overrides_only_the_prices_it_gives():
    pool_spec = pools.pool_spec(gpuClasses=[_class_with_region_prices(onDemand=4.0)])
    prices = pool_spec.prices(pool_spec.gpu_classes[0], "r1")
    assert (prices.on_demand, prices.spot, prices.committed) == (4.0, 1.0, 2.0)
    pool_spec = pools.pool_spec(gpuClasses=[_class_with_region_prices(spot=0.5)])
    prices = pool_spec.prices(pool_spec.gpu_classes[0], "r1")
    assert (prices.on_demand, prices.spot, prices.committed) == (3.0, 0.5, 2.0)


def test_a_commitment_needs_a_committed_price_in_its_region():
    commitments = [{"gpuClass": "gpu", "region": "r1", "gpus": 8}]
    message = _refused(pools.document(commitments=commitments))
    assert (
        "spec.commitments[0]: a held commitment needs its price: gpuClass 'gpu' has no committed price in region 'r1'"
    ) in message
    regions = [pools.region("r1"), pools.region("r2")]
    priced_elsewhere = {**pools.gpu_class(), "regionPrices": [{"region": "r2", "committed": 2.0}]}
    assert "has no committed price in region 'r1'" in _refused(
        pools.document(regions=regions, gpuClasses=[priced_elsewhere], commitments=commitments)
    )
    priced_here = {**pools.gpu_class(), "regionPrices": [{"region": "r1", "committed": 2.0}]}
    pool_spec = pools.pool_spec(regions=regions, gpuClasses=[priced_here], commitments=commitments)
    assert pool_spec.prices(pool_spec.gpu_classes[0], "r1").committed == 2.0
