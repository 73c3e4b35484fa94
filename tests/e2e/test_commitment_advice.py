"""The operator, with Prometheus, writes ``status.commitmentAdvice``: the advice the CLI gives.

Two days of a vLLM token counter labelled by region are backfilled into a real Prometheus (as in
test_advise_prometheus.py: 300 tokens/s, and 500 from 12:00 to 18:00 UTC). The session's
operator is swapped for one of this test's own, run with ``--prometheus-url`` and
``--commitment-advice-hours``, watching only this test's namespace. It must write the advice
into the pool's status, as ``kubectl get`` shows it, post ``CommitmentAdvised``, and agree with
``sunblend advise commitments`` over the same history (the window and end it reports). Everything
started here is stopped here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sunblend import cli
from tests.e2e.conftest import Operator, swapped_operator, wait_for
from tests.e2e.test_advise_prometheus import DAYS, PROMTOOL, backfilled_prometheus
from tests.e2e.test_chart import CHART, _helm, helm  # noqa: F401 (helm: the chart tests' fixture)
from tests.e2e.test_prometheus import PROMETHEUS, Prometheus
from tests.unit import pools

pytestmark = pytest.mark.e2e

POOL = "chat"


@pytest.fixture
def backfilled(tmp_path: Path) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists() or not PROMTOOL.exists():
        pytest.skip("Debian's prometheus package is not installed (make prometheus)")
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    with backfilled_prometheus(tmp_path, end - dt.timedelta(days=DAYS), DAYS) as server:
        yield server


@pytest.fixture
def advising_operator(operator: Operator, namespace: str, backfilled: Prometheus, tmp_path: Path) -> Iterator[Operator]:
    """The session's operator stopped; this test's, with Prometheus and commitment advice, instead."""
    args = ["--replan-seconds", "2", "--prometheus-url", backfilled.url, "--commitment-advice-hours", "24"]
    with swapped_operator(operator, tmp_path / "operator.log", "-n", namespace, *args) as own:
        yield own


def _pool(held_gpus: int) -> dict:
    document = pools.document(
        gpuClasses=[pools.gpu_class(committed=2.0)],
        commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": held_gpus}],
    )
    document["metadata"] = {"name": POOL}
    return document


def test_the_operator_shows_the_clis_commitment_advice_in_status(
    advising_operator, backfilled, namespace, tmp_path, capsys
):
    cluster = advising_operator.cluster
    cluster.apply(_pool(held_gpus=1), namespace)

    def advice() -> dict:
        status = cluster.get("inferencepools.sunblend.dev", POOL, "-n", namespace).get("status", {})
        return status.get("commitmentAdvice") or {}

    shown = wait_for(advice, 120, interval=2, what=f"status.commitmentAdvice; log: {advising_operator.log}")
    assert "error" not in shown, shown
    (row,) = shown["commitments"]
    assert (row["gpuClass"], row["region"], row["advisedGpus"], row["heldGpus"], row["buyGpus"]) == (
        "gpu",
        "r1",
        3,
        1,
        2,
    )
    assert shown["term"] == "pool" and shown["historyWindow"] == "14d"
    assert shown["observedGeneration"] == 1

    # The CLI over the same history: the window and the end the operator reports.
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(_pool(held_gpus=1)))
    argv = ["advise", "commitments", str(pool_file), "--prometheus-url", backfilled.url]
    argv += ["--history", shown["historyWindow"], "--until", shown["historyEnd"], "-o", "json"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    (term,) = printed["terms"]
    (cli_row,) = term["commitments"]
    assert cli_row["gpus"] == row["advisedGpus"]
    assert cli_row["breakEvenUtilizationRatio"] == row["breakEvenRatio"]
    assert cli_row["utilizationRatio"] == row["utilizationRatio"]
    assert printed["historyHours"] == shown["historyHours"] == DAYS * 24 + 1
    assert dt.datetime.fromisoformat(printed["historyStart"]) == dt.datetime.fromisoformat(shown["historyStart"])
    assert term["savingPerMonthDollars"] == shown["savingDollarsPerMonth"] > 0
    per_month = 730 / printed["historyHours"]
    fall = term["demandFall"]["costDollars"] - term["demandFall"]["costWithNoneDollars"]
    assert shown["demandFallExtraDollarsPerMonth"] == pytest.approx(fall * per_month, rel=1e-3)
    # Buying 2 more than the 1 held saves two thirds of what holding 3 saves against none.
    assert shown["savingOverHeldDollarsPerMonth"] == pytest.approx(shown["savingDollarsPerMonth"] * 2 / 3, abs=0.02)

    events = cluster.get("events", "-n", namespace, "--field-selector", "reason=CommitmentAdvised")["items"]
    (event,) = events
    assert event["involvedObject"]["name"] == POOL
    assert event["message"].startswith("commit now to 2 gpu GPUs in r1 (term pool)")

    # Changing the spec renews the advice at once: holding 3 already, there is nothing to buy.
    cluster.apply(_pool(held_gpus=3), namespace)
    renewed = wait_for(
        lambda: (a := advice()).get("observedGeneration") == 2 and a, 120, interval=2, what="advice for generation 2"
    )
    (row,) = renewed["commitments"]
    assert (row["advisedGpus"], row["heldGpus"], row["buyGpus"]) == (3, 3, 0)
    assert renewed["savingOverHeldDollarsPerMonth"] == 0


def test_the_chart_passes_the_advice_interval_with_prometheus(helm):  # noqa: F811
    def args(*values: str) -> list[str]:
        run = _helm(helm, "template", "t", str(CHART), "--set", "prometheus.url=http://prometheus:9090", *values)
        assert run.returncode == 0, run.stderr
        deployment = next(d for d in yaml.safe_load_all(run.stdout) if d and d["kind"] == "Deployment")
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--commitment-advice-hours=24" in args()
    assert "--commitment-advice-hours=0" in args("--set", "prometheus.commitmentAdviceHours=0")
    refused = _helm(helm, "template", "t", str(CHART), "--set", "prometheus.commitmentAdviceHours=-1")
    assert refused.returncode != 0 and "commitmentAdviceHours" in refused.stderr
