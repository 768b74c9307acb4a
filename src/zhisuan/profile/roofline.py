"""The device's roofline: peak FP32 compute and memory bandwidth, theoretical and measured.

*Theoretical* peak = cores x clock x FP32 SIMD lanes x 2 (an FMA is 2 FLOPs) x FMA units per
core. The number of FMA units is not readable from the OS; it is **assumed to be 2** (true of
recent Intel and AMD server cores; AMD Zen 4 runs AVX-512 as 2 x 256 bits, which halves the
real figure), and the label says so. Clock is the cpufreq maximum when known, else the current
clock (``/proc/cpuinfo`` in a VM), also labelled.

*Measured* (used for the roofline): the best of a few FP32 matmuls (torch, all threads) and a
STREAM-like triad ``a = b + s*c`` (torch ``add(alpha=)``: one pass, 3 arrays x 4 bytes per
element, 64 MiB per array so it does not fit in cache). Measured once per process (~2-3 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from zhisuan.results import Record

__all__ = ["DevicePeaks", "device_peaks", "theoretical_peak_gflops"]

ASSUMED_FMA_UNITS = 2
_MATMUL_N = 1024
_TRIAD_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class DevicePeaks(Record):
    peak_gflops_measured: float
    bandwidth_gbps_measured: float
    peak_gflops_theoretical: float | None
    theoretical_basis: str
    method: str
    threads: int

    @property
    def ridge_point(self) -> float:
        """FLOPs per byte where the measured compute and bandwidth ceilings meet."""
        return self.peak_gflops_measured / self.bandwidth_gbps_measured

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        how = {key: fields.pop(key) for key in ("method", "threads")}
        return {**fields, "ridge_point": self.ridge_point, **how}


def _flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _clock_mhz() -> tuple[float | None, str]:
    try:
        import psutil

        freq = psutil.cpu_freq()
    except Exception:  # no cpufreq in this kernel/VM
        freq = None
    if freq is not None and freq.max:
        return float(freq.max), "cpufreq max"
    if freq is not None and freq.current:
        return float(freq.current), "current clock (no cpufreq max in this VM)"
    return None, "unknown clock"


def theoretical_peak_gflops(cores: int, flags: set[str] | None = None) -> tuple[float | None, str]:
    """(GFLOP/s, how it was computed) for FP32 on ``cores`` cores; None when the clock is unknown.

    >>> theoretical_peak_gflops(0)[0] is None
    True
    """
    flags = _flags() if flags is None else flags
    mhz, clock_basis = _clock_mhz()
    if not cores or mhz is None:
        return None, "clock or core count unknown"
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    else:
        lanes, isa = 4, "SSE/NEON"
    fma = 2 if "fma" in flags or "avx512f" in flags else 1
    per_cycle = lanes * fma * ASSUMED_FMA_UNITS
    gflops = cores * mhz / 1000 * per_cycle
    basis = (f"theoretical: {cores} cores x {mhz / 1000:.2f} GHz ({clock_basis}) x {lanes} FP32 lanes ({isa}) x "
             f"{fma} (FMA) x {ASSUMED_FMA_UNITS} FMA units per core (assumed) = {per_cycle} FLOP/cycle/core")
    return gflops, basis


def _theoretical_fp32(cores: int) -> tuple[float | None, str]:
    """EV-2's theoretical FP32 peak of the host CPU (measured clock, per-core FMA units by
    microarchitecture, see :mod:`zhisuan.device.peak`); the simpler estimate above if that fails."""
    try:
        from zhisuan.device.cpu import CpuProvider
        from zhisuan.device.peak import theoretical_peak

        device = CpuProvider().discover().devices[0]
        estimate = theoretical_peak(device, "fp32", cores=cores)
    except Exception as exc:  # a peak is context for the roofline, never a reason to fail a profile
        gflops, basis = theoretical_peak_gflops(cores)
        return gflops, f"{basis} (zhisuan.device.peak failed: {exc})"
    if estimate.ops_per_s is None:
        return theoretical_peak_gflops(cores)
    assumed = f"; assumed: {'; '.join(estimate.assumptions)}" if estimate.assumptions else ""
    return estimate.ops_per_s / 1e9, f"theoretical: {estimate.formula}{assumed}"


@cache
def device_peaks(threads: int | None = None) -> DevicePeaks:
    """Measured FP32 matmul GFLOP/s and triad GB/s on this machine (cached per process)."""
    import torch

    from zhisuan.device.cpu import usable_cpus

    cores = usable_cpus()
    threads = threads or cores
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(_MATMUL_N, _MATMUL_N)
        b = torch.randn(_MATMUL_N, _MATMUL_N)
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        gflops = 2 * _MATMUL_N**3 / best / 1e9
        x = torch.empty(_TRIAD_ELEMENTS)
        y = torch.randn(_TRIAD_ELEMENTS)
        z = torch.randn(_TRIAD_ELEMENTS)
        torch.add(y, z, alpha=3.0, out=x)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            torch.add(y, z, alpha=3.0, out=x)
            best = min(best, time.perf_counter() - start)
        bandwidth = 3 * 4 * _TRIAD_ELEMENTS / best / 1e9
    finally:
        torch.set_num_threads(previous)
    theoretical, basis = _theoretical_fp32(cores)
    method = (f"best of 5: torch.mm {_MATMUL_N}^3 FP32; triad a=b+3c over {_TRIAD_ELEMENTS} FP32 elements "
              f"(12 bytes/element); {threads} threads")
    return DevicePeaks(gflops, bandwidth, theoretical, basis, method, threads)
