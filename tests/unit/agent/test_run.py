"""The agent's entry point without a server: the sampling loop, its options, the node name."""

from __future__ import annotations

import threading

import pytest

from sunblend.agent import run


class CountingAgent:
    """Stands in for the exporter: counts samples and stops the loop after ``limit``."""

    def __init__(self, stop: threading.Event, limit: int) -> None:
        self.stop = stop
        self.limit = limit
        self.samples = 0

    def sample(self) -> None:
        self.samples += 1
        if self.samples == self.limit:
            self.stop.set()


def test_the_loop_samples_until_stopped():
    stop = threading.Event()
    agent = CountingAgent(stop, limit=3)
    worker = threading.Thread(target=run.sample_forever, args=(agent, 0.01, stop))
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert agent.samples == 3


def test_a_stopped_loop_does_not_sample():
    stop = threading.Event()
    stop.set()
    agent = CountingAgent(stop, limit=100)
    run.sample_forever(agent, 60.0, stop)
    assert agent.samples == 0


@pytest.mark.parametrize(
    "argv",
    [["--fake-utilization", "1.5"], ["--interval", "0"], ["--fake-profile", "tpu"], ["--port", "http"]],
    ids=["utilisation-above-1", "zero-interval", "unknown-profile", "port-not-a-number"],
)
def test_bad_options_exit_with_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--fake", *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_node_name_comes_from_the_option_then_node_name_then_the_hostname(monkeypatch):
    monkeypatch.setenv("NODE_NAME", "gpu-node-7")
    assert run.node_name("explicit") == "explicit"
    assert run.node_name() == "gpu-node-7"
    monkeypatch.delenv("NODE_NAME")
    monkeypatch.setattr(run.socket, "gethostname", lambda: "host-3")
    assert run.node_name() == "host-3"
