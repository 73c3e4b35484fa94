"""Merge patches for the status: keys that went are nulled, so they do not come back."""

from __future__ import annotations

from sunblend.loop import merge


def test_a_removed_key_is_nulled_and_applying_the_patch_gives_the_new_document():
    before = {"surge": {"r1/gpu/on-demand": 2}, "hour": "12:00", "nextPlan": {"hour": "13:00"}}
    after = {"surge": {}, "hour": "13:00", "nextPlan": None}
    patch = merge.diff(before, after)
    assert patch == {"surge": {"r1/gpu/on-demand": None}, "hour": "13:00", "nextPlan": None}
    assert merge.apply(before, patch) == {"surge": {}, "hour": "13:00"}


def test_lists_are_replaced_whole():
    assert merge.diff({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge.apply({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
