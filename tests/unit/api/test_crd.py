"""The CRD generated from the models: committed file in sync, structural, conventions kept."""

from __future__ import annotations

from pathlib import Path

import yaml

from sunblend.api import constants, crd, rules

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "crds" / "inferencepools.sunblend.dev.yaml"


def test_committed_crd_matches_the_models():
    assert COMMITTED.read_text() == crd.render(), "crds/ drifted from the models: run `make crd`"


def _walk(node, path="schema"):
    yield path, node
    for key in ("properties",):
        for name, child in node.get(key, {}).items():
            yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    schema = crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_names_status_printer_columns_and_rules():
    document = yaml.safe_load(COMMITTED.read_text())
    names = document["spec"]["names"]
    assert "infpool" not in names["shortNames"]  # the Gateway API Inference Extension's
    assert names["categories"] == list(constants.CATEGORIES)
    version = document["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Hour$",
        "HourSavings%",
        "HorizonSavings%",
        "Spot%",
        "CommitSave$/mo",
        "Age",
    ]
    text = COMMITTED.read_text()
    for rule in rules.SPEC + rules.DEMAND + rules.MODEL_SERVER + rules.BUSY_HOURS:
        assert rule.message in text


def test_every_number_in_the_spec_has_a_maximum():
    spec = crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    numbers = [(path, node) for path, node in _walk(spec, "spec") if node.get("type") in ("number", "integer")]
    assert len(numbers) > 20
    assert [path for path, node in numbers if "maximum" not in node] == []


def test_region_prices_may_give_any_subset_of_prices():
    spec = crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    entry = spec["properties"]["gpuClasses"]["items"]["properties"]["regionPrices"]["items"]
    assert entry["required"] == ["region"]
    assert {"committed", "spot", "onDemand"} <= set(entry["properties"])


def test_a_minimal_pool_is_filled_in_by_defaults():
    spec = crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    policy = spec["properties"]["policy"]
    assert policy["default"]["headroom"] == 0.2 and "routing" in policy["default"]
    busy_hours = spec["properties"]["regions"]["items"]["properties"]["demand"]["properties"]["busyHours"]
    assert busy_hours["default"] == {"start": 9, "end": 18}  # CEL reads them: no bare {}
    assert policy["properties"]["headroom"]["default"] == 0.2
    assert spec["properties"]["planning"]["properties"]["horizonHours"]["default"] == 24
    assert spec["properties"]["regions"]["x-kubernetes-list-type"] == "map"


def test_the_chart_ships_the_same_crd():
    chart_copy = ROOT / "charts" / "sunblend" / "crds" / COMMITTED.name
    assert chart_copy.read_text() == COMMITTED.read_text(), "charts/sunblend/crds drifted: run `make crd`"
