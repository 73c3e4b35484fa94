"""``sunblend advise commitments --prometheus-url`` against a real Prometheus holding two days of history.

Two days of a vLLM token counter (``vllm:generation_tokens_total``, labelled by region) are
written as OpenMetrics and turned into TSDB blocks with ``promtool tsdb create-blocks-from
openmetrics``, the way history is backfilled into Prometheus; then Debian's Prometheus serves
them on 127.0.0.1. The counter grows at 300 tokens/s, and at 500 from 12:00 to 18:00 UTC, so the
advice is the one worked out by hand in tests/unit/core/test_commitments.py: commit the floor's
3 GPUs. Everything started here is stopped here, by its PID.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from sunblend import cli
from tests.e2e.test_prometheus import PROMETHEUS, Prometheus
from tests.unit import pools

pytestmark = pytest.mark.e2e

PROMTOOL = Path(os.environ.get("SUNBLEND_PROMTOOL", "/usr/bin/promtool"))
DAYS = 2


def tokens_per_second(moment: dt.datetime) -> float:
    return 500.0 if 12 <= moment.hour < 18 else 300.0


def openmetrics(start: dt.datetime, days: int) -> str:
    """A counter sampled each minute over ``days`` from ``start``, growing at ``tokens_per_second``."""
    lines = ["# TYPE vllm:generation_tokens counter"]
    total = 0.0
    for minute in range(days * 24 * 60 + 1):
        moment = start + dt.timedelta(minutes=minute)
        lines.append(f'vllm:generation_tokens_total{{region="r1"}} {total:.1f} {moment.timestamp():.0f}')
        total += tokens_per_second(moment) * 60
    return "\n".join([*lines, "# EOF", ""])


@contextmanager
def backfilled_prometheus(folder: Path, start: dt.datetime, days: int) -> Iterator[Prometheus]:
    """A real Prometheus whose TSDB holds ``days`` of the counter from ``start`` (promtool backfill)."""
    source = folder / "history.om"
    source.write_text(openmetrics(start, days))
    subprocess.run(
        [str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(source), str(folder / "tsdb")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = Prometheus(folder, {})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path: Path):
    if not PROMETHEUS.exists() or not PROMTOOL.exists():
        pytest.skip("Debian's prometheus package is not installed (make prometheus)")
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    start = end - dt.timedelta(days=DAYS)
    with backfilled_prometheus(tmp_path, start, DAYS) as server:
        yield server, start, end


def test_advice_from_backfilled_prometheus_history(tmp_path, capsys, prometheus):
    server, _, end = prometheus
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(pools.document(gpuClasses=[pools.gpu_class(committed=2.0)])))
    code = cli.main(
        [
            "advise",
            "commitments",
            str(pool),
            "--prometheus-url",
            server.url,
            "--history",
            f"{DAYS}d",
            "--until",
            end.isoformat(),
            "-o",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    advice = json.loads(captured.out)
    assert advice["historyHours"] == DAYS * 24 + 1  # the points from start to end, both included
    (term,) = advice["terms"]
    (row,) = term["commitments"]
    assert (row["gpuClass"], row["region"], row["gpus"]) == ("gpu", "r1", 3)
    assert row["utilizationRatio"] == pytest.approx(1.0)
    assert term["savingDollars"] > 0


def test_a_region_prometheus_has_nothing_for(tmp_path, capsys, prometheus):
    server, _, end = prometheus
    document = pools.document(
        gpuClasses=[pools.gpu_class(committed=2.0)], regions=[pools.region("r1"), pools.region("r2")]
    )
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(document))
    argv = ["advise", "commitments", str(pool), "--prometheus-url", server.url, "--history", "1d"]
    assert cli.main([*argv, "--until", end.isoformat()]) == 2
    err = capsys.readouterr().err
    assert "has no demand samples for region(s) r2" in err and len(err.strip().splitlines()) == 1
