"""NVIDIA GPUs through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

The NVML module is injectable (``NvidiaProvider(nvml=fake)``), so tests run without a GPU.
Without the package or the driver there are simply no devices, and the discovery says why.
Each NVML query that fails (``NVMLError_NotSupported`` on consumer boards, for instance) leaves
its value ``None`` with the NVML error as the reason.

>>> from zhisuan.device.nvidia import NvidiaProvider
>>> found = NvidiaProvider().discover()
>>> [d.name for d in found.devices] or found.reason  # doctest: +SKIP
'NVML unavailable: NVML Shared Library Not Found (no NVIDIA driver on this machine?)'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zhisuan.device.base import DeviceInfo, DeviceSample, Discovery, SampleBuilder
from zhisuan.precision import Precision, sort_precisions

INSTALL_HINT = "pip install nvidia-ml-py"

# (major, minor) compute capability from which a precision has native arithmetic.
# fp16: 5.3 (Tegra X1) has it, 6.0 (P100) is the first fast datacentre part; 6.1 runs it at 1/64.
# int8: dp4a from 6.1; tf32 and bf16: Ampere 8.0; fp8: Ada 8.9 and Hopper 9.0.
PRECISION_MIN_CC: dict[Precision, tuple[int, int]] = {
    Precision.FP32: (0, 0),
    Precision.FP16: (5, 3),
    Precision.INT8: (6, 1),
    Precision.TF32: (8, 0),
    Precision.BF16: (8, 0),
    Precision.FP8: (8, 9),
}

_ARCHITECTURES = {
    "NVML_DEVICE_ARCH_KEPLER": "Kepler",
    "NVML_DEVICE_ARCH_MAXWELL": "Maxwell",
    "NVML_DEVICE_ARCH_PASCAL": "Pascal",
    "NVML_DEVICE_ARCH_VOLTA": "Volta",
    "NVML_DEVICE_ARCH_TURING": "Turing",
    "NVML_DEVICE_ARCH_AMPERE": "Ampere",
    "NVML_DEVICE_ARCH_ADA": "Ada",
    "NVML_DEVICE_ARCH_HOPPER": "Hopper",
    "NVML_DEVICE_ARCH_BLACKWELL": "Blackwell",
    "NVML_DEVICE_ARCH_RUBIN": "Rubin",
}

# GPUs with a memory bus this wide use stacked HBM; GDDR boards top out at 512 bits.
_HBM_MIN_BUS_BITS = 1024


def gpu_precisions(compute_capability: tuple[int, int] | None) -> tuple[Precision, ...]:
    """Precisions with native arithmetic on a GPU of this compute capability.

    >>> ", ".join(gpu_precisions((8, 0)))
    'fp32, tf32, fp16, bf16, int8'
    """
    if compute_capability is None:
        return (Precision.FP32,)
    return sort_precisions({p for p, cc in PRECISION_MIN_CC.items() if compute_capability >= cc})


def load_nvml(nvml: Any = None) -> tuple[Any, str | None]:
    """``(module, None)`` with NVML initialised, or ``(None, reason)``. Pair with ``nvml.nvmlShutdown()``."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None, f"nvidia-ml-py is not installed ({INSTALL_HINT})"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... all mean "no GPU here"
        return None, f"NVML unavailable: {_text(exc)} (no NVIDIA driver on this machine?)"
    return nvml, None


@dataclass
class _Query:
    """Runs NVML calls; a failing one yields ``None`` and records ``key -> reason``."""

    nvml: Any
    unavailable: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str, function: str, *args: Any) -> Any:
        fn = getattr(self.nvml, function, None)
        if fn is None:
            self.unavailable[key] = f"{function} is not in this nvidia-ml-py version"
            return None
        try:
            return fn(*args)
        except Exception as exc:  # each NVML error type is a subclass of nvml.NVMLError
            if not isinstance(exc, getattr(self.nvml, "NVMLError", Exception)):
                raise
            self.unavailable[key] = f"{function}: {_text(exc)}"
            return None


@dataclass(frozen=True)
class NvidiaProvider:
    kind: str = "cuda"
    default: bool = True
    nvml: Any = field(default=None, compare=False)  # a pynvml-like module; None: import pynvml

    def discover(self) -> Discovery:
        nvml, reason = load_nvml(self.nvml)
        if nvml is None:
            return Discovery(self.kind, (), reason)
        try:
            system = _Query(nvml)
            driver = _str(system("driver_version", "nvmlSystemGetDriverVersion"))
            cuda = system("cuda_driver_version", "nvmlSystemGetCudaDriverVersion")
            nvml_version = _str(system("nvml_version", "nvmlSystemGetNVMLVersion"))
            count = system("count", "nvmlDeviceGetCount")
            if count is None:
                return Discovery(self.kind, (), system.unavailable["count"])
            stack = {
                "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}"
                if isinstance(cuda, int)
                else None,
                "nvml_version": nvml_version,
            }
            devices = tuple(_describe(nvml, i, driver, stack, dict(system.unavailable)) for i in range(count))
        finally:
            nvml.nvmlShutdown()
        return Discovery(self.kind, devices)

    def open_sensors(self) -> list[NvidiaSensor]:
        nvml, _reason = load_nvml(self.nvml)
        if nvml is None:
            return []
        q = _Query(nvml)
        count = q("count", "nvmlDeviceGetCount") or 0
        if not count:
            nvml.nvmlShutdown()
            return []
        # NVML counts nvmlInit calls; each sensor shuts down its own, the first one is ours.
        sensors = []
        for i in range(count):
            nvml.nvmlInit()
            try:
                sensors.append(NvidiaSensor(nvml, i))
            except getattr(nvml, "NVMLError", Exception):  # no handle: this GPU is not sampled
                nvml.nvmlShutdown()
        nvml.nvmlShutdown()
        return sensors


def _describe(
    nvml: Any, index: int, driver: str | None, stack: dict[str, Any], unavailable: dict[str, str]
) -> DeviceInfo:
    q = _Query(nvml, unavailable)
    handle = q("handle", "nvmlDeviceGetHandleByIndex", index)
    if handle is None:  # a GPU that fell off the bus, or one this user may not open
        return DeviceInfo(
            "cuda", index, f"NVIDIA GPU {index}", None, None, (), ("fp32",), driver, {**stack}, unavailable
        )
    name = _str(q("name", "nvmlDeviceGetName", handle)) or f"NVIDIA GPU {index}"
    memory = q("memory_bytes", "nvmlDeviceGetMemoryInfo", handle)
    cc = q("compute_capability", "nvmlDeviceGetCudaComputeCapability", handle)
    cc = (int(cc[0]), int(cc[1])) if cc is not None else None
    attributes = q("multiprocessor_count", "nvmlDeviceGetAttributes_v2", handle)
    sm_count = getattr(attributes, "multiprocessorCount", None)
    bus_bits = q("memory_bus_width_bits", "nvmlDeviceGetMemoryBusWidth", handle)
    memory_type = None
    if bus_bits:
        memory_type = "HBM" if bus_bits >= _HBM_MIN_BUS_BITS else "GDDR"
    else:
        unavailable["memory_type"] = (
            "NVML has no memory type; it is inferred from the bus width, which was not readable"
        )
    power_limit_mw = q("power_limit_w", "nvmlDeviceGetPowerManagementLimit", handle)
    enforced_mw = q("enforced_power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", handle)
    arch = q("architecture", "nvmlDeviceGetArchitecture", handle)
    arch_name = next(
        (label for const, label in _ARCHITECTURES.items() if getattr(nvml, const, object()) == arch), None
    )
    pci = q("pci_bus_id", "nvmlDeviceGetPciInfo", handle)
    details = {
        "uuid": _str(q("uuid", "nvmlDeviceGetUUID", handle)),
        "pci_bus_id": _str(getattr(pci, "busId", None)),
        "architecture": arch_name,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "multiprocessor_count": sm_count,
        "cuda_cores": q("cuda_cores", "nvmlDeviceGetNumGpuCores", handle),
        "memory_bus_width_bits": bus_bits,
        "memory_type_source": f"{bus_bits}-bit memory bus" if bus_bits else None,
        "max_sm_clock_mhz": q("max_sm_clock_mhz", "nvmlDeviceGetMaxClockInfo", handle, nvml.NVML_CLOCK_SM),
        "max_mem_clock_mhz": q("max_mem_clock_mhz", "nvmlDeviceGetMaxClockInfo", handle, nvml.NVML_CLOCK_MEM),
        "power_limit_w": power_limit_mw / 1000 if power_limit_mw is not None else None,
        "enforced_power_limit_w": enforced_mw / 1000 if enforced_mw is not None else None,
        "pcie_max_generation": q("pcie_max_generation", "nvmlDeviceGetMaxPcieLinkGeneration", handle),
        "pcie_max_width": q("pcie_max_width", "nvmlDeviceGetMaxPcieLinkWidth", handle),
        "pcie_current_generation": q(
            "pcie_current_generation", "nvmlDeviceGetCurrPcieLinkGeneration", handle
        ),
        "pcie_current_width": q("pcie_current_width", "nvmlDeviceGetCurrPcieLinkWidth", handle),
        **stack,
    }
    if cc is None:
        unavailable["precisions"] = "compute capability unknown; only fp32 is assumed"
    return DeviceInfo(
        kind="cuda",
        index=index,
        name=name,
        memory_bytes=int(memory.total) if memory is not None else None,
        memory_type=memory_type,
        features=(f"sm_{cc[0]}{cc[1]}",) if cc else (),
        precisions=gpu_precisions(cc),
        driver_version=driver,
        details=details,
        unavailable=unavailable,
    )


class NvidiaSensor:
    """One GPU's utilisation, memory, power, energy (since opening), temperature and clocks."""

    kind = "cuda"

    def __init__(self, nvml: Any, index: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self.index = index
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        q = _Query(nvml)
        self.name = _str(q("name", "nvmlDeviceGetName", self._handle)) or f"NVIDIA GPU {index}"
        self._energy0_mj = q("energy_j", "nvmlDeviceGetTotalEnergyConsumption", self._handle)
        self._closed = False

    def read(self) -> DeviceSample:
        nvml, h = self._nvml, self._handle
        q = _Query(nvml)
        b = SampleBuilder()
        util = q("utilization_pct", "nvmlDeviceGetUtilizationRates", h)
        b.values["utilization_pct"] = float(util.gpu) if util is not None else None
        mem = q("memory_used_bytes", "nvmlDeviceGetMemoryInfo", h)
        if mem is not None:
            b.values["memory_used_bytes"] = int(mem.used)
            b.values["memory_total_bytes"] = int(mem.total)
        else:
            q.unavailable["memory_total_bytes"] = q.unavailable["memory_used_bytes"]
        power_mw = q("power_w", "nvmlDeviceGetPowerUsage", h)
        b.values["power_w"] = power_mw / 1000 if power_mw is not None else None
        if self._energy0_mj is None:
            # re-using the first reason keeps "not supported" visible on every sample
            q.unavailable["energy_j"] = (
                "nvmlDeviceGetTotalEnergyConsumption was not readable when the sensor opened"
            )
        else:
            energy_mj = q("energy_j", "nvmlDeviceGetTotalEnergyConsumption", h)
            b.values["energy_j"] = (energy_mj - self._energy0_mj) / 1000 if energy_mj is not None else None
        temp = q("temperature_c", "nvmlDeviceGetTemperature", h, nvml.NVML_TEMPERATURE_GPU)
        b.values["temperature_c"] = float(temp) if temp is not None else None
        clocks = {}
        for domain, const in (("sm", nvml.NVML_CLOCK_SM), ("mem", nvml.NVML_CLOCK_MEM)):
            mhz = q(f"clocks_mhz.{domain}", "nvmlDeviceGetClockInfo", h, const)
            if mhz is not None:
                clocks[domain] = float(mhz)
        b.unavailable.update(q.unavailable)
        return b.build(self.kind, self.index, self.name, clocks)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._nvml.nvmlShutdown()


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


PROVIDER = NvidiaProvider()
