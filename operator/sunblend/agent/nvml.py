"""NVML as the GPU agent uses it: a small Protocol, the real library over pynvml, and a fake.

``agent/reading.py`` makes these calls once per sample. ``PynvmlLibrary`` is the real thing
(nvidia-ml-py's ``pynvml``); ``FakeNvml`` serves tests and demos on machines without a GPU. Both
speak NVML's own units (percent, milliwatts, bytes) and both raise ``pynvml.NVMLError``
subclasses, so the agent's error handling runs the same way against either. The fake can raise
any NVML error code from any call, for any GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, TypeVar

import pynvml

Handle: TypeAlias = object
T = TypeVar("T")

MEMORY_V2: int = pynvml.nvmlMemory_v2
"""Version of the memory struct whose ``used`` excludes the driver's reserved memory (v1 counts it)."""

NOT_SUPPORTED: int = pynvml.NVML_ERROR_NOT_SUPPORTED  # 3
NOT_FOUND: int = pynvml.NVML_ERROR_NOT_FOUND  # 6
DRIVER_NOT_LOADED: int = pynvml.NVML_ERROR_DRIVER_NOT_LOADED  # 9
LIBRARY_NOT_FOUND: int = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND  # 12
GPU_IS_LOST: int = pynvml.NVML_ERROR_GPU_IS_LOST  # 15
UNINITIALIZED: int = pynvml.NVML_ERROR_UNINITIALIZED  # 1
NO_PERMISSION: int = pynvml.NVML_ERROR_NO_PERMISSION  # 4
DRIVER_VERSION_MISMATCH: int = pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH  # 18

ERROR_KINDS: dict[int, str] = {
    UNINITIALIZED: "uninitialized",
    NOT_SUPPORTED: "not_supported",
    NO_PERMISSION: "no_permission",
    NOT_FOUND: "not_found",
    DRIVER_NOT_LOADED: "driver_not_loaded",
    pynvml.NVML_ERROR_TIMEOUT: "timeout",
    LIBRARY_NOT_FOUND: "library_not_found",
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: "function_not_found",
    GPU_IS_LOST: "gpu_is_lost",
    pynvml.NVML_ERROR_RESET_REQUIRED: "reset_required",
    DRIVER_VERSION_MISMATCH: "driver_version_mismatch",
}
"""NVML error codes the agent names; any other code is ``other``. A bounded set: a metric label."""

OTHER_ERROR = "other"

NvmlError: type[Exception] = pynvml.NVMLError
"""The base class of every NVML error (one subclass per code, e.g. ``NVMLError_GpuIsLost``)."""


def error_code(error: Exception) -> int:
    """The NVML return code carried by an ``NVMLError``."""
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else -1


def error_kind(error: Exception) -> str:
    """The agent's name for an NVML error, used as the ``error`` label."""
    return ERROR_KINDS.get(error_code(error), OTHER_ERROR)


def nvml_error(code: int) -> Exception:
    """A pynvml error for ``code``, of the same subclass the real library raises."""
    error: Exception = pynvml.NVMLError(code)
    return error


@dataclass(frozen=True)
class MemoryCounts:
    """Device memory in bytes, as one NVML memory struct reports it."""

    total: int
    used: int
    free: int


class Nvml(Protocol):
    """The NVML calls the agent makes. Each may raise an ``NVMLError`` subclass."""

    def init(self) -> None:
        """nvmlInit: load the library and attach to the driver."""

    def shutdown(self) -> None:
        """nvmlShutdown."""

    def device_count(self) -> int:
        """nvmlDeviceGetCount."""
        ...

    def device_handle(self, index: int) -> Handle:
        """nvmlDeviceGetHandleByIndex."""

    def device_name(self, handle: Handle) -> str:
        """nvmlDeviceGetName: the model, e.g. ``NVIDIA H100 80GB HBM3``."""
        ...

    def device_uuid(self, handle: Handle) -> str:
        """nvmlDeviceGetUUID: ``GPU-...`` or, for a MIG device, ``MIG-...``."""
        ...

    def utilization_percent(self, handle: Handle) -> int:
        """nvmlDeviceGetUtilizationRates().gpu: percent of time a kernel ran (NOT_SUPPORTED under MIG)."""
        ...

    def memory_info(self, handle: Handle, version: int | None) -> MemoryCounts:
        """nvmlDeviceGetMemoryInfo; ``version=MEMORY_V2`` for the v2 struct."""
        ...

    def power_milliwatts(self, handle: Handle) -> int:
        """nvmlDeviceGetPowerUsage, in milliwatts."""
        ...

    def mig_mode(self, handle: Handle) -> int:
        """nvmlDeviceGetMigMode: the current mode, 1 enabled, 0 disabled (NOT_SUPPORTED before Ampere)."""
        ...

    def compute_process_count(self, handle: Handle) -> int:
        """len(nvmlDeviceGetComputeRunningProcesses)."""
        ...

    def max_mig_device_count(self, handle: Handle) -> int:
        """nvmlDeviceGetMaxMigDeviceCount."""
        ...

    def mig_device_handle(self, handle: Handle, index: int) -> Handle:
        """nvmlDeviceGetMigDeviceHandleByIndex (NOT_FOUND for an empty slot)."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PynvmlLibrary:
    """The real NVML, through pynvml. Every call takes microseconds; none is retried here."""

    def init(self) -> None:
        pynvml.nvmlInit()

    def shutdown(self) -> None:
        pynvml.nvmlShutdown()

    def device_count(self) -> int:
        return int(pynvml.nvmlDeviceGetCount())

    def device_handle(self, index: int) -> Handle:
        handle: Handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return handle

    def device_name(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetName(handle))

    def device_uuid(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetUUID(handle))

    def utilization_percent(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def memory_info(self, handle: Handle, version: int | None) -> MemoryCounts:
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        return MemoryCounts(total=int(memory.total), used=int(memory.used), free=int(memory.free))

    def power_milliwatts(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetPowerUsage(handle))

    def mig_mode(self, handle: Handle) -> int:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        return int(current)

    def compute_process_count(self, handle: Handle) -> int:
        return len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))

    def max_mig_device_count(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle))

    def mig_device_handle(self, handle: Handle, index: int) -> Handle:
        mig: Handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        return mig


GIB = 1024**3
MIB = 1024**2


@dataclass
class FakeMigDevice:
    """One MIG device (a GPU instance's compute instance) of a fake GPU."""

    uuid: str
    name: str
    memory_total_bytes: int
    memory_used_bytes: int = 0
    processes: int = 0


@dataclass
class FakeGpu:
    """One fake GPU, in NVML's units. Defaults: an idle H100 SXM."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    utilization_percent: int = 0
    memory_total_bytes: int = 81_559 * MIB
    memory_used_bytes: int = 0
    memory_reserved_bytes: int = 512 * MIB
    """Reserved by the driver: the v1 memory struct counts it as used, the v2 struct does not."""
    power_milliwatts: int = 90_000
    processes: int = 0
    mig_capable: bool = True
    mig_enabled: bool = False
    mig_devices: list[FakeMigDevice] = field(default_factory=list)
    max_mig_devices: int = 7


@dataclass(frozen=True)
class _FakeHandle:
    gpu: int
    mig: int | None = None


ANY_CALL = "*"


class FakeNvml:
    """An in-memory NVML that behaves like the real one on the paths the agent takes.

    ``fail(call, code, gpu)`` makes ``call`` (a method name, or ``"*"`` for every call) raise the
    NVML error ``code``, for one GPU index or for all (``gpu=None``); ``heal`` undoes it. Like the
    real library, utilisation is NOT_SUPPORTED on a MIG-enabled GPU and on MIG devices, MIG mode is
    NOT_SUPPORTED on GPUs without MIG, and calls before ``init`` raise UNINITIALIZED. ``calls``
    counts the calls made, by method name.
    """

    def __init__(self, gpus: Sequence[FakeGpu]) -> None:
        self.gpus = list(gpus)
        self.initialized = False
        self.calls: dict[str, int] = {}
        self._failures: dict[tuple[str, int | None], int] = {}
        self._lock = threading.Lock()

    def fail(self, call: str, code: int, gpu: int | None = None) -> None:
        """Make ``call`` raise NVML error ``code`` (for GPU ``gpu``, or every GPU and global calls)."""
        with self._lock:
            self._failures[(call, gpu)] = code

    def heal(self) -> None:
        """Stop raising every injected error."""
        with self._lock:
            self._failures.clear()

    def _enter(self, call: str, handle: _FakeHandle | None = None) -> None:
        with self._lock:
            self.calls[call] = self.calls.get(call, 0) + 1
            gpu = handle.gpu if handle is not None else None
            keys: list[tuple[str, int | None]] = [(call, None), (ANY_CALL, None)]
            if gpu is not None:
                keys[:0] = [(call, gpu), (ANY_CALL, gpu)]
            for key in keys:
                code = self._failures.get(key)
                if code is not None:
                    raise nvml_error(code)
        if call != "init" and not self.initialized:
            raise nvml_error(UNINITIALIZED)

    def _gpu(self, handle: Handle) -> tuple[_FakeHandle, FakeGpu]:
        if not isinstance(handle, _FakeHandle) or handle.gpu >= len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle, self.gpus[handle.gpu]

    def _mig(self, handle: _FakeHandle, gpu: FakeGpu) -> FakeMigDevice | None:
        return None if handle.mig is None else gpu.mig_devices[handle.mig]

    def init(self) -> None:
        self._enter("init")
        self.initialized = True

    def shutdown(self) -> None:
        self._enter("shutdown")
        self.initialized = False

    def device_count(self) -> int:
        self._enter("device_count")
        return len(self.gpus)

    def device_handle(self, index: int) -> Handle:
        handle = _FakeHandle(index)
        self._enter("device_handle", handle)
        if index >= len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle

    def _read(self, call: str, handle: Handle, read: Callable[[_FakeHandle, FakeGpu], T]) -> T:
        fake_handle, gpu = self._gpu(handle)
        self._enter(call, fake_handle)
        return read(fake_handle, gpu)

    def device_name(self, handle: Handle) -> str:
        def name(h: _FakeHandle, gpu: FakeGpu) -> str:
            mig = self._mig(h, gpu)
            return gpu.name if mig is None else mig.name

        return self._read("device_name", handle, name)

    def device_uuid(self, handle: Handle) -> str:
        def uuid(h: _FakeHandle, gpu: FakeGpu) -> str:
            mig = self._mig(h, gpu)
            return gpu.uuid if mig is None else mig.uuid

        return self._read("device_uuid", handle, uuid)

    def utilization_percent(self, handle: Handle) -> int:
        def utilization(h: _FakeHandle, gpu: FakeGpu) -> int:
            if h.mig is not None or gpu.mig_enabled:
                raise nvml_error(NOT_SUPPORTED)
            return gpu.utilization_percent

        return self._read("utilization_percent", handle, utilization)

    def memory_info(self, handle: Handle, version: int | None) -> MemoryCounts:
        def memory(h: _FakeHandle, gpu: FakeGpu) -> MemoryCounts:
            mig = self._mig(h, gpu)
            if mig is not None:
                return MemoryCounts(
                    mig.memory_total_bytes, mig.memory_used_bytes, mig.memory_total_bytes - mig.memory_used_bytes
                )
            used = gpu.memory_used_bytes if version == MEMORY_V2 else gpu.memory_used_bytes + gpu.memory_reserved_bytes
            free = gpu.memory_total_bytes - gpu.memory_used_bytes - gpu.memory_reserved_bytes
            return MemoryCounts(gpu.memory_total_bytes, used, free)

        return self._read("memory_info", handle, memory)

    def power_milliwatts(self, handle: Handle) -> int:
        def power(h: _FakeHandle, gpu: FakeGpu) -> int:
            if h.mig is not None:
                raise nvml_error(NOT_SUPPORTED)
            return gpu.power_milliwatts

        return self._read("power_milliwatts", handle, power)

    def mig_mode(self, handle: Handle) -> int:
        def mode(h: _FakeHandle, gpu: FakeGpu) -> int:
            if not gpu.mig_capable:
                raise nvml_error(NOT_SUPPORTED)
            return 1 if gpu.mig_enabled else 0

        return self._read("mig_mode", handle, mode)

    def compute_process_count(self, handle: Handle) -> int:
        def processes(h: _FakeHandle, gpu: FakeGpu) -> int:
            mig = self._mig(h, gpu)
            return gpu.processes if mig is None else mig.processes

        return self._read("compute_process_count", handle, processes)

    def max_mig_device_count(self, handle: Handle) -> int:
        def count(h: _FakeHandle, gpu: FakeGpu) -> int:
            if not gpu.mig_capable:
                raise nvml_error(NOT_SUPPORTED)
            return gpu.max_mig_devices

        return self._read("max_mig_device_count", handle, count)

    def mig_device_handle(self, handle: Handle, index: int) -> Handle:
        def mig(h: _FakeHandle, gpu: FakeGpu) -> _FakeHandle:
            if not gpu.mig_enabled:
                raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            if index >= len(gpu.mig_devices):
                raise nvml_error(NOT_FOUND)
            return _FakeHandle(h.gpu, index)

        found: Handle = self._read("mig_device_handle", handle, mig)
        return found


PROFILES = ("h100", "h100-mig")
"""Built-in fake nodes: ``h100`` (GPUs without MIG) and ``h100-mig`` (GPU 0 split into MIG devices)."""


def fake_profile(profile: str = "h100", gpus: int = 8, utilization: float = 0.0) -> FakeNvml:
    """A fake node of ``gpus`` H100s at ``utilization`` (0-1), with power and memory to match.

    Power follows the figures measured on a real H100: about 90 W idle, about 700 W at full load.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown fake profile {profile!r}; choose one of {', '.join(PROFILES)}")
    fakes: list[FakeGpu] = []
    for index in range(gpus):
        gpu = FakeGpu(
            uuid=f"GPU-fa4e0000-0000-4000-8000-{index:012d}",
            utilization_percent=round(utilization * 100),
            power_milliwatts=round(90_000 + utilization * 610_000),
            processes=1 if utilization > 0 else 0,
        )
        gpu.memory_used_bytes = round(
            (gpu.memory_total_bytes - gpu.memory_reserved_bytes) * (0.02 + 0.88 * utilization)
        )
        if profile == "h100-mig" and index == 0:
            gpu.mig_enabled = True
            gpu.mig_devices = [
                FakeMigDevice(
                    uuid=f"MIG-fa4e0000-0000-4000-8000-{slot:012d}",
                    name="NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                    memory_total_bytes=40_448 * MIB,
                    memory_used_bytes=round(40_448 * MIB * 0.9 * utilization),
                    processes=1 if utilization > 0 else 0,
                )
                for slot in range(2)
            ]
        fakes.append(gpu)
    return FakeNvml(fakes)
