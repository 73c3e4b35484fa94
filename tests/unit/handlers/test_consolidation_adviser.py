"""The operator's consolidation adviser: events on each member, at most hourly, only while leading."""

from __future__ import annotations

import datetime as dt

from sunblend.handlers import consolidation, pool
from tests.unit import pools

NOON = dt.datetime(2026, 11, 23, 12, 10, tzinfo=dt.UTC)


class RecordingPoster:
    """Stands in for actuate.status.StatusWriter: records the events it would post."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def post_event(self, body, event_type, reason, message, now):
        self.events.append((body["metadata"]["name"], reason, message))


def _body(name: str, tokens_per_second: float, model: str = "m/llm") -> str:
    document = pools.document(
        modelServer={"model": model, "gpusPerReplica": 1, "tokensPerSecondPerReplica": 100},
        regions=[pools.region("r1", base=tokens_per_second)],
        gpuClasses=[pools.gpu_class("h100", gpus_per_node=8, onDemand=2.0)],
    )
    document["metadata"] = {"name": name, "namespace": "team", "uid": f"uid-{name}"}
    return pool.essentials(document)


def test_each_member_gets_an_event_naming_the_others_at_most_hourly():
    memo = {
        "pools": {
            ("team", "chat"): _body("chat", 500.0),
            ("team", "search"): _body("search", 200.0),
            ("team", "other"): _body("other", 200.0, model="m/other"),
        }
    }
    poster = RecordingPoster()
    adviser = consolidation.Adviser(memo, poster)  # type: ignore[arg-type]
    assert len(adviser.run_once(NOON)) == 1
    assert sorted(name for name, _, _ in poster.events) == ["chat", "search"]
    by_pool = {name: message for name, _, message in poster.events}
    assert "team/search" in by_pool["chat"] and "$16.00/h" in by_pool["chat"]
    assert {reason for _, reason, _ in poster.events} == {"ConsolidationAdvised"}
    assert adviser.run_once(NOON + dt.timedelta(minutes=59)) == []  # not again within the hour
    assert len(adviser.run_once(NOON + dt.timedelta(hours=1))) == 1
    assert len(poster.events) == 4


def test_a_new_member_makes_a_new_group_advised_at_once():
    memo = {"pools": {("team", "chat"): _body("chat", 500.0), ("team", "search"): _body("search", 200.0)}}
    adviser = consolidation.Adviser(memo, RecordingPoster())  # type: ignore[arg-type]
    assert len(adviser.run_once(NOON)) == 1
    memo["pools"][("team", "batch")] = _body("batch", 50.0)
    (advice,) = adviser.run_once(NOON + dt.timedelta(minutes=1))
    assert advice.pools == ("team/batch", "team/chat", "team/search")


def test_nothing_is_posted_when_not_leading_or_when_merging_saves_nothing():
    memo = {
        "pools": {("team", "chat"): _body("chat", 500.0), ("team", "search"): _body("search", 200.0)},
        "leading": lambda: False,
    }
    poster = RecordingPoster()
    assert consolidation.Adviser(memo, poster).run_once(NOON) == []  # type: ignore[arg-type]
    full = {"pools": {("team", "a"): _body("a", 800.0), ("team", "b"): _body("b", 1600.0)}}
    assert consolidation.Adviser(full, poster).run_once(NOON) == []  # type: ignore[arg-type]
    assert poster.events == []


def test_invalid_pools_are_skipped():
    memo = {"pools": {("team", "bad"): '{"spec": {"regions": []}, "metadata": {"name": "bad"}}'}}
    assert consolidation.Adviser(memo, RecordingPoster()).run_once(NOON) == []  # type: ignore[arg-type]
