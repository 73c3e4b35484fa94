"""Samples NVML and exposes the latest reading as Prometheus metrics, on its own registry.

``agent/run.py`` calls ``Exporter.sample`` every interval and serves ``Exporter.registry`` over
HTTP; tests call ``sample`` directly over a ``FakeNvml``. Metric values come from the latest
reading at scrape time, so a quantity NVML could not read is absent, never a stale or a zero
value. Every NVML error counts in ``sunblend_agent_nvml_errors_total{error}``, and is logged once,
when it first appears (and once more, at INFO, when it clears), never once per sample.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sunblend.agent import nvml, reading

log = logging.getLogger("sunblend.agent")

GPU_LABELS = ("node", "gpu", "uuid", "model")
MIG_LABELS = ("node", "gpu", "mig_device", "uuid", "model")

SAMPLE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_HINTS: dict[str, str] = {
    "library_not_found": (
        "libnvidia-ml.so.1 is not in the container; run the pod with the NVIDIA container runtime "
        "(runtimeClassName) or on a node with the driver installed"
    ),
    "driver_not_loaded": "the NVIDIA kernel driver is not loaded on this node",
    "uninitialized": "NVML lost its initialisation, e.g. after a driver reload",
    "driver_version_mismatch": "the NVML library and the kernel driver differ in version; restart the pod",
    "gpu_is_lost": "the GPU fell off the bus or hit a fatal XID error; it needs a reset or the node a reboot",
    "no_permission": "this driver needs more privileges for the call; see the chart's agent.securityContext",
}


def _describe(problem: reading.Problem) -> str:
    """The one log line for a problem: where, what failed, what it means, what the agent does."""
    where = problem.scope
    if problem.uuid or problem.model:
        where += f" ({', '.join(part for part in (problem.uuid, problem.model) if part)})"
    head = f"NVML {where}: {problem.call} failed: {problem.detail} [{problem.kind}, code {problem.code}]"
    if problem.scope == reading.NODE_SCOPE or problem.kind in ("driver_not_loaded", "library_not_found"):
        then = "sunblend_agent_nvml_up is 0 and no GPU is reported; NVML is retried every sample"
    elif problem.kind == "gpu_is_lost":
        then = "sunblend_gpu_up is 0 for this GPU and its other metrics are left out"
    elif problem.kind == "not_supported":
        then = "the matching metric is left out for this device; the call is not made again"
        if problem.call == "utilization_percent" and problem.mig_enabled:
            then = (
                "MIG is enabled, and NVML has no utilisation for a MIG GPU or its MIG devices, so "
                "sunblend_gpu_utilization_ratio is left out; use DCGM's DCGM_FI_PROF_GR_ENGINE_ACTIVE per MIG device"
            )
    else:
        then = "the matching metric is left out until the call works again"
    hint = _HINTS.get(problem.kind)
    return f"{head}; {hint}; {then}" if hint else f"{head}; {then}"


class Exporter:
    """Keeps the latest reading of one node's GPUs and turns it into metrics on ``registry``."""

    def __init__(
        self,
        library: nvml.Nvml,
        node: str,
        registry: prom.CollectorRegistry | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.node = node
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self._reader = reading.Reader(library)
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: reading.NodeReading | None = None
        self._active: dict[tuple[str, str, str], reading.Problem] = {}
        self._errors = prom.Counter(
            "sunblend_agent_nvml_errors_total",
            "NVML calls that failed, by error (an unsupported call is counted once, then not made again).",
            ["node", "error"],
            registry=self.registry,
        )
        for kind in (*nvml.ERROR_KINDS.values(), nvml.OTHER_ERROR):
            self._errors.labels(node, kind)  # every known error starts at 0, so increase() sees the first one
        self._duration = prom.Histogram(
            "sunblend_agent_sample_duration_seconds",
            "Time to read every GPU of the node once through NVML.",
            ["node"],
            buckets=SAMPLE_BUCKETS,
            registry=self.registry,
        ).labels(node)
        self.registry.register(_ReadingCollector(self))

    def sample(self) -> reading.NodeReading:
        """Read every GPU once, record the errors, log what changed. Never raises."""
        started = self._clock()
        try:
            latest = self._reader.read()
        except Exception as error:  # the agent must outlive anything below it, even a bug
            problem = reading.Problem("agent", "read", -1, nvml.OTHER_ERROR, repr(error))
            latest = reading.NodeReading(False, (), (problem,))
            if problem.key not in self._active:
                log.error("reading NVML raised unexpectedly; sunblend_agent_nvml_up is 0", exc_info=error)
        self._duration.observe(self._clock() - started)
        for problem in latest.problems:
            self._errors.labels(self.node, problem.kind).inc()
        self._log_changes(latest)
        with self._lock:
            self._latest = latest
        return latest

    def latest(self) -> reading.NodeReading | None:
        """The reading the metrics show now; ``None`` before the first sample."""
        with self._lock:
            return self._latest

    def close(self) -> None:
        """Detach from NVML."""
        self._reader.close()

    def _log_changes(self, latest: reading.NodeReading) -> None:
        current = {p.key: p for p in (*latest.problems, *latest.unsupported)}
        for key, problem in current.items():
            if key not in self._active and problem.scope != "agent":
                log.warning(_describe(problem))
        for key, problem in self._active.items():
            if key not in current:
                what = problem.scope if problem.whole_scope else f"{problem.scope}: {problem.call}"
                log.info("NVML %s works again (was %s)", what, problem.kind)
        self._active = current


def _gauge(name: str, documentation: str, labels: Iterable[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class _ReadingCollector(Collector):
    """Builds the GPU gauges from the exporter's latest reading at each scrape."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        node = self._exporter.node
        latest = self._exporter.latest()
        nvml_up = _gauge("sunblend_agent_nvml_up", "1 when NVML answers on this node, 0 when it does not.", ["node"])
        nvml_up.add_metric([node], 1.0 if latest is not None and latest.nvml_up else 0.0)
        yield nvml_up
        gpu_up = _gauge("sunblend_gpu_up", "1 when NVML can read the GPU, 0 when it reports the GPU lost.", GPU_LABELS)
        utilization = _gauge(
            "sunblend_gpu_utilization_ratio",
            "Fraction of the last sample period in which a kernel ran on the GPU, 0-1 (absent under MIG).",
            GPU_LABELS,
        )
        memory_used = _gauge(
            "sunblend_gpu_memory_used_bytes", "GPU memory in use, excluding the driver's reserved memory.", GPU_LABELS
        )
        memory_total = _gauge("sunblend_gpu_memory_total_bytes", "GPU memory in total.", GPU_LABELS)
        power = _gauge("sunblend_gpu_power_watts", "GPU power draw.", GPU_LABELS)
        processes = _gauge("sunblend_gpu_processes", "Compute processes running on the GPU.", GPU_LABELS)
        mig_enabled = _gauge("sunblend_gpu_mig_enabled", "1 when MIG mode is enabled on the GPU.", GPU_LABELS)
        mig_used = _gauge(
            "sunblend_mig_device_memory_used_bytes", "Memory in use on a MIG device of the GPU.", MIG_LABELS
        )
        mig_total = _gauge("sunblend_mig_device_memory_total_bytes", "Memory of a MIG device of the GPU.", MIG_LABELS)
        mig_processes = _gauge(
            "sunblend_mig_device_processes", "Compute processes running on a MIG device of the GPU.", MIG_LABELS
        )
        for gpu in latest.gpus if latest is not None else ():
            labels = [node, str(gpu.index), gpu.uuid, gpu.model]
            gpu_up.add_metric(labels, 1.0 if gpu.up else 0.0)
            for family, value in (
                (utilization, gpu.utilization_ratio),
                (memory_used, gpu.memory_used_bytes),
                (memory_total, gpu.memory_total_bytes),
                (power, gpu.power_watts),
                (processes, gpu.processes),
                (mig_enabled, None if gpu.mig_enabled is None else int(gpu.mig_enabled)),
            ):
                if value is not None:
                    family.add_metric(labels, float(value))
            for mig in gpu.mig_devices:
                mig_labels = [node, str(gpu.index), str(mig.slot), mig.uuid, mig.model]
                for family, count in (
                    (mig_used, mig.memory_used_bytes),
                    (mig_total, mig.memory_total_bytes),
                    (mig_processes, mig.processes),
                ):
                    if count is not None:
                        family.add_metric(mig_labels, float(count))
        yield from (gpu_up, utilization, memory_used, memory_total, power, processes, mig_enabled)
        yield from (mig_used, mig_total, mig_processes)
