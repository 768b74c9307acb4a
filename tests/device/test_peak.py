"""Theoretical peaks against hand-computed values for fake CPUs and GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zhisuan.device.base import DeviceInfo
from zhisuan.device.clock import MeasuredClock
from zhisuan.device.peak import host_link_peak, memory_bandwidth_peak, theoretical_peak, theoretical_peaks


def cpu(flags: list[str], *, vendor: str = "GenuineIntel", name: str = "Intel Xeon Gold 6338", cores: int = 4,
        family: int | None = 6, model: int | None = 106, current_mhz: float | None = 2000.0) -> DeviceInfo:
    details: dict[str, Any] = {
        "vendor": vendor, "model_name": name, "physical_cores": cores, "threads": 2 * cores, "flags": flags,
        "frequency": {"current_mhz": current_mhz, "min_mhz": None, "max_mhz": None},
        "cpu_family": family, "cpu_model": model,
    }
    return DeviceInfo("cpu", 0, name, 1 << 34, None, (), ("fp32",), None, details=details)


def cpufreq(tmp_path: Path, khz: int, cpus: int = 2) -> Path:
    for i in range(cpus):
        d = tmp_path / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "cpuinfo_max_freq").write_text(f"{khz}\n")
    return tmp_path


AVX512 = ["sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]


def test_intel_avx512_peaks_by_hand(tmp_path: Path) -> None:
    root = cpufreq(tmp_path, 3_000_000)  # 3.0 GHz max boost
    device = cpu(AVX512)
    fp32 = theoretical_peak(device, "fp32", cpu_root=root)
    # 4 cores x 3.0 GHz x (2 FMA units x 16 lanes x 2)
    assert fp32.ops_per_s == pytest.approx(4 * 3.0e9 * 64)
    assert fp32.unit == "FLOP/s" and fp32.native
    assert "cpuinfo_max_freq" in (fp32.clock_source or "")
    assert any("two 512-bit FMA units" in a for a in fp32.assumptions)
    # VDPBF16PS: 2 x 16 lanes x 4; VPDPBUSD: 2 x 16 x 8
    assert theoretical_peak(device, "bf16", cpu_root=root).ops_per_s == pytest.approx(4 * 3.0e9 * 128)
    int8 = theoretical_peak(device, "int8", cpu_root=root)
    assert int8.ops_per_s == pytest.approx(4 * 3.0e9 * 256) and int8.unit == "OP/s"
    # no avx512_fp16: converted, so the FP32 peak, and not native
    fp16 = theoretical_peak(device, "fp16", cpu_root=root)
    assert fp16.ops_per_s == fp32.ops_per_s and not fp16.native
    assert theoretical_peak(device, "tf32", cpu_root=root).ops_per_s is None


def test_amx_and_core_limit(tmp_path: Path) -> None:
    root = cpufreq(tmp_path, 2_000_000)
    device = cpu([*AVX512, "amx_tile", "amx_bf16", "amx_int8"], cores=8)
    bf16 = theoretical_peak(device, "bf16", cpu_root=root, cores=2)
    assert bf16.ops_per_s == pytest.approx(2 * 2.0e9 * 1024)
    assert bf16.units == 2 and any("2 of 8 physical cores" in a for a in bf16.assumptions)
    assert theoretical_peak(device, "int8", cpu_root=root).ops_per_s == pytest.approx(8 * 2.0e9 * 2048)


def test_amd_avx2_zen3_and_zen4(tmp_path: Path) -> None:
    root = cpufreq(tmp_path, 3_500_000)
    zen3 = cpu(["sse2", "avx", "avx2", "fma"], vendor="AuthenticAMD", name="AMD EPYC 7763", cores=8, family=25,
               model=1)
    assert theoretical_peak(zen3, "fp32", cpu_root=root).ops_per_s == pytest.approx(8 * 3.5e9 * 32)
    # no VNNI: three instructions per 4 products per lane -> 2 x 8 x 8 / 3
    int8 = theoretical_peak(zen3, "int8", cpu_root=root)
    assert int8.ops_per_s == pytest.approx(8 * 3.5e9 * 2 * 8 * 8 / 3) and not int8.native
    assert theoretical_peak(zen3, "bf16", cpu_root=root).native is False
    zen4 = cpu(AVX512, vendor="AuthenticAMD", name="AMD EPYC 9654", cores=8, family=25, model=17)
    fp32 = theoretical_peak(zen4, "fp32", cpu_root=root)
    assert fp32.ops_per_s == pytest.approx(8 * 3.5e9 * 32)  # AVX-512 on 256-bit pipes
    assert fp32.details["microarchitecture"] == "AMD Zen 4"
    zen5 = cpu(AVX512, vendor="AuthenticAMD", name="AMD EPYC 9755", cores=8, family=26, model=2)
    assert theoretical_peak(zen5, "fp32", cpu_root=root).ops_per_s == pytest.approx(8 * 3.5e9 * 64)


def test_clock_falls_back_to_measured_then_cpuinfo(tmp_path: Path) -> None:
    device = cpu(AVX512, current_mhz=2000.0)
    empty = tmp_path / "no-cpufreq"
    empty.mkdir()
    measured = MeasuredClock(3000.0, 4, (3000.0,) * 4)
    peak = theoretical_peak(device, "fp32", cpu_root=empty, measured_clock=measured)
    assert peak.clock_mhz == 3000.0 and "measured" in (peak.clock_source or "")
    assert peak.details["measured_clock"]["mhz"] == 3000.0
    nominal = theoretical_peak(device, "fp32", cpu_root=empty, measure_clock=False)
    assert nominal.clock_mhz == 2000.0 and "/proc/cpuinfo" in (nominal.clock_source or "")
    unknown = theoretical_peak(cpu(AVX512, current_mhz=None), "fp32", cpu_root=empty, measure_clock=False)
    assert unknown.ops_per_s is None and unknown.reason


def gpu(cc: str, sms: int, clock: int, **extra: Any) -> DeviceInfo:
    details = {"compute_capability": cc, "multiprocessor_count": sms, "max_sm_clock_mhz": clock, **extra}
    return DeviceInfo("cuda", 0, f"GPU {cc}", 80 << 30, "HBM", (), ("fp32",), "550", details=details)


def test_h100_peaks_by_hand() -> None:
    h100 = gpu("9.0", 132, 1980)
    peaks = theoretical_peaks(h100)
    assert peaks["fp16"].ops_per_s == pytest.approx(132 * 1980e6 * 4096)  # ~1070 TFLOP/s dense
    assert peaks["bf16"].ops_per_s == peaks["fp16"].ops_per_s
    assert peaks["tf32"].ops_per_s == pytest.approx(132 * 1980e6 * 2048)
    assert peaks["fp32"].ops_per_s == pytest.approx(132 * 1980e6 * 256)
    assert peaks["fp8"].ops_per_s == pytest.approx(132 * 1980e6 * 8192)
    assert peaks["int8"].unit == "OP/s" and peaks["int8"].ops_per_s == pytest.approx(132 * 1980e6 * 8192)
    # at NVIDIA's datasheet clock the table gives the datasheet's 989.4 TFLOP/s
    assert theoretical_peak(gpu("9.0", 132, 1830), "fp16").tflops == pytest.approx(989.4, abs=0.1)


def test_a100_peaks_and_missing_precision() -> None:
    a100 = gpu("8.0", 108, 1410)
    assert theoretical_peak(a100, "fp16").tflops == pytest.approx(311.9, abs=0.1)
    assert theoretical_peak(a100, "tf32").tflops == pytest.approx(155.9, abs=0.1)
    assert theoretical_peak(a100, "int8").tflops == pytest.approx(623.8, abs=0.1)
    assert theoretical_peak(a100, "fp32").tflops == pytest.approx(19.5, abs=0.1)
    fp8 = theoretical_peak(a100, "fp8")
    assert fp8.ops_per_s is None and "FP8" in (fp8.reason or "")
    assert theoretical_peak(gpu("8.0", 0, 1410), "fp16").reason
    assert "compute capability" in (theoretical_peak(gpu("1.0", 1, 1), "fp32").reason or "")


def test_memory_and_link_peaks() -> None:
    h100 = gpu("9.0", 132, 1980, max_mem_clock_mhz=2619, memory_bus_width_bits=5120, pcie_max_generation=5,
               pcie_max_width=16)
    assert memory_bandwidth_peak(h100).gbps == pytest.approx(2 * 2619e6 * 5120 / 8 / 1e9)  # ~3352 GB/s
    assert host_link_peak(h100).gbps == pytest.approx(3.938 * 16)
    assert memory_bandwidth_peak(cpu(AVX512)).gbps is None
    assert "DMI" in (memory_bandwidth_peak(cpu(AVX512)).reason or "")
