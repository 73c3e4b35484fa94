"""One reading of a node's GPUs per sample, made from NVML calls that may each fail.

Called by ``agent/exporter.py`` once per sample. NVML errors never escape ``Reader.read``: each
failed call becomes a ``Problem`` in the reading and its quantity is left out (``None``), never
reported as zero. What each error means here:

- LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED, UNINITIALIZED or a driver/library version mismatch: NVML
  is down (``nvml_up`` false, no GPUs); the reader detaches and tries ``nvmlInit`` again next
  sample.
- GPU_IS_LOST: that GPU is down (``up`` false) for this sample; the others are read as usual.
- NOT_SUPPORTED: the quantity does not exist for that GPU in its current MIG mode, e.g.
  utilisation under MIG. The call is remembered per GPU and MIG mode and not made again, so it is
  reported once. MIG mode itself being unsupported just means a GPU without MIG: not a problem.
- Anything else: the quantity is left out for this sample.

Units are converted here: utilisation percent to a 0-1 ratio, milliwatts to watts; memory comes
from the v2 struct, whose ``used`` excludes the driver's reserved memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sunblend.agent import nvml

T = TypeVar("T")

NODE_SCOPE = "nvml"
NVML_DOWN = frozenset(
    {nvml.LIBRARY_NOT_FOUND, nvml.DRIVER_NOT_LOADED, nvml.UNINITIALIZED, nvml.DRIVER_VERSION_MISMATCH}
)


@dataclass(frozen=True)
class Problem:
    """One failed NVML call: where, which call, and the error."""

    scope: str
    """``nvml`` for the library itself, ``gpu 0`` for a GPU, ``gpu 0 mig 1`` for a MIG device."""
    call: str
    code: int
    kind: str
    detail: str
    uuid: str = ""
    model: str = ""
    mig_enabled: bool = False

    @property
    def whole_scope(self) -> bool:
        """True when the error is about the whole of NVML or of the GPU, whichever call met it."""
        return self.scope == NODE_SCOPE or self.code in NVML_DOWN or self.code == nvml.GPU_IS_LOST

    @property
    def key(self) -> tuple[str, str, str]:
        """Identifies the problem across samples, for logging it once."""
        return (self.scope, "" if self.whole_scope else self.call, self.kind)


@dataclass(frozen=True)
class MigReading:
    """One MIG device of a GPU. NVML gives no utilisation for MIG devices."""

    slot: int
    uuid: str
    model: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    processes: int | None


@dataclass(frozen=True)
class GpuReading:
    """One GPU. ``up`` is false when NVML says the GPU is lost; every quantity is then ``None``."""

    index: int
    uuid: str
    model: str
    up: bool
    utilization_ratio: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    processes: int | None = None
    mig_enabled: bool | None = None
    mig_devices: tuple[MigReading, ...] = ()


@dataclass(frozen=True)
class NodeReading:
    """Everything one sample learnt about the node's GPUs."""

    nvml_up: bool
    gpus: tuple[GpuReading, ...]
    problems: tuple[Problem, ...]
    """The NVML calls that failed during this sample; each one counts as one error."""
    unsupported: tuple[Problem, ...] = ()
    """Calls found NOT_SUPPORTED in an earlier sample and no longer made (still in effect)."""


class _GpuLost(Exception):
    """An NVML call said the GPU is lost: stop reading it for this sample."""


class _NvmlDown(Exception):
    """NVML itself failed (driver or library gone): stop this sample."""


@dataclass(frozen=True)
class _Target:
    """What an NVML call is about: the node, a GPU or a MIG device, and its MIG mode."""

    scope: str
    uuid: str = ""
    model: str = ""
    mig_enabled: bool = False

    def remembered(self, call: str) -> tuple[str, str, bool, str]:
        return (self.scope, self.uuid, self.mig_enabled, call)


class Reader:
    """Reads every GPU of the node through an ``Nvml``, keeping what it learnt between samples."""

    def __init__(self, library: nvml.Nvml) -> None:
        self._nvml = library
        self._initialized = False
        self._identities: dict[int, tuple[str, str]] = {}
        self._unsupported: dict[tuple[str, str, bool, str], Problem | None] = {}
        self._problems: list[Problem] = []

    def read(self) -> NodeReading:
        """Read the node once. Never raises an NVML error."""
        self._problems = []
        node = _Target(NODE_SCOPE)
        if not self._initialized:
            try:
                self._nvml.init()
            except nvml.NvmlError as error:
                problem = Problem(NODE_SCOPE, "init", nvml.error_code(error), nvml.error_kind(error), str(error))
                return NodeReading(False, (), (problem,))
            self._initialized = True
        try:
            count = self._call(node, "device_count", self._nvml.device_count)
            if count is None:
                raise _NvmlDown
            gpus = tuple(self._read_gpu(index) for index in range(count))
        except _NvmlDown:
            self.close()
            return NodeReading(False, (), tuple(self._problems))
        unsupported = tuple(p for p in self._unsupported.values() if p is not None)
        return NodeReading(True, gpus, tuple(self._problems), unsupported)

    def close(self) -> None:
        """Detach from NVML (best effort); the next ``read`` initialises it again."""
        if self._initialized:
            self._initialized = False
            with contextlib.suppress(nvml.NvmlError):  # the driver is gone: nothing left to release
                self._nvml.shutdown()

    def _call(
        self, target: _Target, call: str, function: Callable[..., T], *args: object, quiet: frozenset[int] = frozenset()
    ) -> T | None:
        """Make one NVML call; on an error record it and return ``None`` (or stop: see the module)."""
        remembered = target.remembered(call)
        if remembered in self._unsupported:
            return None
        try:
            return function(*args)
        except nvml.NvmlError as error:
            code = nvml.error_code(error)
            if code in quiet:
                if code == nvml.NOT_SUPPORTED:
                    self._unsupported[remembered] = None
                return None
            problem = Problem(
                target.scope,
                call,
                code,
                nvml.error_kind(error),
                str(error),
                target.uuid,
                target.model,
                target.mig_enabled,
            )
            self._problems.append(problem)
            if code in NVML_DOWN:
                raise _NvmlDown from error
            if target.scope != NODE_SCOPE:
                if code == nvml.GPU_IS_LOST:
                    raise _GpuLost from error
                if code == nvml.NOT_SUPPORTED:
                    self._unsupported[remembered] = problem
            return None

    def _read_gpu(self, index: int) -> GpuReading:
        scope = f"gpu {index}"
        known = _Target(scope, *self._identities.get(index, ("", "")))
        try:
            handle = self._call(known, "device_handle", self._nvml.device_handle, index)
            if handle is None:
                return GpuReading(index, known.uuid, known.model, up=False)
            uuid = self._call(known, "device_uuid", self._nvml.device_uuid, handle)
            model = self._call(known, "device_name", self._nvml.device_name, handle)
            gpu = _Target(scope, uuid or known.uuid, model or known.model)
            self._identities[index] = (gpu.uuid, gpu.model)
            mode = self._call(gpu, "mig_mode", self._nvml.mig_mode, handle, quiet=frozenset({nvml.NOT_SUPPORTED}))
            mig_enabled: bool | None = mode == 1 if mode is not None else None
            if mode is None and gpu.remembered("mig_mode") in self._unsupported:
                mig_enabled = False  # a GPU without MIG
            gpu = _Target(scope, gpu.uuid, gpu.model, bool(mig_enabled))
            utilization = self._call(gpu, "utilization_percent", self._nvml.utilization_percent, handle)
            memory = self._call(gpu, "memory_info", self._nvml.memory_info, handle, nvml.MEMORY_V2)
            power = self._call(gpu, "power_milliwatts", self._nvml.power_milliwatts, handle)
            processes = self._call(gpu, "compute_process_count", self._nvml.compute_process_count, handle)
            mig_devices = self._read_mig_devices(gpu, handle) if mig_enabled else ()
        except _GpuLost:
            uuid, model = self._identities.get(index, (known.uuid, known.model))
            return GpuReading(index, uuid, model, up=False)
        return GpuReading(
            index=index,
            uuid=gpu.uuid,
            model=gpu.model,
            up=True,
            utilization_ratio=None if utilization is None else utilization / 100.0,
            memory_used_bytes=None if memory is None else memory.used,
            memory_total_bytes=None if memory is None else memory.total,
            power_watts=None if power is None else power / 1000.0,
            processes=processes,
            mig_enabled=mig_enabled,
            mig_devices=mig_devices,
        )

    def _read_mig_devices(self, gpu: _Target, handle: nvml.Handle) -> tuple[MigReading, ...]:
        slots = self._call(gpu, "max_mig_device_count", self._nvml.max_mig_device_count, handle)
        devices: list[MigReading] = []
        for slot in range(slots or 0):
            slot_target = _Target(f"{gpu.scope} mig {slot}", gpu.uuid, gpu.model, mig_enabled=True)
            # NOT_FOUND: an empty slot, no MIG device there.
            mig = self._call(
                slot_target,
                "mig_device_handle",
                self._nvml.mig_device_handle,
                handle,
                slot,
                quiet=frozenset({nvml.NOT_FOUND}),
            )
            if mig is None:
                continue
            uuid = self._call(slot_target, "device_uuid", self._nvml.device_uuid, mig) or ""
            model = self._call(slot_target, "device_name", self._nvml.device_name, mig) or ""
            device = _Target(slot_target.scope, uuid, model, mig_enabled=True)
            memory = self._call(device, "memory_info", self._nvml.memory_info, mig, nvml.MEMORY_V2)
            processes = self._call(device, "compute_process_count", self._nvml.compute_process_count, mig)
            devices.append(
                MigReading(
                    slot=slot,
                    uuid=uuid,
                    model=model,
                    memory_used_bytes=None if memory is None else memory.used,
                    memory_total_bytes=None if memory is None else memory.total,
                    processes=processes,
                )
            )
        return tuple(devices)
