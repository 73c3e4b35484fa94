"""``sunblend advise commitments`` as a user runs it, and ``simulate`` refusing SizeCommitments.

The history is a demand CSV whose optimum is known by hand (see tests/unit/core/test_commitments.py):
a floor of 3 nodes every hour and 5 nodes six hours a day, on-demand $3 and committed $2 per
GPU-hour: commit 3. The Prometheus path runs against a small Prometheus HTTP API served here on
127.0.0.1 (range queries only), so that the client, the reply's parsing and the errors are real.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from sunblend import cli
from tests.unit import pools

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def demand_rows(days: int = 2) -> list[str]:
    rows = []
    for h in range(24 * days):
        tokens = 500 if 12 <= h % 24 < 18 else 300
        for minute in (0, 30):
            moment = START + dt.timedelta(hours=h, minutes=minute)
            rows.append(f"{moment:%Y-%m-%dT%H:%M:%SZ},r1,{tokens}")
    return rows


def write_pool(tmp_path: Path, **planning: object) -> str:
    document = pools.document(
        gpuClasses=[pools.gpu_class(committed=2.0)], **({"planning": planning} if planning else {})
    )
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def write_demand(tmp_path: Path, rows: list[str] | None = None) -> str:
    path = tmp_path / "demand.csv"
    path.write_text("\n".join(["timestamp,region,tokens_per_second", *(demand_rows() if rows is None else rows)]))
    return str(path)


def test_json_advice_loads_and_holds_the_known_optimum(tmp_path, capsys):
    pool, demand = write_pool(tmp_path), write_demand(tmp_path)
    code = cli.main(["advise", "commitments", pool, "--demand", demand, "--term", "deep=0.2x", "-o", "json"])
    out = capsys.readouterr().out
    assert code == 0
    advice = json.loads(out)
    terms = {t["term"]: t for t in advice["terms"]}
    assert advice["historyHours"] == 48 and advice["regions"] == ["r1"]
    (row,) = terms["pool"]["commitments"]
    assert (row["gpuClass"], row["region"], row["gpus"]) == ("gpu", "r1", 3)
    assert row["breakEvenUtilizationRatio"] == pytest.approx(2 / 3, abs=1e-4)
    assert terms["pool"]["savingDollars"] == pytest.approx(144)
    assert terms["pool"]["demandFall"]["extraDollars"] == pytest.approx(-144)
    # 0.2x of on-demand = $0.60: even the peak's two nodes pay for themselves.
    assert [c["gpus"] for c in terms["deep"]["commitments"]] == [5]


def test_yaml_and_table_outputs(tmp_path, capsys):
    pool, demand = write_pool(tmp_path), write_demand(tmp_path)
    assert cli.main(["advise", "commitments", pool, "--demand", demand, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["terms"][0]["committedGpus"] == 3
    assert cli.main(["advise", "commitments", pool, "--demand", demand]) == 0
    table = capsys.readouterr().out
    assert "Commit to" in table and "66.7%" in table


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("2026-11-02T00:00:00Z,r1,lots", ":3 tokens_per_second: 'lots' is not a number"),
        ("2026-11-02T00:00:00Z,r1", ":3: 2 column(s), the header has 3"),
        ("2026-11-02T00:00:00Z,r1,inf", ":3 tokens_per_second: 'inf' is not a finite number"),
        ("yesterday,r1,300", ":3 timestamp: timestamp 'yesterday' is not ISO 8601"),
        ("2026-11-02T00:00:00Z,r9,300", "demand names regions the pool does not declare: r9"),
    ],
)
def test_a_bad_demand_csv_exits_2_naming_file_and_line(tmp_path, capsys, row, expected):
    pool = write_pool(tmp_path)
    demand = write_demand(tmp_path, ["2026-11-02T00:00:00Z,r1,300", row])
    assert cli.main(["advise", "commitments", pool, "--demand", demand, "-o", "json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{demand}" in captured.err and expected in captured.err
    assert "Traceback" not in captured.err


def test_a_bad_term_exits_2_naming_file_and_line(tmp_path, capsys):
    pool, demand = write_pool(tmp_path), write_demand(tmp_path)
    terms = tmp_path / "terms.csv"
    terms.write_text("term,gpu_class,region,usd_per_gpu_hour\n1y,gpu,r1,2.5\n3y,gpu,r1,cheap\n")
    assert cli.main(["advise", "commitments", pool, "--demand", demand, "--terms", str(terms)]) == 2
    assert f"{terms}:3 usd_per_gpu_hour: 'cheap' is not a number" in capsys.readouterr().err
    terms.write_text("term,gpu_class,region,usd_per_gpu_hour\n1y,a100,r1,2.5\n")
    assert cli.main(["advise", "commitments", pool, "--demand", demand, "--terms", str(terms)]) == 2
    assert f"{terms}:2: the pool does not offer GPU class 'a100'" in capsys.readouterr().err
    assert cli.main(["advise", "commitments", pool, "--demand", demand, "--term", "1y"]) == 2
    assert "expected NAME=PRICE" in capsys.readouterr().err
    assert cli.main(["advise", "commitments", pool, "--demand", demand, "--term", "1y=2x"]) == 2
    assert "above 1x never pays" in capsys.readouterr().err


def test_terms_from_a_csv_are_advised_each(tmp_path, capsys):
    pool, demand = write_pool(tmp_path), write_demand(tmp_path)
    terms = tmp_path / "terms.csv"
    terms.write_text("term,gpu_class,region,usd_per_gpu_hour\n1y,gpu,r1,2.5\n3y,gpu,r1,0.6\n")
    code = cli.main(
        ["advise", "commitments", pool, "--demand", demand, "--terms", str(terms), "--no-pool-term", "-o", "json"]
    )
    assert code == 0
    advice = json.loads(capsys.readouterr().out)
    # 1y at $2.5 pays only above 5/6 of hours: the floor's 3; 3y at $0.6 pays for all 5.
    assert {t["term"]: t["committedGpus"] for t in advice["terms"]} == {"1y": 3, "3y": 5}


def test_history_source_is_one_of_csv_or_prometheus(tmp_path, capsys):
    pool = write_pool(tmp_path)
    assert cli.main(["advise", "commitments", pool]) == 2
    assert "--demand FILE or as --prometheus-url" in capsys.readouterr().err
    assert cli.main(["advise", "commitments", pool, "--demand", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: No such file or directory" in capsys.readouterr().err


def test_simulate_refuses_size_commitments(tmp_path, capsys):
    pool = write_pool(tmp_path, mode="SizeCommitments")
    demand = write_demand(tmp_path)
    assert cli.main(["simulate", pool, "--demand", demand, "--policy", "sunblend"]) == 2
    err = capsys.readouterr().err
    assert "spec.planning.mode" in err and "sunblend advise commitments" in err
    assert "Traceback" not in err


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers range queries with one series per region (r1: the known history), or with nothing."""

    empty = False

    def do_GET(self) -> None:
        self._answer(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self._answer(urllib.parse.parse_qs(body))

    def _answer(self, params: dict[str, list[str]]) -> None:
        start, end = float(params["start"][0]), float(params["end"][0])
        step = float(params["step"][0])
        values = []
        t = start
        while t <= end:
            hour = dt.datetime.fromtimestamp(t, dt.UTC).hour
            values.append([t, "500" if 12 <= hour < 18 else "300"])
            t += step
        result = [] if self.empty else [{"metric": {"region": "r1"}, "values": values}]
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[tuple[str, type[FakePrometheus]]]:
    handler = type("Handler", (FakePrometheus,), {"empty": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_advice_from_prometheus(tmp_path, capsys, prometheus):
    url, _ = prometheus
    pool = write_pool(tmp_path)
    until = (START + dt.timedelta(days=2)).isoformat()
    code = cli.main(
        ["advise", "commitments", pool, "--prometheus-url", url, "--history", "2d", "--until", until, "-o", "json"]
    )
    out = capsys.readouterr().out
    assert code == 0
    (term,) = json.loads(out)["terms"]
    assert term["committedGpus"] == 3


def test_prometheus_that_returns_nothing_or_cannot_be_reached(tmp_path, capsys, prometheus):
    url, handler = prometheus
    handler.empty = True
    pool = write_pool(tmp_path)
    assert cli.main(["advise", "commitments", pool, "--prometheus-url", url, "--history", "1d"]) == 2
    err = capsys.readouterr().err
    assert "has no demand samples for region(s) r1" in err and len(err.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert cli.main(["advise", "commitments", pool, "--prometheus-url", closed, "--prometheus-timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to Prometheus" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--demand-fall", "1.5"], "--demand-fall: 1.5 is not a fraction"),
        (["--demand-fall", "nan"], "--demand-fall: nan is not a fraction"),
        (["--time-limit", "0"], "--time-limit: 0.0 is not a number of seconds"),
        (["--tokens-per-request", "-3"], "--tokens-per-request: -3.0 is not a positive number"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, expected):
    pool, demand = write_pool(tmp_path), write_demand(tmp_path)
    assert cli.main(["advise", "commitments", pool, "--demand", demand, *flags]) == 2
    assert expected in capsys.readouterr().err


def test_bad_prometheus_flags_exit_2_naming_the_flag(tmp_path, capsys, prometheus):
    url, _ = prometheus
    pool = write_pool(tmp_path)
    for flags, expected in (
        (["--until", "soon"], "--until: 'soon' is not an ISO 8601 time"),
        (["--history=-2d"], "--history: '-2d' is not a positive duration"),
        (["--step", "5x"], "--step: '5x' is not a positive duration"),
        (["--history", "400d"], "more than 11000 points"),
    ):
        assert cli.main(["advise", "commitments", pool, "--prometheus-url", url, *flags]) == 2
        assert expected in capsys.readouterr().err


def test_a_term_from_its_own_csv_and_a_term_that_never_pays(tmp_path, capsys):
    pool, demand = write_pool(tmp_path), write_demand(tmp_path)
    prices = tmp_path / "3y.csv"
    prices.write_text("gpu_class,region,usd_per_gpu_hour\ngpu,r1,0.6\n")
    argv = ["advise", "commitments", pool, "--demand", demand, "--no-pool-term"]
    assert cli.main([*argv, "--term", f"3y={prices}", "--term", "dear=3.5", "-o", "json"]) == 0
    terms = {t["term"]: t for t in json.loads(capsys.readouterr().out)["terms"]}
    assert terms["3y"]["committedGpus"] == 5
    assert terms["dear"]["commitments"] == [] and terms["dear"]["savingDollars"] == 0
    assert cli.main([*argv, "--term", "dear=3.5"]) == 0
    assert "nothing pays" in capsys.readouterr().out
    prices.write_text("gpu_class,region,usd_per_gpu_hour\ngpu,r1,0.6\ngpu,r1,0.7\n")
    assert cli.main([*argv, "--term", f"3y={prices}"]) == 2
    assert f"{prices}:3: term 3y prices gpu in r1 twice" in capsys.readouterr().err
