"""Consolidation advice: grouping by model and shared regions, the merge rules, and the saving."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sunblend.api import load
from sunblend.core import blend, consolidation, problem
from tests.unit.pools import MONDAY_NOON, region

MODEL = "meta-llama/Llama-3.1-70B-Instruct"


def entry(name: str, namespace: str = "team", **spec_fields: Any) -> consolidation.PoolEntry:
    """A pool of MODEL in region r1: 8-GPU nodes at $2/GPU-hour on-demand, 100 tokens/s a replica."""
    pool_spec: dict[str, Any] = {
        "modelServer": {"model": MODEL, "gpusPerReplica": 1, "tokensPerSecondPerReplica": 100},
        "regions": [region("r1", base=100.0)],
        "gpuClasses": [{"name": "h100", "gpusPerNode": 8, "prices": {"onDemand": 2.0}}],
        "policy": {"headroom": 0, "maxSpotFraction": 0, "spotLossServedFraction": 0, "minReplicasPerRegion": 1},
    }
    for key, value in copy.deepcopy(spec_fields).items():
        if key == "modelServer":
            pool_spec["modelServer"] = {**pool_spec["modelServer"], **value}
        elif key == "policy":
            pool_spec["policy"] = {**pool_spec["policy"], **value}
        else:
            pool_spec[key] = value
    document = {
        "apiVersion": "sunblend.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": pool_spec,
    }
    pool = load.parse_pool(document)
    return consolidation.PoolEntry(pool.metadata.namespace, pool.metadata.name, pool.spec)


def test_merging_saves_the_node_each_pool_rounds_up_alone():
    # By hand: a node serves 8 replicas x 100 = 800 tokens/s, at 8 GPUs x $2 = $16 an hour.
    # Alone, 500 tokens/s needs 1 node and 200 tokens/s needs 1 node: $32/h. Together 700 tokens/s
    # fits on 1 node: $16/h. Merging saves $16/h, $384 over the 24 h horizon.
    a = entry("chat", regions=[region("r1", base=500.0)])
    b = entry("search", regions=[region("r1", base=200.0)])
    (advice,) = consolidation.advise([a, b], MONDAY_NOON)
    assert advice.status is consolidation.GroupStatus.ADVISED
    assert advice.pools == ("team/chat", "team/search")
    assert advice.shared_regions == ("r1",)
    assert advice.separate_dollars == {"team/chat": pytest.approx(384.0), "team/search": pytest.approx(384.0)}
    assert advice.merged_dollars == pytest.approx(384.0)
    assert advice.saving_dollars == pytest.approx(384.0)
    assert advice.saving_dollars_per_hour == pytest.approx(16.0)
    assert advice.merged_dollars <= advice.separate_total_dollars
    message = advice.message_for("team/chat")
    assert "team/search" in message and "team/chat" not in message and "$16.00/h" in message


def test_when_each_pool_fills_its_nodes_merging_saves_nothing():
    a = entry("chat", regions=[region("r1", base=800.0)])
    b = entry("search", regions=[region("r1", base=1600.0)])
    (advice,) = consolidation.advise([a, b], MONDAY_NOON)
    assert advice.status is consolidation.GroupStatus.NO_SAVING
    assert advice.saving_dollars == pytest.approx(0.0)


def test_merged_cost_never_exceeds_the_sum_on_overlapping_multi_region_pools():
    a = entry(
        "chat",
        regions=[region("r1", base=300.0, peak=1500.0), region("r2", tz="Asia/Kolkata", base=200.0, peak=900.0)],
        gpuClasses=[{"name": "h100", "gpusPerNode": 8, "prices": {"onDemand": 2.0, "spot": 1.0}}],
        policy={"maxSpotFraction": 0.5},
    )
    b = entry(
        "search",
        regions=[region("r2", tz="Asia/Kolkata", base=150.0, peak=700.0), region("r3", tz="Europe/London", base=90.0)],
        gpuClasses=[{"name": "h100", "gpusPerNode": 8, "prices": {"onDemand": 2.0, "spot": 1.0}}],
    )
    (advice,) = consolidation.advise([a, b], MONDAY_NOON)
    assert advice.shared_regions == ("r2",)
    assert advice.merged_dollars is not None
    assert advice.merged_dollars <= advice.separate_total_dollars + 1e-6
    merged = consolidation.merge([a, b]).spec
    assert [r.name for r in merged.regions] == ["r1", "r2", "r3"]
    assert merged.policy.max_spot_fraction == 0  # the strictest: search allows no spot


def test_pools_of_different_models_or_disjoint_regions_are_not_grouped():
    a = entry("chat")
    b = entry("search", modelServer={"model": "Qwen/Qwen2.5-14B-Instruct"})
    c = entry("far", regions=[region("r9")])
    unnamed = entry("unnamed", modelServer={"model": None})
    assert consolidation.groups([a, b, c, unnamed]) == []
    assert consolidation.advise([a, b, c, unnamed], MONDAY_NOON) == ()


def test_regions_overlapping_through_a_third_pool_make_one_group():
    a = entry("a", regions=[region("r1")])
    b = entry("b", regions=[region("r1"), region("r2")])
    c = entry("c", regions=[region("r2")])
    ((model, members),) = consolidation.groups([c, a, b])
    assert model == MODEL
    assert [m.key for m in members] == ["team/a", "team/b", "team/c"]


def test_incompatible_model_servers_are_refused_with_the_reason():
    a = entry("chat")
    b = entry("search", modelServer={"tokensPerSecondPerReplica": 150, "gpusPerReplica": 2})
    (advice,) = consolidation.advise([a, b], MONDAY_NOON)
    assert advice.status is consolidation.GroupStatus.REFUSED
    assert advice.merged_dollars is None and advice.saving_dollars is None
    text = " ".join(advice.reasons)
    assert "gpusPerReplica" in text and "tokensPerSecondPerReplica" in text and "team/search" in text


def test_different_prices_time_zones_or_node_sizes_are_refused():
    a = entry("chat")
    b = entry(
        "search",
        regions=[region("r1", tz="Europe/London")],
        gpuClasses=[{"name": "h100", "gpusPerNode": 4, "prices": {"onDemand": 2.5}}],
    )
    with pytest.raises(consolidation.MergeRefused) as refused:
        consolidation.merge([a, b])
    text = " ".join(refused.value.reasons)
    assert "timeZone" in text and "gpusPerNode" in text and "onDemand price of h100 in r1 differs" in text


def test_merge_rules_take_the_strictest_policy_and_sum_commitments_and_budgets():
    priced = [{"name": "h100", "gpusPerNode": 8, "prices": {"onDemand": 2.0, "committed": 1.2}}]
    a = entry(
        "chat",
        gpuClasses=priced,
        commitments=[{"gpuClass": "h100", "region": "r1", "gpus": 8}],
        policy={"headroom": 0.1, "maxSpotFraction": 0.6, "budgetDollarsPerHour": 100.0, "minReplicasPerRegion": 2},
    )
    b = entry(
        "search",
        gpuClasses=[{"name": "h100", "gpusPerNode": 8, "prices": {"onDemand": 2.0}}],
        commitments=[],
        policy={"headroom": 0.3, "maxSpotFraction": 0.2, "budgetDollarsPerHour": 50.0},
        planning={"horizonHours": 48},
    )
    merged = consolidation.merge([b, a])
    policy = merged.spec.policy
    assert (policy.headroom, policy.max_spot_fraction, policy.min_replicas_per_region) == (0.3, 0.2, 2)
    assert policy.budget_dollars_per_hour == 150.0
    assert [(c.gpu_class, c.region, c.gpus) for c in merged.spec.commitments] == [("h100", "r1", 8)]
    assert merged.spec.planning.horizon_hours == 48
    assert any("committed price" in n for n in merged.notes)  # search declares none; chat's is taken
    c = entry("other", policy={"budgetDollarsPerHour": None})
    assert consolidation.merge([a, c]).spec.policy.budget_dollars_per_hour is None


def test_a_class_is_offered_where_any_member_offers_it_with_its_prices():
    a = entry(
        "chat",
        regions=[region("r1"), region("r2")],
        gpuClasses=[
            {
                "name": "h100",
                "gpusPerNode": 8,
                "prices": {"onDemand": 2.0, "spot": 1.0},
                "regionPrices": [{"region": "r2", "onDemand": 3.0}],
                "regions": ["r2"],
            }
        ],
    )
    b = entry("search", regions=[region("r1"), region("r3")])
    merged = consolidation.merge([a, b]).spec
    h100 = merged.gpu_class("h100")
    assert h100.regions == []  # offered in every merged region
    assert merged.prices(h100, "r2").on_demand == 3.0 and merged.prices(h100, "r2").spot == 1.0
    assert merged.prices(h100, "r1").spot is None and merged.prices(h100, "r1").on_demand == 2.0


def test_every_plan_of_a_group_covers_the_same_hours_and_demand_is_summed():
    a = entry("chat", regions=[region("r1", base=500.0)], planning={"horizonHours": 6})
    b = entry("search", regions=[region("r1", base=200.0)], planning={"horizonHours": 12})
    (advice,) = consolidation.advise([a, b], MONDAY_NOON)
    assert advice.horizon_hours == 12
    assert advice.saving_dollars == pytest.approx(16.0 * 12)
    hours = problem.from_spec(consolidation.merge([a, b]).spec, MONDAY_NOON).hours
    assert consolidation.summed_forecast([a, b], hours)["r1"] == (700.0,) * 12
    alone = blend.plan(problem.from_spec(consolidation.over_horizon(a.spec, 12), MONDAY_NOON))
    assert len(alone.hour_costs) == 12


def test_a_group_that_cannot_be_planned_says_so():
    # Alone each pool needs one $16 node within its $16/h budget. Merged, the strictest headroom
    # (50%) makes 1,200 tokens/s need 3 nodes ($48/h), over the summed $32/h budget.
    a = entry("chat", regions=[region("r1", base=700.0)], policy={"budgetDollarsPerHour": 16.0})
    b = entry("search", regions=[region("r1", base=500.0)], policy={"budgetDollarsPerHour": 16.0, "headroom": 0.5})
    (advice,) = consolidation.advise([a, b], MONDAY_NOON)
    assert advice.status is consolidation.GroupStatus.UNPLANNED
    assert advice.merged_dollars is None
    assert [r.split(":")[0] for r in advice.reasons] == ["merged"]


def test_the_document_is_plain_json():
    import json

    a = entry("chat", regions=[region("r1", base=500.0)])
    b = entry("search", regions=[region("r1", base=200.0)])
    text = json.dumps(consolidation.document(consolidation.advise([a, b], MONDAY_NOON)))
    (group,) = json.loads(text)["groups"]
    assert group["savingDollarsPerHour"] == pytest.approx(16.0)
    assert group["pools"] == ["team/chat", "team/search"]
