"""The fast loop steps several pools at once (a step mostly waits on the API server), each once a pass."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from sunblend.api import spec
from sunblend.core import snapshot
from sunblend.handlers import pool
from sunblend.loop import reconcile
from tests.unit import pools
from tests.unit.handlers.test_replanner import NOON, RecordingWriter


class MeetingReader:
    """A SnapshotSource whose reads return only once ``pool.LOOP_CONCURRENCY`` of them are in flight."""

    def __init__(self, fail: str | None = None) -> None:
        self.meeting = threading.Barrier(pool.LOOP_CONCURRENCY, timeout=5)
        self.read_names: list[str] = []
        self.fail = fail

    def read(self, pool_spec: spec.InferencePool) -> snapshot.Snapshot:
        self.read_names.append(pool_spec.metadata.name)
        self.meeting.wait()  # BrokenBarrierError when the pools are stepped one at a time
        if pool_spec.metadata.name == self.fail:
            raise RuntimeError("this step fails")
        return snapshot.Snapshot(readable=False, reason="not read in this test")


def _memo(services: reconcile.Services, count: int) -> dict:
    kept = {}
    for i in range(count):
        body = pools.document()
        body["metadata"].update({"name": f"p{i}", "namespace": "default", "generation": 1, "uid": f"u{i}"})
        body["status"] = reconcile.reconcile(body, NOON, services).status
        kept[("default", f"p{i}")] = pool.essentials(body)
    return {"pools": kept, "services": services}


def test_a_pass_steps_pools_at_once_and_each_pool_once():
    services = reconcile.Services()
    memo = _memo(services, 2 * pool.LOOP_CONCURRENCY)
    reader = MeetingReader()
    services.snapshots = reader
    writer = RecordingWriter()
    written = pool.Replanner(memo, writer).run_once(NOON + dt.timedelta(minutes=5))  # type: ignore[arg-type]
    names = [f"p{i}" for i in range(2 * pool.LOOP_CONCURRENCY)]
    assert sorted(reader.read_names) == names
    assert written == len(writer.patches) and sorted(name for _, name, _ in writer.patches) == names


def test_a_failed_step_fails_the_pass_after_the_other_pools_were_stepped():
    services = reconcile.Services()
    memo = _memo(services, pool.LOOP_CONCURRENCY)
    reader = MeetingReader(fail="p0")
    services.snapshots = reader
    writer = RecordingWriter()
    with pytest.raises(RuntimeError, match="this step fails"):
        pool.Replanner(memo, writer).run_once(NOON + dt.timedelta(minutes=5))  # type: ignore[arg-type]
    assert sorted(name for _, name, _ in writer.patches) == [f"p{i}" for i in range(1, pool.LOOP_CONCURRENCY)]
