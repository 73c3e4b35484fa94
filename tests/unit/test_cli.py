"""``sunblend plan`` and ``sunblend crd`` as a user runs them: output, exit codes, clear errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sunblend import cli
from sunblend.api.spec import ActuationMode, NodeProviderName
from tests.unit import pools

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
AT = "2026-11-22T14:00:00Z"


def _write(tmp_path: Path, document: object) -> str:
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return str(path)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_plans_optimally(example, capsys):
    assert cli.main(["plan", str(example), "--at", AT, "-o", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "Optimal"
    assert result["thisHour"]["costDollars"] > 0
    assert 0 < result["horizon"]["savingsRatio"] < 1 and 0 <= result["thisHour"]["savingsRatio"] < 1
    assert result["allocations"] and result["hours"]


def test_the_table_and_the_chart(tmp_path, capsys):
    png = tmp_path / "plan.png"
    assert cli.main(["plan", str(EXAMPLES[0]), "--at", AT, "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "Optimal" in out and "savings vs all on-demand" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_yaml_output_parses(capsys):
    assert cli.main(["plan", str(EXAMPLES[0]), "--at", AT, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["status"] == "Optimal"


def _bad(**spec_fields):
    return pools.document(**spec_fields)


BAD_POOLS = {
    "missing field": (
        _bad(modelServer={"gpusPerReplica": 1}),
        "spec.modelServer.tokensPerSecondPerReplica: required field is missing",
    ),
    "wrong type": (
        _bad(modelServer={"gpusPerReplica": "two", "tokensPerSecondPerReplica": 100}),
        "spec.modelServer.gpusPerReplica: must be an integer, not a string ('two')",
    ),
    "negative price": (
        _bad(gpuClasses=[pools.gpu_class(onDemand=-1.0)]),
        "spec.gpuClasses[0].prices.onDemand: Input should be greater than or equal to 0",
    ),
    "unknown region in a commitment": (
        _bad(commitments=[{"gpuClass": "gpu", "region": "mars-1", "gpus": 8}]),
        "spec.commitments[0].region: every commitment must name a declared region; 'mars-1' is not one",
    ),
    "non-existent time zone": (
        _bad(regions=[pools.region("r1", tz="Asia/Atlantis")]),
        "spec.regions[0].timeZone: unknown IANA time zone 'Asia/Atlantis'",
    ),
    "peak below baseline": (
        _bad(regions=[pools.region("r1", base=100, peak=50)]),
        "spec.regions[0].demand.peakTokensPerSecond: peakTokensPerSecond must be at least baselineTokensPerSecond",
    ),
    "unknown field": (
        _bad(polcy={}),
        "spec.polcy: unknown field",
    ),
    "fraction above one": (
        _bad(policy={"maxSpotFraction": 1.5}),
        "spec.policy.maxSpotFraction: Input should be less than or equal to 1",
    ),
    "latency to an undeclared region": (
        _bad(policy={"routing": {"latencies": [{"from": "r1", "to": "r9", "milliseconds": 5}]}}),
        "spec.policy.routing.latencies[0].to: every latency entry must name declared regions; 'r9' is not one",
    ),
    "not YAML": ("regions: [unclosed", "(yaml): not valid YAML"),
    "infinite peak": (
        _bad(regions=[pools.region("r1", peak=math.inf)]),
        "spec.regions[0].demand.peakTokensPerSecond: must be a finite number, not infinity",
    ),
    "infinite budget": (
        _bad(policy={"budgetDollarsPerHour": math.inf}),
        "spec.policy.budgetDollarsPerHour: must be a finite number, not infinity",
    ),
    "infinite price": (
        _bad(gpuClasses=[pools.gpu_class(spot=math.inf)]),
        "spec.gpuClasses[0].prices.spot: must be a finite number, not infinity",
    ),
    "absurd peak": (
        _bad(regions=[pools.region("r1", peak=1e25)]),
        "spec.regions[0].demand.peakTokensPerSecond: Input should be less than or equal to 1000000000",
    ),
    "absurd throughput": (
        _bad(modelServer={"tokensPerSecondPerReplica": 1e308}),
        "spec.modelServer.tokensPerSecondPerReplica: Input should be less than or equal to 1000000000",
    ),
    "absurd price": (
        _bad(gpuClasses=[pools.gpu_class(onDemand=1e300)]),
        "spec.gpuClasses[0].prices.onDemand: Input should be less than or equal to 1000",
    ),
    "number in a string": (
        _bad(modelServer={"tokensPerSecondPerReplica": "2000"}),
        "spec.modelServer.tokensPerSecondPerReplica: must be a number, not a string ('2000')",
    ),
    "boolean as a number": (
        _bad(modelServer={"tokensPerSecondPerReplica": True}),
        "spec.modelServer.tokensPerSecondPerReplica: must be a number, not a boolean (true)",
    ),
    "deep nesting": ("[" * 100_000, "(yaml): document nests deeper than 64 levels"),
    "commitment without its price": (
        _bad(commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 8}]),
        "spec.commitments[0]: a held commitment needs its price: gpuClass 'gpu' has no committed price in region 'r1'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_POOLS), ids=list(BAD_POOLS))
def test_bad_pools_get_a_clear_error_naming_the_field_and_exit_code_2(case, tmp_path):
    document, message = BAD_POOLS[case]
    run = subprocess.run(
        [sys.executable, "-m", "sunblend.cli", "plan", _write(tmp_path, document), "--at", AT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": ""},
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def _sunblend(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sunblend.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": ""},
        timeout=300,
    )


def test_a_time_whose_horizon_leaves_the_calendar_exits_2_naming_at():
    run = _sunblend("plan", "examples/minimal.yaml", "--at", "9999-12-31T23:00Z")
    assert run.returncode == 2, run.stderr
    assert "error: --at: '9999-12-31T23:00Z' is out of range" in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_a_time_before_the_calendar_and_near_its_end_exit_2(capsys):
    assert cli.main(["plan", str(EXAMPLES[0]), "--at", "0001-01-01T00:00+05:00"]) == 2
    assert "--at: '0001-01-01T00:00+05:00' is out of range" in capsys.readouterr().err
    assert cli.main(["plan", str(EXAMPLES[0]), "--at", "9999-12-29T00:00Z", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "Optimal"


def test_a_region_entry_with_only_on_demand_keeps_the_class_spot_and_committed_prices(tmp_path, capsys):
    gpu_class = {
        **pools.gpu_class(onDemand=3.0, spot=1.0, committed=2.0),
        "regionPrices": [{"region": "r1", "onDemand": 4.0}],
    }
    document = pools.document(gpuClasses=[gpu_class], commitments=[{"gpuClass": "gpu", "region": "r1", "gpus": 1}])
    assert cli.main(["plan", _write(tmp_path, document), "--at", AT, "-o", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "Optimal"
    # 100 tok/s: one GPU, the committed one, at its amortised $2 (not free, not gone); no spot or on-demand
    assert result["thisHour"]["costDollars"] == 2.0


def test_simulate_refuses_the_same_bad_pools_and_out_of_range_traces(tmp_path, capsys):
    demand = tmp_path / "demand.csv"
    demand.write_text("timestamp,region,tokens_per_second\n2024-05-12T00:00:00Z,r1,10\n")
    pool = _write(tmp_path, pools.document(regions=[pools.region("r1", peak=math.inf)]))
    assert cli.main(["simulate", pool, "--demand", str(demand)]) == 2
    assert "spec.regions[0].demand.peakTokensPerSecond: must be a finite number" in capsys.readouterr().err
    pool = _write(tmp_path, pools.document())
    demand.write_text("timestamp,region,tokens_per_second\n9999-12-31T00:00:00Z,r1,10\n")
    assert cli.main(["simulate", pool, "--demand", str(demand)]) == 2
    assert "--demand: '9999-12-31T00:00:00+00:00' is out of range" in capsys.readouterr().err
    demand.write_text("timestamp,region,tokens_per_second\n0001-01-01T00:00:00+05:00,r1,10\n")
    assert cli.main(["simulate", pool, "--demand", str(demand)]) == 2
    assert "--demand: a timestamp is out of range" in capsys.readouterr().err


def test_a_missing_file_and_a_bad_time_exit_2(tmp_path, capsys):
    assert cli.main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert cli.main(["plan", str(EXAMPLES[0]), "--at", "tomorrow"]) == 2
    assert "--at: 'tomorrow' is not an ISO 8601 time" in capsys.readouterr().err
    assert cli.main(["plan", str(EXAMPLES[0]), "--png", str(tmp_path / "no" / "such" / "dir.png")]) == 2
    assert "--png: cannot write" in capsys.readouterr().err


def test_an_infeasible_pool_exits_1_with_the_reason(tmp_path, capsys):
    document = pools.document(policy={"budgetDollarsPerHour": 1})
    assert cli.main(["plan", _write(tmp_path, document), "--at", AT, "-o", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "Infeasible"
    assert result["message"] == (
        "budget 1 $/h is below the cheapest feasible plan, 6.00 $/h, at 14:00 UTC"
    )  # 120 tok/s with headroom: 2 GPUs


SIM_DATA = ROOT / "tests" / "data" / "sim"


def test_simulate_prints_every_figure_as_json(capsys):
    args = [
        "simulate",
        str(EXAMPLES[0]),
        "--demand",
        str(SIM_DATA / "demand.csv"),
        "--spot",
        str(SIM_DATA / "spot.csv"),
        "--prices",
        str(SIM_DATA / "prices.csv"),
        "--policy",
        "static-blend",
        "-o",
        "json",
    ]
    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"] == "static-blend" and result["steps"] == 3 * 24 * 60
    assert result["costDollars"] == pytest.approx(result["spotDollars"] + result["onDemandDollars"], abs=0.02)
    assert 0.9 < result["servedRatio"] <= 1


def test_simulate_rejects_bad_traces_with_file_line_and_exit_2(tmp_path, capsys):
    demand = tmp_path / "demand.csv"
    demand.write_text("timestamp,region,tokens_per_second\n2024-05-12T00:00:00Z,ap-south-1,ten\n")
    assert cli.main(["simulate", str(EXAMPLES[0]), "--demand", str(demand)]) == 2
    assert f"{demand}:2 tokens_per_second: 'ten' is not a number" in capsys.readouterr().err
    demand.write_text("timestamp,region,tokens_per_second\n2024-05-12T00:00:00Z,mars-1,10\n")
    assert cli.main(["simulate", str(EXAMPLES[0]), "--demand", str(demand)]) == 2
    assert "demand names regions the pool does not declare: mars-1" in capsys.readouterr().err
    assert cli.main(["simulate", str(EXAMPLES[0]), "--demand", str(SIM_DATA / "demand.csv"), "--step", "soon"]) == 2
    assert "--step: 'soon' is not a duration" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "examples/minimal.yaml", "-o", "json"],
        ["simulate", "examples/follow-the-sun-india-uk.yaml", "--demand", "tests/data/sim/demand.csv", "-o", "json"],
    ],
    ids=["plan", "simulate"],
)
def test_json_on_stdout_parses_with_the_standard_parser(args):
    """The solver's banner goes to stderr: a script piping stdout to a JSON parser gets only the document."""
    run = subprocess.run(
        [sys.executable, "-m", "sunblend.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": ""},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout)
    assert "Running HiGHS" in run.stderr


def _piped(*args: str) -> str:
    """Run ``sunblend`` with stdout to a pipe and a narrow $COLUMNS, as a script or ``| less`` would."""
    run = subprocess.run(
        [sys.executable, "-m", "sunblend.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "", "COLUMNS": "40"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_a_piped_plan_table_keeps_every_figure_whole(capsys):
    example = "examples/follow-the-sun-india-uk.yaml"
    assert cli.main(["plan", example, "--at", AT, "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    out = _piped("plan", example, "--at", AT, "-o", "table")
    assert "…" not in out
    assert f"${plan['thisHour']['costDollars']:,.2f}" in out and f"${plan['horizon']['costDollars']:,.2f}" in out
    assert "savings vs all on-demand" in out and "Running HiGHS" not in out


SIM_ARGS = ["examples/follow-the-sun-india-uk.yaml", "--demand", "tests/data/sim/demand.csv", "--policy", "on-demand"]


def test_a_piped_simulation_table_keeps_every_figure_whole(capsys):
    assert cli.main(["simulate", *SIM_ARGS, "-o", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    out = _piped("simulate", *SIM_ARGS, "-o", "table")
    assert "…" not in out
    assert "on-demand $" in out and "node changes" in out and "preempted" in out
    assert f"{result['costDollars']:,.0f}" in out and f"{result['servedRatio']:.4%}" in out


def test_a_skipped_policy_gives_its_whole_reason_below_the_table(capsys):
    args = ["simulate", "examples/follow-the-sun-india-uk.yaml", "--demand", str(SIM_DATA / "demand.csv")]
    assert cli.main([*args, "--policy", "reserved-peak"]) == 0
    out = capsys.readouterr().out
    assert "reserved-peak: skipped: reserved-peak needs a committed price" in out and "…" not in out


def test_yaml_on_stdout_parses_for_plan_and_simulate():
    plan = yaml.safe_load(_piped("plan", "examples/minimal.yaml", "--at", AT, "-o", "yaml"))
    assert plan["status"] == "Optimal"
    simulation = yaml.safe_load(_piped("simulate", *SIM_ARGS, "-o", "yaml"))
    assert simulation["policy"] == "on-demand" and simulation["steps"] > 0


def test_help_lists_every_choice_a_user_must_know(capsys):
    from sunblend.sim import policies

    with pytest.raises(SystemExit):
        cli.main(["simulate", "--help"])
    simulate_help = capsys.readouterr().out
    assert "{all," + ",".join(policies.POLICIES) + "}" in simulate_help
    assert "{table,json,yaml}" in simulate_help
    with pytest.raises(SystemExit):
        cli.main(["plan", "--help"])
    assert "{table,json,yaml}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    run_help = capsys.readouterr().out
    for choices in (ActuationMode, NodeProviderName):
        assert "{" + ",".join(choice.value for choice in choices) + "}" in run_help


def test_an_unknown_policy_exits_2_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", *SIM_ARGS[:3], "--policy", "cheapest"])
    assert exit_.value.code == 2
    assert "invalid choice: 'cheapest'" in capsys.readouterr().err
