"""The operator's commitment adviser: status.commitmentAdvice rarely, on spec changes, only while leading."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from sunblend.handlers import commitments, pool
from sunblend.observe import history
from tests.unit import pools

NOW = dt.datetime(2026, 11, 4, 0, 3, 20, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=5)


def samples(start: dt.datetime, end: dt.datetime, floor: float = 300.0) -> list[tuple[dt.datetime, float]]:
    """300 tokens/s (or ``floor``), and 500 from 12:00 to 18:00 UTC, every 5 minutes from ``start``."""
    points = []
    moment = start
    while moment <= end:
        points.append((moment, 500.0 if 12 <= moment.hour < 18 else floor))
        moment += STEP
    return points


class FakeHistory:
    """Two days of demand before the window's end; or an error, when told to fail."""

    def __init__(self) -> None:
        self.reads: list[tuple[tuple[str, ...], dt.datetime, dt.timedelta]] = []
        self.error: Exception | None = None
        self.floor = 300.0

    def read(self, regions, window):
        self.reads.append((tuple(regions), window.end, window.span))
        if self.error is not None:
            raise self.error
        start = window.end - dt.timedelta(days=2)
        return {r: samples(start, window.end - STEP, self.floor) for r in regions}


class RecordingWriter:
    """Stands in for actuate.status.StatusWriter: records status patches and events."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict]] = []
        self.events: list[tuple[str, str, str, str]] = []

    def patch_status(self, namespace, name, status):
        self.patches.append((namespace, name, dict(status)))
        return True

    def post_event(self, body, event_type, reason, message, now):
        self.events.append((body["metadata"]["name"], event_type, reason, message))


def body(name: str = "chat", generation: int = 1, committed: float | None = 2.0, held: int = 0, status=None) -> str:
    prices = {} if committed is None else {"committed": committed}
    fields: dict = {"gpuClasses": [pools.gpu_class(**prices)]}
    if held:
        fields["commitments"] = [{"gpuClass": "gpu", "region": "r1", "gpus": held}]
    document = pools.document(**fields)
    document["metadata"] = {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": generation}
    if status is not None:
        document["status"] = status
    return pool.essentials(document)


def adviser(memo, writer=None, reader=None, **kwargs):
    return commitments.CommitmentAdviser(
        memo, writer or RecordingWriter(), reader or FakeHistory(), every=dt.timedelta(hours=24), **kwargs
    )


def test_a_pool_gets_its_advice_in_status_and_one_event():
    memo = {"pools": {("team", "chat"): body(held=1)}}
    writer, reader = RecordingWriter(), FakeHistory()
    (written,) = adviser(memo, writer, reader).run_once(NOW)
    assert written[0] == ("team", "chat")
    ((namespace, name, patch),) = writer.patches
    assert (namespace, name, list(patch)) == ("team", "chat", ["commitmentAdvice"])  # nothing else of status
    advice = patch["commitmentAdvice"]
    assert advice["commitments"] == [
        {
            "gpuClass": "gpu",
            "region": "r1",
            "advisedGpus": 3,
            "heldGpus": 1,
            "buyGpus": 2,
            "breakEvenRatio": pytest.approx(0.6667),
            "utilizationRatio": 1.0,
        }
    ]
    assert advice["historyEnd"] == "2026-11-04T00:00:00Z"  # rounded down to the step
    assert advice["historyWindow"] == "14d"
    assert advice["observedGeneration"] == 1
    assert advice["error"] is None  # null in the merge patch: clears an earlier error
    assert reader.reads == [(("r1",), dt.datetime(2026, 11, 4, tzinfo=dt.UTC), dt.timedelta(days=14))]
    ((_, event_type, reason, message),) = writer.events
    assert (event_type, reason) == ("Normal", "CommitmentAdvised")
    assert message.startswith("commit now to 2 gpu GPUs in r1")


def test_advice_is_renewed_once_a_day_and_an_unchanged_one_posts_no_event():
    memo = {"pools": {("team", "chat"): body()}}
    writer = RecordingWriter()
    advising = adviser(memo, writer)
    assert len(advising.run_once(NOW)) == 1
    # kopf's body has not caught up yet: the advice just written still counts.
    assert advising.run_once(NOW + dt.timedelta(hours=1)) == []
    (_, _, patch) = writer.patches[0]
    memo["pools"][("team", "chat")] = body(status={"commitmentAdvice": patch["commitmentAdvice"]})
    assert advising.run_once(NOW + dt.timedelta(hours=23, minutes=59)) == []
    assert len(advising.run_once(NOW + dt.timedelta(hours=24))) == 1
    assert len(writer.patches) == 2
    assert len(writer.events) == 1  # the same advice again: no second event


def test_a_spec_change_is_advised_at_once_and_a_new_answer_posts_an_event():
    memo = {"pools": {("team", "chat"): body()}}
    writer, reader = RecordingWriter(), FakeHistory()
    advising = adviser(memo, writer, reader)
    advising.run_once(NOW)
    (_, _, patch) = writer.patches[0]
    memo["pools"][("team", "chat")] = body(generation=2, held=3, status={"commitmentAdvice": patch["commitmentAdvice"]})
    (written,) = advising.run_once(NOW + dt.timedelta(minutes=1))
    assert written[1]["observedGeneration"] == 2
    assert [(r["heldGpus"], r["buyGpus"]) for r in written[1]["commitments"]] == [(3, 0)]
    assert [reason for _, _, reason, _ in writer.events] == ["CommitmentAdvised", "CommitmentAdvised"]
    assert "commit to nothing more" in writer.events[1][3]


def test_a_follower_advises_nothing():
    memo = {"pools": {("team", "chat"): body()}, "leading": lambda: False}
    writer, reader = RecordingWriter(), FakeHistory()
    assert adviser(memo, writer, reader).run_once(NOW) == []
    assert (writer.patches, writer.events, reader.reads) == ([], [], [])


def test_leadership_lost_while_solving_writes_nothing():
    answers = iter([True, False])
    memo = {"pools": {("team", "chat"): body()}, "leading": lambda: next(answers)}
    writer = RecordingWriter()
    assert adviser(memo, writer).run_once(NOW) == []
    assert writer.patches == []


def test_prometheus_down_is_an_error_in_status_a_warning_once_and_a_retry_within_the_hour():
    memo = {"pools": {("team", "chat"): body()}}
    writer, reader = RecordingWriter(), FakeHistory()
    reader.error = history.HistoryUnavailable("Prometheus at http://127.0.0.1:1 is unreachable")
    advising = adviser(memo, writer, reader)
    (written,) = advising.run_once(NOW)
    assert written[1]["error"] == "Prometheus at http://127.0.0.1:1 is unreachable"
    assert written[1]["commitments"] == []
    assert writer.events == [
        ("chat", "Warning", "CommitmentAdviceFailed", "Prometheus at http://127.0.0.1:1 is unreachable")
    ]
    assert advising.run_once(NOW + dt.timedelta(minutes=59)) == []
    assert len(advising.run_once(NOW + dt.timedelta(hours=1))) == 1
    assert len(writer.events) == 1  # the same reason: no second warning
    reader.error = None
    (written,) = advising.run_once(NOW + dt.timedelta(hours=2))
    assert written[1]["error"] is None and written[1]["commitments"]
    assert writer.events[-1][2] == "CommitmentAdvised"


def test_an_unexpected_error_is_reported_on_the_pool_not_raised():
    memo = {"pools": {("team", "chat"): body()}}
    reader = FakeHistory()
    reader.error = RuntimeError("boom")
    (written,) = adviser(memo, reader=reader).run_once(NOW)
    assert written[1]["error"] == "internal error: boom"


def test_pools_without_a_committed_price_or_with_an_invalid_spec_are_left_alone():
    broken = body(name="broken").replace('"gpusPerReplica":1', '"gpusPerReplica":-1')
    memo = {"pools": {("team", "spot"): body(name="spot", committed=None), ("team", "broken"): broken}}
    writer, reader = RecordingWriter(), FakeHistory()
    assert adviser(memo, writer, reader).run_once(NOW) == []
    assert (writer.patches, reader.reads) == ([], [])


def test_due():
    computed = {"computedAt": "2026-11-04T00:00:00Z", "observedGeneration": 3}
    day = dt.timedelta(hours=24)
    at = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
    assert commitments.due(None, 3, at, day)
    assert commitments.due(computed, 4, at, day)  # the spec changed
    assert not commitments.due(computed, 3, at + dt.timedelta(hours=23), day)
    assert commitments.due(computed, 3, at + day, day)
    assert commitments.due(dict(computed, error="down"), 3, at + commitments.RETRY, day)
    assert not commitments.due(dict(computed, error="down"), 3, at + dt.timedelta(minutes=59), day)
    assert commitments.due({"observedGeneration": 3, "computedAt": "yesterday"}, 3, at, day)


def test_the_history_ends_on_a_whole_step():
    end = commitments.end_of_history(dt.datetime(2026, 11, 4, 10, 7, 59, 500, tzinfo=dt.UTC), STEP)
    assert end == dt.datetime(2026, 11, 4, 10, 5, tzinfo=dt.UTC)


def test_the_thread_starts_and_stops():
    memo = {"pools": {("team", "chat"): body()}, "clock": lambda: NOW}
    writer = RecordingWriter()
    written = threading.Event()
    original = writer.patch_status

    def patch_status(namespace, name, status):
        written.set()
        return original(namespace, name, status)

    writer.patch_status = patch_status  # type: ignore[method-assign]
    advising = adviser(memo, writer, interval=0.01)
    advising.start()
    try:
        assert written.wait(30)
    finally:
        advising.stop()
    assert writer.patches[0][2]["commitmentAdvice"]["computedAt"] == "2026-11-04T00:03:20Z"


@pytest.mark.parametrize("hours", ["-1", "nan", "9000"])
def test_sunblend_run_refuses_a_bad_advice_interval(hours, capsys):
    from sunblend import cli

    assert cli.main(["run", "--commitment-advice-hours", hours]) == 2
    err = capsys.readouterr().err
    assert "--commitment-advice-hours" in err and len(err.strip().splitlines()) == 1
