"""Bad trace files get a clear error naming the file, the line and the column: exit 2, never a traceback."""

from __future__ import annotations

import pytest

from sunblend import cli

POOL = "examples/follow-the-sun-india-uk.yaml"
HEADER = "timestamp,region,tokens_per_second\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HEADER + "2026-01-01T00:00:00Z,ap-south-1\n", "demand.csv:2 tokens_per_second: missing"),
        (HEADER + "2026-01-01T00:00:00Z,,5\n", "demand.csv:2 region: missing"),
        (HEADER + "2026-01-01T00:00:00Z,ap-south-1,inf\n", "demand.csv:2 tokens_per_second: 'inf' must be a finite"),
        (HEADER + "2026-01-01T00:00:00Z,ap-south-1,nan\n", "demand.csv:2 tokens_per_second: 'nan' must be a finite"),
        (HEADER + "yesterday,ap-south-1,5\n", "demand.csv:2 timestamp: timestamp 'yesterday' is not ISO 8601"),
    ],
)
def test_a_bad_demand_row_is_named_by_file_line_and_column(tmp_path, capsys, content, message):
    demand = tmp_path / "demand.csv"
    demand.write_text(content)
    assert cli.main(["simulate", POOL, "--demand", str(demand)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_missing_trace_file_is_named(tmp_path, capsys):
    assert cli.main(["simulate", POOL, "--demand", str(tmp_path / "absent.csv")]) == 2
    assert "absent.csv: No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("step", ["inf", "nan", "-1m", "1e300h"])
def test_an_absurd_step_is_a_usage_error(tmp_path, capsys, step):
    assert cli.main(["simulate", POOL, "--demand", "tests/data/sim/demand.csv", f"--step={step}"]) == 2
    assert "--step" in capsys.readouterr().err
