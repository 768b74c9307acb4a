"""NVIDIA GPUs through a fake NVML module; the real NVML only where a GPU exists."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from zhisuan.device.nvidia import NvidiaProvider, gpu_precisions

FakeNVML = Any  # the fake module's type, from conftest


@pytest.mark.parametrize(
    ("cc", "precisions"),
    [
        ((5, 2), ("fp32",)),
        ((6, 0), ("fp32", "fp16")),
        ((6, 1), ("fp32", "fp16", "int8")),
        ((7, 5), ("fp32", "fp16", "int8")),
        ((8, 0), ("fp32", "tf32", "fp16", "bf16", "int8")),
        ((8, 9), ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")),
        ((9, 0), ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")),
        (None, ("fp32",)),
    ],
)
def test_precisions_follow_compute_capability(
    cc: tuple[int, int] | None, precisions: tuple[str, ...]
) -> None:
    assert gpu_precisions(cc) == precisions


def test_discover_two_fake_gpus(two_gpus: FakeNVML) -> None:
    found = NvidiaProvider(nvml=two_gpus).discover()
    assert found.reason is None
    h100, rtx = found.devices
    assert [d.id for d in found.devices] == ["cuda:0", "cuda:1"]
    assert h100.name == "NVIDIA H100 80GB HBM3"
    assert h100.memory_bytes == 80 * 2**30 and h100.memory_type == "HBM"
    assert h100.driver_version == "550.54.15"
    assert h100.precisions == ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
    assert h100.features == ("sm_90",)
    d = h100.details
    assert d["compute_capability"] == "9.0" and d["architecture"] == "Hopper"
    assert d["multiprocessor_count"] == 132 and d["cuda_cores"] == 16896
    assert (d["max_sm_clock_mhz"], d["max_mem_clock_mhz"]) == (1980, 2619)
    assert d["power_limit_w"] == 700.0
    assert (d["pcie_max_generation"], d["pcie_max_width"]) == (5, 16)
    assert d["cuda_driver_version"] == "12.4" and d["pci_bus_id"] == "00000000:17:00.0"
    assert h100.unavailable == {}

    assert rtx.memory_type == "GDDR" and rtx.details["memory_bus_width_bits"] == 384
    assert rtx.precisions == ("fp32", "tf32", "fp16", "bf16", "int8")
    assert rtx.details["architecture"] == "Ampere"
    assert rtx.details["cuda_cores"] is None
    assert rtx.unavailable["cuda_cores"] == "nvmlDeviceGetNumGpuCores: Not Supported"
    assert rtx.details["pcie_current_generation"] == 1  # idle boards drop their link speed
    assert two_gpus.init_count == 0  # every nvmlInit was paired with nvmlShutdown


def test_sensors_read_fake_telemetry_and_not_supported_is_none_with_reason(two_gpus: FakeNVML) -> None:
    sensors = NvidiaProvider(nvml=two_gpus).open_sensors()
    assert [s.index for s in sensors] == [0, 1]
    assert two_gpus.init_count == 2  # each open sensor holds NVML initialised
    h100, rtx = (s.read() for s in sensors)
    assert h100.utilization_pct == 87.0
    assert h100.power_w == 350.0
    assert h100.energy_j == pytest.approx(70.0)  # 1_070_000 - 1_000_000 mJ since the sensor opened
    assert h100.temperature_c == 41.0
    assert h100.clocks_mhz == {"sm": 1755.0, "mem": 2619.0}
    assert h100.memory_used_bytes == 2 * 2**30 and h100.memory_total_bytes == 80 * 2**30
    assert h100.unavailable == {}

    assert rtx.power_w is None  # not 0
    assert rtx.unavailable["power_w"] == "nvmlDeviceGetPowerUsage: Not Supported"
    assert rtx.energy_j is None and "TotalEnergyConsumption" in rtx.unavailable["energy_j"]
    assert rtx.temperature_c == 55.0
    for sensor in sensors:
        sensor.close()
        sensor.close()  # closing twice is harmless
    assert two_gpus.init_count == 0


def test_missing_nvml_library_gives_no_devices_and_a_reason(nvml_fakes: SimpleNamespace) -> None:
    nvml = nvml_fakes.FakeNVML([], init_error=nvml_fakes.LibraryNotFound())
    provider = NvidiaProvider(nvml=nvml)
    found = provider.discover()
    assert found.devices == ()
    assert found.reason and "NVML Shared Library Not Found" in found.reason
    assert provider.open_sensors() == []


def test_the_real_nvml_never_crashes() -> None:
    found = NvidiaProvider().discover()
    if found.devices:
        assert all(d.kind == "cuda" and d.memory_bytes for d in found.devices)
    else:
        assert found.reason  # no GPU here: said why, no exception
        assert NvidiaProvider().open_sensors() == []


@pytest.mark.gpu
def test_a_real_gpu_reports_its_telemetry() -> None:
    found = NvidiaProvider().discover()
    if not found.devices:
        pytest.skip(f"no NVIDIA GPU: {found.reason}")
    gpu = found.devices[0]
    assert gpu.details["compute_capability"] and "fp32" in gpu.precisions
    sensors = NvidiaProvider().open_sensors()
    try:
        sample = sensors[0].read()
    finally:
        for s in sensors:
            s.close()
    assert sample.memory_total_bytes == gpu.memory_bytes
    assert sample.utilization_pct is not None and 0 <= sample.utilization_pct <= 100
    assert sample.power_w is None or sample.power_w > 0
