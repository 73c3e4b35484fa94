"""core/interruptions.py: spot interruption signals from node taints, through configurable rules."""

from __future__ import annotations

import pytest

from sunblend.core import interruptions
from sunblend.core.interruptions import InterruptionRule

NTH = {"key": "aws-node-termination-handler/spot-itn", "value": "8f3c", "effect": "NoSchedule"}
KARPENTER = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
GKE = {"key": "cloud.google.com/impending-node-termination", "value": "true", "effect": "NoSchedule"}
GPU = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.mark.parametrize("taint", [NTH, KARPENTER, GKE], ids=["nth", "karpenter", "gke"])
def test_the_default_rules_see_each_providers_signal(taint):
    assert interruptions.signal([GPU, taint], interruptions.DEFAULT_RULES) == taint["key"]


def test_a_node_without_a_signal_taint_has_none():
    assert interruptions.signal([GPU], interruptions.DEFAULT_RULES) is None
    assert interruptions.signal([], interruptions.DEFAULT_RULES) is None


def test_a_rule_with_an_effect_ignores_the_same_key_with_another_effect():
    assert interruptions.signal([{**KARPENTER, "effect": "PreferNoSchedule"}], interruptions.DEFAULT_RULES) is None


def test_a_rule_without_an_effect_matches_any_effect_and_any_value():
    rule = InterruptionRule("example.com/reclaim")
    for effect in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        assert interruptions.signal([{"key": "example.com/reclaim", "value": "x", "effect": effect}], [rule]) == (
            "example.com/reclaim"
        )


def test_the_first_matching_rule_names_the_signal():
    rules = interruptions.DEFAULT_RULES
    assert interruptions.signal([GKE, NTH], rules) == NTH["key"]
    assert interruptions.signal([GKE, NTH], tuple(reversed(rules))) == GKE["key"]


def test_no_rules_see_no_signal():
    assert interruptions.signal([NTH], []) is None


def test_rules_from_config():
    rules = interruptions.rules_from_config(
        [{"taintKey": "example.com/reclaim"}, {"taintKey": "karpenter.sh/disrupted", "effect": "NoSchedule"}]
    )
    assert rules == (InterruptionRule("example.com/reclaim"), InterruptionRule("karpenter.sh/disrupted", "NoSchedule"))
    assert interruptions.rules_from_config([]) == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"effect": "NoSchedule"}, "taintKey must be a non-empty string"),
        ({"taintKey": ""}, "taintKey must be a non-empty string"),
        ({"taintKey": 3}, "taintKey must be a non-empty string"),
        ({"taintKey": "a/b", "effect": "Sometimes"}, "effect must be one of NoExecute, NoSchedule, PreferNoSchedule"),
        ({"taintKey": "a/b", "taint_key": "c"}, "unknown fields taint_key"),
        ("a/b", "must be a mapping"),
    ],
    ids=["missing key", "empty key", "key not a string", "bad effect", "unknown field", "not a mapping"],
)
def test_a_bad_entry_is_refused_naming_it(entry, message):
    with pytest.raises(ValueError, match=message) as raised:
        interruptions.rules_from_config([{"taintKey": "fine/key"}, entry])
    assert isinstance(raised.value, interruptions.RuleError)
    assert repr(entry) in str(raised.value)
