"""``sunblend advise consolidation`` as a user runs it: JSON on stdout, clear errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sunblend import cli
from tests.unit import pools

AT = "2026-11-23T12:00:00Z"


def _pool(name: str, tokens_per_second: float, model: str = "meta-llama/Llama-3.1-8B-Instruct") -> dict[str, Any]:
    document = pools.document(
        modelServer={"model": model, "gpusPerReplica": 1, "tokensPerSecondPerReplica": 100},
        regions=[pools.region("r1", base=tokens_per_second)],
        gpuClasses=[pools.gpu_class("h100", gpus_per_node=8, onDemand=2.0)],
    )
    document["metadata"] = {"name": name, "namespace": "team"}
    return document


def _write(path: Path, *documents: Any) -> str:
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def test_json_from_a_multi_document_file_and_a_second_file_parses(tmp_path, capsys):
    both = _write(tmp_path / "pools.yaml", _pool("chat", 500.0), _pool("other", 100.0, model="Qwen/Qwen2.5-7B"))
    more = _write(tmp_path / "search.yaml", _pool("search", 200.0))
    assert cli.main(["advise", "consolidation", both, more, "--at", AT, "-o", "json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert group["pools"] == ["team/chat", "team/search"]
    assert group["status"] == "Advised"
    assert group["savingDollarsPerHour"] == pytest.approx(16.0)  # one 8-GPU node at $2/GPU-hour
    assert group["savingDollars"] == pytest.approx(16.0 * 24)


def test_a_kubectl_list_is_read_and_the_table_names_the_pools(tmp_path, capsys):
    listed = _write(
        tmp_path / "list.yaml", {"apiVersion": "v1", "kind": "List", "items": [_pool("a", 500.0), _pool("b", 200.0)]}
    )
    assert cli.main(["advise", "consolidation", listed, "--at", AT]) == 0
    out = capsys.readouterr().out
    assert "team/a, team/b" in out and "saves $16.00/h" in out


def test_stdout_carries_only_the_document_in_a_fresh_process(tmp_path):
    path = _write(tmp_path / "pools.yaml", _pool("chat", 500.0), _pool("search", 200.0))
    run = subprocess.run(
        [sys.executable, "-m", "sunblend.cli", "advise", "consolidation", path, "--at", AT, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["groups"][0]["status"] == "Advised"


def test_a_bad_file_exits_2_naming_the_file_document_and_field(tmp_path, capsys):
    bad = _pool("bad", 100.0)
    bad["spec"]["modelServer"]["model"] = "not a model name!"
    path = _write(tmp_path / "pools.yaml", _pool("chat", 500.0), bad)
    assert cli.main(["advise", "consolidation", path, "--at", AT, "-o", "json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pools.yaml (document 2, line" in captured.err and "spec.modelServer.model" in captured.err


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["missing.yaml"], "missing.yaml"),
        ([], "--cluster"),
        (["{dup}", "{dup}"], "given twice"),
        (["{dup}", "--at", "tomorrow"], "--at"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, arguments, expected):
    dup = _write(tmp_path / "dup.yaml", _pool("chat", 500.0))
    argv = [a.replace("{dup}", dup) for a in arguments]
    assert cli.main(["advise", "consolidation", *argv]) == 2
    assert expected in capsys.readouterr().err


def test_invalid_yaml_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: [unclosed\n")
    assert cli.main(["advise", "consolidation", str(path)]) == 2
    assert "broken.yaml (document 1, line 1)" in capsys.readouterr().err


def test_document_markers_split_the_stream():
    text = "a: 1\n---\nb: 2\n--- {c: 3}\n...\n"
    assert cli._yaml_documents(text) == [(1, "a: 1\n"), (2, "b: 2\n"), (4, "{c: 3}\n")]
