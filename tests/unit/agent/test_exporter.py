"""The GPU agent's exporter over FakeNvml: metric values and units, and every NVML error path.

No GPU and no network: the exporter is sampled directly and its registry read in-process.
"""

from __future__ import annotations

import logging

import prometheus_client as prom
import pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sunblend.agent import exporter, nvml

GIB = 1024**3
MIB = 1024**2
NODE = "gpu-node-1"


def _gpu(index: int, **overrides: object) -> nvml.FakeGpu:
    return nvml.FakeGpu(uuid=f"GPU-{index:04d}", **overrides)  # type: ignore[arg-type]


def _labels(gpu: int, uuid: str | None = None, model: str = "NVIDIA H100 80GB HBM3") -> dict[str, str]:
    return {"node": NODE, "gpu": str(gpu), "uuid": uuid or f"GPU-{gpu:04d}", "model": model}


def _value(agent: exporter.Exporter, name: str, labels: dict[str, str] | None = None) -> float | None:
    return agent.registry.get_sample_value(name, labels or {})


def _errors(agent: exporter.Exporter, kind: str) -> float | None:
    return _value(agent, "sunblend_agent_nvml_errors_total", {"node": NODE, "error": kind})


def _series(agent: exporter.Exporter, name: str) -> list[dict[str, str]]:
    families = text_string_to_metric_families(prom.generate_latest(agent.registry).decode())
    return [sample.labels for family in families for sample in family.samples if sample.name == name]


@pytest.fixture
def agent_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of the agent's logger, at any level."""
    caplog.set_level(logging.DEBUG, logger="sunblend.agent")
    return caplog


def test_values_are_converted_to_base_units():
    fake = nvml.FakeNvml(
        [
            _gpu(
                0,
                utilization_percent=37,
                power_milliwatts=254_321,
                memory_total_bytes=80 * GIB,
                memory_used_bytes=10 * GIB,
                memory_reserved_bytes=512 * MIB,
                processes=3,
            )
        ]
    )
    agent = exporter.Exporter(fake, NODE)
    agent.sample()
    labels = _labels(0)
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 1
    assert _value(agent, "sunblend_gpu_up", labels) == 1
    assert _value(agent, "sunblend_gpu_utilization_ratio", labels) == pytest.approx(0.37)
    assert _value(agent, "sunblend_gpu_power_watts", labels) == pytest.approx(254.321)
    assert _value(agent, "sunblend_gpu_memory_total_bytes", labels) == 80 * GIB
    # The v2 struct: reserved memory is not "used" (v1 would say 10.5 GiB).
    assert _value(agent, "sunblend_gpu_memory_used_bytes", labels) == 10 * GIB
    assert _value(agent, "sunblend_gpu_processes", labels) == 3
    assert _value(agent, "sunblend_gpu_mig_enabled", labels) == 0
    assert _value(agent, "sunblend_agent_sample_duration_seconds_count", {"node": NODE}) == 1
    assert all(_errors(agent, kind) == 0 for kind in nvml.ERROR_KINDS.values())


def test_the_fake_answers_v1_and_v2_memory_differently():
    """Guards the test above: with the v1 struct, the reserved memory would have counted as used."""
    fake = nvml.FakeNvml([_gpu(0, memory_used_bytes=10 * GIB, memory_reserved_bytes=512 * MIB)])
    fake.init()
    handle = fake.device_handle(0)
    assert fake.memory_info(handle, None).used == 10 * GIB + 512 * MIB
    assert fake.memory_info(handle, nvml.MEMORY_V2).used == 10 * GIB


def test_every_series_has_the_prefix_and_the_gpu_labels():
    agent = exporter.Exporter(nvml.fake_profile("h100", gpus=2, utilization=0.5), NODE)
    agent.sample()
    text = prom.generate_latest(agent.registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names and all(name.startswith("sunblend_") for name in names)
    for name in (
        "sunblend_gpu_utilization_ratio",
        "sunblend_gpu_memory_used_bytes",
        "sunblend_gpu_memory_total_bytes",
        "sunblend_gpu_power_watts",
        "sunblend_gpu_processes",
        "sunblend_gpu_mig_enabled",
    ):
        series = _series(agent, name)
        assert len(series) == 2, name
        assert all(set(labels) == {"node", "gpu", "uuid", "model"} for labels in series), name
        assert {labels["node"] for labels in series} == {NODE}


def test_the_fake_profile_follows_measured_h100_power():
    idle = exporter.Exporter(nvml.fake_profile("h100", gpus=1, utilization=0.0), NODE)
    busy = exporter.Exporter(nvml.fake_profile("h100", gpus=1, utilization=1.0), NODE)
    idle_gpu = idle.sample().gpus[0]
    busy_gpu = busy.sample().gpus[0]
    assert idle_gpu.power_watts == pytest.approx(90.0) and busy_gpu.power_watts == pytest.approx(700.0)
    assert idle_gpu.utilization_ratio == 0.0 and busy_gpu.utilization_ratio == 1.0
    assert idle_gpu.memory_used_bytes is not None and busy_gpu.memory_used_bytes is not None
    assert idle_gpu.memory_used_bytes < busy_gpu.memory_used_bytes
    with pytest.raises(ValueError, match="unknown fake profile"):
        nvml.fake_profile("tpu")


@pytest.mark.parametrize(
    ("code", "kind", "hint"),
    [
        (nvml.LIBRARY_NOT_FOUND, "library_not_found", "libnvidia-ml.so.1"),
        (nvml.DRIVER_NOT_LOADED, "driver_not_loaded", "driver is not loaded"),
    ],
)
def test_nvml_that_cannot_start_is_a_metric_and_one_log_line(code, kind, hint, agent_log):
    fake = nvml.FakeNvml([_gpu(0)])
    fake.fail("init", code)
    agent = exporter.Exporter(fake, NODE)
    for _ in range(5):
        reading = agent.sample()
        assert not reading.nvml_up and reading.gpus == ()
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 0
    assert _errors(agent, kind) == 5
    assert _series(agent, "sunblend_gpu_utilization_ratio") == []
    assert fake.calls["init"] == 5  # retried every sample
    assert len(agent_log.records) == 1
    assert agent_log.records[0].levelno == logging.WARNING
    assert kind in agent_log.records[0].getMessage() and hint in agent_log.records[0].getMessage()

    fake.heal()
    agent.sample()
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 1
    assert _value(agent, "sunblend_gpu_up", _labels(0)) == 1
    assert (
        len(agent_log.records) == 2
        and agent_log.records[1].levelno == logging.INFO
        and "works again" in agent_log.records[1].getMessage()
    )


def test_the_real_library_without_a_driver_reports_library_not_found(agent_log):
    """pynvml itself on a machine without libnvidia-ml: the agent must report it, not crash."""
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        pass
    else:
        pytest.skip("this machine has the NVIDIA driver; the fake covers the error path")
    agent = exporter.Exporter(nvml.PynvmlLibrary(), NODE)
    for _ in range(3):
        assert not agent.sample().nvml_up
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 0
    assert _errors(agent, "library_not_found") == 3
    assert len(agent_log.records) == 1 and "library_not_found" in agent_log.records[0].getMessage()
    agent.close()


def test_a_driver_that_goes_away_mid_run_is_detached_and_picked_up_again(agent_log):
    fake = nvml.FakeNvml([_gpu(0), _gpu(1)])
    agent = exporter.Exporter(fake, NODE)
    assert agent.sample().nvml_up
    fake.fail("*", nvml.DRIVER_NOT_LOADED)
    for _ in range(3):
        reading = agent.sample()
        assert not reading.nvml_up
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 0
    assert _series(agent, "sunblend_gpu_up") == []  # no stale GPU series
    assert _errors(agent, "driver_not_loaded") == 3
    assert [r.levelno for r in agent_log.records] == [logging.WARNING]
    fake.heal()
    assert agent.sample().nvml_up
    assert fake.initialized and _value(agent, "sunblend_gpu_up", _labels(1)) == 1


def test_a_lost_gpu_is_down_and_the_others_are_still_read(agent_log):
    fake = nvml.FakeNvml([_gpu(0, utilization_percent=80), _gpu(1, utilization_percent=20)])
    agent = exporter.Exporter(fake, NODE)
    agent.sample()
    fake.fail("*", nvml.GPU_IS_LOST, gpu=1)
    for _ in range(4):
        reading = agent.sample()
    assert reading.nvml_up
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 1
    # The lost GPU keeps the identity it had; only its up series is left.
    assert _value(agent, "sunblend_gpu_up", _labels(1)) == 0
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(1)) is None
    assert _value(agent, "sunblend_gpu_memory_used_bytes", _labels(1)) is None
    assert _value(agent, "sunblend_gpu_up", _labels(0)) == 1
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(0)) == pytest.approx(0.8)
    assert _errors(agent, "gpu_is_lost") == 4
    assert len(agent_log.records) == 1
    message = agent_log.records[0].getMessage()
    assert "gpu 1" in message and "GPU-0001" in message and "gpu_is_lost" in message and "reset" in message


def test_a_gpu_lost_before_it_was_ever_read_is_still_reported_down(agent_log):
    fake = nvml.FakeNvml([_gpu(0), _gpu(1)])
    fake.fail("device_handle", nvml.GPU_IS_LOST, gpu=0)
    agent = exporter.Exporter(fake, NODE)
    agent.sample()
    agent.sample()
    assert _value(agent, "sunblend_gpu_up", {"node": NODE, "gpu": "0", "uuid": "", "model": ""}) == 0
    assert _value(agent, "sunblend_gpu_up", _labels(1)) == 1
    assert len(agent_log.records) == 1


def test_utilisation_under_mig_is_not_supported_once_and_mig_devices_are_read(agent_log):
    mig = nvml.FakeMigDevice("MIG-0000", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40 * GIB, 30 * GIB, processes=2)
    fake = nvml.FakeNvml(
        [_gpu(0, mig_enabled=True, mig_devices=[mig], max_mig_devices=3), _gpu(1, utilization_percent=55)]
    )
    agent = exporter.Exporter(fake, NODE)
    for _ in range(5):
        reading = agent.sample()
    assert reading.nvml_up and all(gpu.up for gpu in reading.gpus)
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(0)) is None  # absent, never 0
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(1)) == pytest.approx(0.55)
    assert _value(agent, "sunblend_gpu_mig_enabled", _labels(0)) == 1
    assert _value(agent, "sunblend_gpu_memory_total_bytes", _labels(0)) is not None
    mig_labels = {"node": NODE, "gpu": "0", "mig_device": "0", "uuid": "MIG-0000", "model": mig.name}
    assert _value(agent, "sunblend_mig_device_memory_used_bytes", mig_labels) == 30 * GIB
    assert _value(agent, "sunblend_mig_device_memory_total_bytes", mig_labels) == 40 * GIB
    assert _value(agent, "sunblend_mig_device_processes", mig_labels) == 2
    assert len(_series(agent, "sunblend_mig_device_memory_used_bytes")) == 1  # empty slots 1 and 2 are skipped
    # Counted and logged once; the unsupported call is not made again.
    assert _errors(agent, "not_supported") == 1
    assert _errors(agent, "not_found") == 0
    assert fake.calls["utilization_percent"] == 5 + 1  # GPU 1 every sample, GPU 0 once
    assert len(agent_log.records) == 1
    message = agent_log.records[0].getMessage()
    assert "not_supported" in message and "MIG" in message and "DCGM_FI_PROF_GR_ENGINE_ACTIVE" in message


def test_a_gpu_without_mig_is_not_an_error(agent_log):
    fake = nvml.FakeNvml([_gpu(0, mig_capable=False, utilization_percent=10)])
    agent = exporter.Exporter(fake, NODE)
    for _ in range(3):
        agent.sample()
    assert _value(agent, "sunblend_gpu_mig_enabled", _labels(0)) == 0
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(0)) == pytest.approx(0.1)
    assert all(_errors(agent, kind) == 0 for kind in (*nvml.ERROR_KINDS.values(), nvml.OTHER_ERROR))
    assert agent_log.records == []


def test_unsupported_power_leaves_only_power_out(agent_log):
    fake = nvml.FakeNvml([_gpu(0, utilization_percent=42)])
    fake.fail("power_milliwatts", nvml.NOT_SUPPORTED)
    agent = exporter.Exporter(fake, NODE)
    for _ in range(3):
        agent.sample()
    assert _value(agent, "sunblend_gpu_power_watts", _labels(0)) is None
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(0)) == pytest.approx(0.42)
    assert _errors(agent, "not_supported") == 1
    assert len(agent_log.records) == 1 and "power_milliwatts" in agent_log.records[0].getMessage()


def test_a_transient_error_is_counted_each_time_but_logged_once_until_it_clears(agent_log):
    fake = nvml.FakeNvml([_gpu(0, utilization_percent=42)])
    agent = exporter.Exporter(fake, NODE)
    fake.fail("utilization_percent", pynvml.NVML_ERROR_TIMEOUT, gpu=0)
    for _ in range(3):
        agent.sample()
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(0)) is None
    assert _value(agent, "sunblend_gpu_memory_used_bytes", _labels(0)) is not None
    assert _errors(agent, "timeout") == 3
    assert len(agent_log.records) == 1
    fake.heal()
    agent.sample()
    assert _value(agent, "sunblend_gpu_utilization_ratio", _labels(0)) == pytest.approx(0.42)
    assert len(agent_log.records) == 2 and "works again" in agent_log.records[1].getMessage()


class _BrokenNvml(nvml.FakeNvml):
    def device_count(self) -> int:
        raise RuntimeError("a bug below the agent")


def test_an_unexpected_exception_never_escapes_sample(agent_log):
    agent = exporter.Exporter(_BrokenNvml([_gpu(0)]), NODE)
    for _ in range(3):
        reading = agent.sample()
        assert not reading.nvml_up
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 0
    assert _errors(agent, nvml.OTHER_ERROR) == 3
    assert (
        len(agent_log.records) == 1 and agent_log.records[0].levelno == logging.ERROR and agent_log.records[0].exc_info
    )


def test_nvml_up_is_0_before_the_first_sample():
    agent = exporter.Exporter(nvml.FakeNvml([_gpu(0)]), NODE)
    assert _value(agent, "sunblend_agent_nvml_up", {"node": NODE}) == 0
    assert _series(agent, "sunblend_gpu_up") == []
