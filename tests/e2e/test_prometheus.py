"""observe/prometheus.py against a real Prometheus server that scrapes a real agent process.

Prometheus is Debian's package binary (``make prometheus`` installs it), started here on
127.0.0.1 with a generated config, a temporary TSDB folder and a 1 s scrape interval. It scrapes:

- two ``python -m sunblend.agent --fake`` processes, one per GPU node (Mumbai and London);
- three vLLM-style model-server endpoints served from this test, whose token counters grow at a
  known rate; Prometheus adds the ``node`` label, as relabelling does in a cluster. Two of them
  answer in OpenMetrics, where the Python client escapes ``vllm:`` to ``vllm_``, and one only in
  the classic text format, which keeps the colon: the default queries must read both;
- a DCGM-exporter-style endpoint: MIG devices of London's GPU 0 (which the agent cannot give a
  utilisation for), a Frankfurt node only DCGM covers (newer ``hostname`` label), and a value
  for a Mumbai GPU that the agent's must win over.

Everything started here is stopped here, by PID or by its server object.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import prometheus_client as prom
import pytest
import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sunblend.observe import prometheus

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = Path(os.environ.get("SUNBLEND_PROMETHEUS", "/usr/bin/prometheus"))

NODE_REGIONS = {"gpu-mumbai-1": "ap-south-1", "gpu-london-1": "eu-west-2", "gpu-frankfurt-1": "eu-central-1"}
TOKENS_PER_SECOND = {"gpu-mumbai-1": 1200.0, "gpu-london-1": 300.0, "cpu-lab-1": 999.0}  # cpu-lab-1 is unmapped
WAITING = {"gpu-mumbai-1": 4.0, "gpu-london-1": 0.0, "cpu-lab-1": 50.0}
KV_CACHE = {"gpu-mumbai-1": 0.62, "gpu-london-1": 0.2, "cpu-lab-1": 1.0}

# rate() divides by its whole window, so it reads low until a series is one window old. The
# default window (2m) would make this file wait two minutes; the same query over 5 s does not.
DEFAULT_DEMAND = prometheus.DemandQueries()
DEMAND = prometheus.DemandQueries(
    tokens_per_second=DEFAULT_DEMAND.tokens_per_second.replace("[2m]", "[5s]"),
    min_history_window=dt.timedelta(seconds=5),
)
assert DEMAND.tokens_per_second != DEFAULT_DEMAND.tokens_per_second, "the default tokens/s query has changed"


def demand_settled(demand: dict[str, prometheus.RegionDemand]) -> bool:
    """Both regions' demand is within 2% of what their model servers generate."""
    return set(demand) == {"ap-south-1", "eu-west-2"} and all(
        abs(demand[region].tokens_per_second - rate) <= 0.02 * rate
        for region, rate in (
            ("ap-south-1", TOKENS_PER_SECOND["gpu-mumbai-1"]),
            ("eu-west-2", TOKENS_PER_SECOND["gpu-london-1"]),
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as error:  # keep polling; report the last failure
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


class ModelServer(Collector):
    """vLLM's metrics for one model-server pod: a token counter growing at a fixed rate."""

    def __init__(self, tokens_per_second: float, waiting: float, kv_cache: float) -> None:
        self.started = time.time()
        self.tokens_per_second = tokens_per_second
        self.waiting = waiting
        self.kv_cache = kv_cache

    def collect(self) -> Iterable[Metric]:
        tokens = CounterMetricFamily("vllm:generation_tokens", "Generation tokens processed.", labels=["model_name"])
        tokens.add_metric(["llama-3-70b"], self.tokens_per_second * (time.time() - self.started))
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting.", labels=["model_name"])
        waiting.add_metric(["llama-3-70b"], self.waiting)
        kv_cache = GaugeMetricFamily("vllm:gpu_cache_usage_perc", "KV-cache usage, 1 is 100%.", labels=["model_name"])
        kv_cache.add_metric(["llama-3-70b"], self.kv_cache)
        yield from (tokens, waiting, kv_cache)


class DcgmExporter(Collector):
    """The series a DCGM exporter would expose for the scenario in the module docstring."""

    def collect(self) -> Iterable[Metric]:
        active = GaugeMetricFamily(
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "Ratio of time the graphics engine is active.",
            labels=["gpu", "GPU_I_ID", "Hostname"],
        )
        active.add_metric(["0", "1", "gpu-london-1"], 0.6)
        active.add_metric(["0", "2", "gpu-london-1"], 0.4)
        util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=["gpu", "hostname"])
        util.add_metric(["0", "gpu-frankfurt-1"], 70.0)
        util.add_metric(["0", "gpu-mumbai-1"], 10.0)  # the agent covers this GPU: its 0.8 must win
        util.add_metric(["0", "gpu-unmapped"], 100.0)
        yield from (active, util)


class Prometheus:
    """A Prometheus server process on 127.0.0.1 that can be stopped and started again."""

    def __init__(self, folder: Path, targets: dict[str, list[dict]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.config = folder / "prometheus.yml"
        self.log = folder / "prometheus.log"
        jobs = [
            {
                "job_name": job,
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "honor_labels": True,
                "static_configs": configs,
            }
            for job, configs in targets.items()
        ]
        self.config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(PROMETHEUS),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self._alive() and http_ok(f"{self.url}/-/ready"), 30, "Prometheus to be ready")

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited: {self.log.read_text()[-2000:]}")
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def classic_text_server(registry: prom.CollectorRegistry) -> ThreadingHTTPServer:
    """Serves ``registry`` in the classic text format only, whatever the scraper asks for."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = prom.generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", prom.CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return http


@pytest.fixture(scope="module")
def model_servers() -> Iterator[dict[str, list[dict]]]:
    """The vLLM and DCGM endpoints, as Prometheus static_configs by job."""
    servers: list[ThreadingHTTPServer] = []
    vllm: list[dict] = []
    try:
        for node, rate in TOKENS_PER_SECOND.items():
            registry = prom.CollectorRegistry()
            registry.register(ModelServer(rate, WAITING[node], KV_CACHE[node]))
            if node == "gpu-london-1":
                servers.append(classic_text_server(registry))
                port = servers[-1].server_port
            else:
                port = free_port()
                servers.append(prom.start_http_server(port, addr="127.0.0.1", registry=registry)[0])
            vllm.append({"targets": [f"127.0.0.1:{port}"], "labels": {"node": node}})
        registry = prom.CollectorRegistry()
        registry.register(DcgmExporter())
        port = free_port()
        servers.append(prom.start_http_server(port, addr="127.0.0.1", registry=registry)[0])
        yield {"vllm": vllm, "dcgm": [{"targets": [f"127.0.0.1:{port}"]}]}
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_model_servers_metric_names_reach_prometheus_in_both_spellings(source, server):
    """Guards the next tests: without this, a query for one spelling only would pass by luck."""
    query = urllib.parse.urlencode({"query": 'count by (__name__, node) ({__name__=~"vllm.generation_tokens_total"})'})
    with urllib.request.urlopen(f"{server.url}/api/v1/query?{query}", timeout=5) as response:
        result = json.loads(response.read())["data"]["result"]
    names = {item["metric"]["node"]: item["metric"]["__name__"] for item in result}
    assert names["gpu-london-1"] == "vllm:generation_tokens_total"
    assert names["gpu-mumbai-1"] == "vllm_generation_tokens_total"


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict]]:
    """Two agent processes with fake NVML: Mumbai (2 GPUs at 80%), London (GPU 0 in MIG, GPU 1 at 30%)."""
    folder = tmp_path_factory.mktemp("agents")
    processes: list[subprocess.Popen[bytes]] = []
    targets: list[dict] = []
    python_path = [str(ROOT / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    try:
        for node, profile, utilization in (("gpu-mumbai-1", "h100", "0.8"), ("gpu-london-1", "h100-mig", "0.3")):
            port = free_port()
            command = [sys.executable, "-m", "sunblend.agent", "--fake", "--fake-profile", profile, "--fake-gpus", "2"]
            command += [
                "--fake-utilization",
                utilization,
                "--address",
                "127.0.0.1",
                "--port",
                str(port),
                "--interval",
                "1",
            ]
            log = folder / f"{node}.log"
            with log.open("ab") as out:
                processes.append(
                    subprocess.Popen(
                        command, stdout=out, stderr=subprocess.STDOUT, env={**env, "NODE_NAME": node}, cwd=ROOT
                    )
                )
            wait_for(lambda p=port: http_ok(f"http://127.0.0.1:{p}/metrics"), 30, f"the agent for {node}")
            targets.append({"targets": [f"127.0.0.1:{port}"]})
        yield targets
    finally:
        for process in processes:
            stop_process(process)


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    """Debian's Prometheus; a missing binary fails the tests (it is a dependency, not an option)."""
    if not PROMETHEUS.is_file():
        pytest.fail(f"no Prometheus binary at {PROMETHEUS}: run `make prometheus` (Debian's prometheus package)")
    return PROMETHEUS


@pytest.fixture(scope="module")
def server(
    prometheus_binary: Path,
    agents: list[dict],
    model_servers: dict[str, list[dict]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    running = Prometheus(tmp_path_factory.mktemp("prometheus"), {"agent": agents, **model_servers})
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def source(server: Prometheus) -> Iterator[prometheus.PrometheusSource]:
    config = prometheus.PrometheusConfig(url=server.url, timeout_seconds=3, demand=DEMAND)
    with prometheus.PrometheusSource(config) as ready:
        # Wait until every target has been scraped for a whole rate() window.
        wait_for(lambda: demand_settled(ready.demand(NODE_REGIONS)), 40, "demand in both regions")
        wait_for(lambda: len(ready.utilisation(NODE_REGIONS)) == 3, 30, "utilisation in three regions")
        ready.settled_at = dt.datetime.now(dt.UTC)  # type: ignore[attr-defined]
        yield ready


def test_utilisation_per_region_from_the_agent_and_from_dcgm(source):
    by_region = source.utilisation(NODE_REGIONS)
    assert set(by_region) == {"ap-south-1", "eu-west-2", "eu-central-1"}
    mumbai = by_region["ap-south-1"]
    assert mumbai.ratio == pytest.approx(0.8) and mumbai.gpus == 2 and mumbai.sources == ("agent",)
    # London: GPU 1 from the agent (0.3); GPU 0 is in MIG, so DCGM's engine activity of its two MIG devices.
    london = by_region["eu-west-2"]
    assert london.ratio == pytest.approx((0.3 + (0.6 + 0.4) / 2) / 2) and london.gpus == 2
    assert london.sources == ("agent", "dcgm_ratio")
    frankfurt = by_region["eu-central-1"]  # a percentage under the newer `hostname` label
    assert frankfurt.ratio == pytest.approx(0.7) and frankfurt.gpus == 1 and frankfurt.sources == ("dcgm_percent",)


def test_only_the_given_nodes_count(source):
    assert set(source.utilisation({"gpu-mumbai-1": "ap-south-1"})) == {"ap-south-1"}
    assert source.utilisation({}) == {}


def test_demand_per_region_from_the_model_servers(source):
    demand = source.demand(NODE_REGIONS)
    assert set(demand) == {"ap-south-1", "eu-west-2"}  # cpu-lab-1 is in no region; Frankfurt serves nothing
    mumbai, london = demand["ap-south-1"], demand["eu-west-2"]
    assert mumbai.tokens_per_second == pytest.approx(1200, rel=0.05)
    assert london.tokens_per_second == pytest.approx(300, rel=0.05)
    assert mumbai.requests_waiting == 4 and london.requests_waiting == 0
    assert mumbai.kv_cache_usage_ratio == pytest.approx(0.62) and london.kv_cache_usage_ratio == pytest.approx(0.2)


def test_demand_can_be_grouped_by_a_region_label(source, server):
    queries = prometheus.DemandQueries(
        tokens_per_second="sum by (region) (label_replace("
        'rate({__name__=~"vllm[:_]generation_tokens_total", node="gpu-london-1"}[5s]), "region", "uk", "", ""))',
        region_label="region",
    )
    with prometheus.PrometheusSource(prometheus.PrometheusConfig(url=server.url, demand=queries)) as by_label:
        demand = by_label.demand({})
    assert set(demand) == {"uk"}
    assert demand["uk"].tokens_per_second == pytest.approx(300, rel=0.05)


def test_demand_history_is_a_range_query_in_utc(source):
    start = source.settled_at + dt.timedelta(seconds=1)  # the range query rounds start to a whole second
    time.sleep(max(0.0, 4 - (dt.datetime.now(dt.UTC) - start).total_seconds()))
    end = dt.datetime.now(dt.UTC)
    history = source.demand_history("ap-south-1", NODE_REGIONS, start, end, step=dt.timedelta(seconds=1))
    assert len(history) >= 3
    times = [moment for moment, _ in history]
    assert all(moment.tzinfo == dt.UTC for moment in times)
    assert times == sorted(times) and all((b - a) == dt.timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert start <= times[0] and times[-1] <= end and all(moment.microsecond == 0 for moment in times)
    assert [tokens for _, tokens in history] == pytest.approx([1200] * len(history), rel=0.05), history
    assert source.demand_history("eu-central-1", NODE_REGIONS, start, end, step=dt.timedelta(seconds=1)) == []


def test_a_bad_query_is_rejected_with_the_query_named(server):
    queries = prometheus.DemandQueries(tokens_per_second="sum by (node) (rate(vllm_generation_tokens_total))")
    config = prometheus.PrometheusConfig(url=server.url, demand=queries)
    with (
        prometheus.PrometheusSource(config) as bad,
        pytest.raises(prometheus.QueryRejected, match="rejected the query"),
    ):
        bad.demand(NODE_REGIONS)


def test_an_outage_raises_with_the_reason_and_values_come_back_after_a_restart(source, server):
    server.stop()
    try:
        for read in (
            lambda: source.utilisation(NODE_REGIONS),
            lambda: source.demand(NODE_REGIONS),
            lambda: source.demand_history(
                "ap-south-1", NODE_REGIONS, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), dt.datetime.now(dt.UTC)
            ),
        ):
            started = time.monotonic()
            with pytest.raises(
                prometheus.MetricsUnavailable, match=r"cannot connect to Prometheus at http://127\.0\.0\.1"
            ):
                read()
            assert time.monotonic() - started < 5
    finally:
        server.start()
    restarted = dt.datetime.now(dt.UTC)
    wait_for(lambda: demand_settled(source.demand(NODE_REGIONS)), 30, "demand after the restart")
    assert source.utilisation(NODE_REGIONS)["ap-south-1"].ratio == pytest.approx(0.8)

    # Those may still come from samples taken before the outage; a point more than one rate()
    # window after the restart can only come from samples scraped since.
    def fresh_point() -> bool:
        history = source.demand_history(
            "ap-south-1", NODE_REGIONS, restarted, dt.datetime.now(dt.UTC), dt.timedelta(seconds=1)
        )
        return (
            bool(history)
            and history[-1][0] > restarted + dt.timedelta(seconds=6)
            and history[-1][1] == pytest.approx(1200, rel=0.02)
        )

    wait_for(fresh_point, 40, "a demand point scraped after the restart")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_prometheus_that_does_not_answer_times_out(silent_server):
    config = prometheus.PrometheusConfig(url=silent_server, timeout_seconds=1, retries=0)
    with prometheus.PrometheusSource(config) as slow:
        started = time.monotonic()
        with pytest.raises(prometheus.MetricsUnavailable, match="did not answer within 1 s"):
            slow.utilisation(NODE_REGIONS)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3


def test_nothing_listening_is_unavailable_not_zero():
    config = prometheus.PrometheusConfig(url=f"http://127.0.0.1:{free_port()}", timeout_seconds=1, retries=0)
    with (
        prometheus.PrometheusSource(config) as down,
        pytest.raises(prometheus.MetricsUnavailable, match="cannot connect"),
    ):
        down.demand(NODE_REGIONS)


class _RecordingHandler(BaseHTTPRequestHandler):
    """Answers every query with an empty Prometheus vector and records the Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_bearer_token_is_read_from_its_file_at_each_request(tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    http = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    worker = threading.Thread(target=http.serve_forever, daemon=True)
    worker.start()
    try:
        config = prometheus.PrometheusConfig(url=f"http://127.0.0.1:{http.server_port}", bearer_token_file=token)
        with prometheus.PrometheusSource(config) as authed:
            assert authed.demand(NODE_REGIONS) == {}  # an empty answer is no demand, not an error
            token.write_text("rotated-token\n")
            authed.demand(NODE_REGIONS)
            token.unlink()
            with pytest.raises(prometheus.MetricsUnavailable, match="cannot authenticate"):
                authed.demand(NODE_REGIONS)
    finally:
        http.shutdown()
        http.server_close()
    assert _RecordingHandler.seen[:6] == ["Bearer first-token"] * 3 + ["Bearer rotated-token"] * 3
