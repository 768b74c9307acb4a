"""Fakes for device tests: an NVML module with scripted GPUs, and sysfs/powercap trees in tmp_path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


class NVMLError(Exception):
    """Mirrors pynvml: one subclass per NVML return code, ``str()`` is NVML's own message."""

    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message


class NVMLError_NotSupported(NVMLError):
    message = "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    message = "NVML Shared Library Not Found"


class NVMLError_Uninitialized(NVMLError):
    message = "Uninitialized"


@dataclass
class FakeGpu:
    """One scripted GPU; a field holding an exception makes that NVML query raise it."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    bus_id: str = "00000000:17:00.0"
    memory_total: int = 80 * 2**30
    memory_used: Any = 2 * 2**30
    cc: Any = (9, 0)
    sm_count: Any = 132
    cores: Any = 16896
    bus_width: Any = 5120
    max_sm_mhz: Any = 1980
    max_mem_mhz: Any = 2619
    power_limit_mw: Any = 700_000
    power_mw: Any = 350_000
    energy_mj: list[int] = field(default_factory=lambda: [1_000_000])  # successive reads
    temperature: Any = 41
    sm_mhz: Any = 1755
    mem_mhz: Any = 2619
    util_gpu: Any = 87
    pcie: tuple[int, int, int, int] = (5, 16, 5, 16)
    arch: int = 9


class FakeNVML:
    """Stands in for the ``pynvml`` module: the same function names, scripted values."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_ARCH_AMPERE = 7
    NVML_DEVICE_ARCH_ADA = 8
    NVML_DEVICE_ARCH_HOPPER = 9
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported

    def __init__(self, gpus: list[FakeGpu], *, init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.init_count = 0

    # library lifecycle (NVML counts init calls)
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        if self.init_count == 0:
            raise NVMLError_Uninitialized()
        self.init_count -= 1

    def _check(self) -> None:
        if self.init_count == 0:
            raise NVMLError_Uninitialized()

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "12.550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        return self.gpus[index]

    # per-device queries
    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetPciInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(busId=h.bus_id.encode())

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        used = _value(h.memory_used)
        return SimpleNamespace(total=h.memory_total, used=used, free=h.memory_total - used)

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeGpu) -> tuple[int, int]:
        return _value(h.cc)

    def nvmlDeviceGetAttributes_v2(self, h: FakeGpu) -> Any:
        return SimpleNamespace(multiprocessorCount=_value(h.sm_count))

    def nvmlDeviceGetNumGpuCores(self, h: FakeGpu) -> int:
        return _value(h.cores)

    def nvmlDeviceGetMemoryBusWidth(self, h: FakeGpu) -> int:
        return _value(h.bus_width)

    def nvmlDeviceGetMaxClockInfo(self, h: FakeGpu, clock: int) -> int:
        return _value(h.max_sm_mhz if clock == self.NVML_CLOCK_SM else h.max_mem_mhz)

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeGpu) -> int:
        return _value(h.power_limit_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return _value(h.power_limit_mw)

    def nvmlDeviceGetArchitecture(self, h: FakeGpu) -> int:
        return h.arch

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: FakeGpu) -> int:
        return h.pcie[0]

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: FakeGpu) -> int:
        return h.pcie[1]

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: FakeGpu) -> int:
        return h.pcie[2]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: FakeGpu) -> int:
        return h.pcie[3]

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return SimpleNamespace(gpu=_value(h.util_gpu), memory=10)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return _value(h.power_mw)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        if isinstance(h.energy_mj, Exception):
            raise h.energy_mj
        return h.energy_mj.pop(0) if len(h.energy_mj) > 1 else h.energy_mj[0]

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return _value(h.temperature)

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, clock: int) -> int:
        return _value(h.sm_mhz if clock == self.NVML_CLOCK_SM else h.mem_mhz)


def _value(v: Any) -> Any:
    if isinstance(v, Exception):
        raise v
    return v


@pytest.fixture
def two_gpus() -> FakeNVML:
    """An H100, and a consumer Ampere board that reports neither power nor energy nor core count."""
    consumer = FakeGpu(
        name="NVIDIA GeForce RTX 3090",
        uuid="GPU-99",
        bus_id="00000000:65:00.0",
        memory_total=24 * 2**30,
        cc=(8, 6),
        sm_count=82,
        cores=NVMLError_NotSupported(),
        bus_width=384,
        power_limit_mw=350_000,
        power_mw=NVMLError_NotSupported(),
        energy_mj=NVMLError_NotSupported(),  # type: ignore[arg-type]
        temperature=55,
        arch=7,
        pcie=(4, 16, 1, 16),
    )
    return FakeNVML([FakeGpu(energy_mj=[1_000_000, 1_070_000]), consumer])


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Create ``root/<relative path>`` files with the given text."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Any:
    """``tree(files)`` writes a fake sysfs tree under ``tmp_path`` and returns its root."""
    return lambda files: write_tree(tmp_path, files)


@pytest.fixture
def nvml_fakes() -> SimpleNamespace:
    """The fake NVML classes, for tests that script their own GPUs or errors."""
    return SimpleNamespace(
        FakeNVML=FakeNVML,
        FakeGpu=FakeGpu,
        NotSupported=NVMLError_NotSupported,
        LibraryNotFound=NVMLError_LibraryNotFound,
    )
