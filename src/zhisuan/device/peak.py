"""Theoretical peak compute per precision: the reference EV-2's measured GEMM is compared with.

A peak is ``units x clock x operations per unit per cycle``; an FMA counts as 2 operations, and
every figure is *dense* (no 2:4 sparsity). What cannot be read from the machine is an explicit
assumption, recorded with the figure (``PeakEstimate.assumptions``) and shown in the report.

**CPU**: physical cores x clock x FLOP/cycle/core. FLOP/cycle comes from the ISA flags and a
per-microarchitecture table of *FMA pipes x effective datapath width*, because the number of FMA
units is not discoverable (Intel Xeon Gold 6xxx/Platinum have two 512-bit FMA units, Silver,
Bronze and some Gold 5xxx one; AMD Zen 4 runs AVX-512 on 256-bit pipes, Zen 5 server parts on
512-bit pipes). Per pipe and cycle, with ``L = width / 32`` fp32 lanes:

========================  =====================================  =================
precision                 instruction                            ops / pipe / cycle
========================  =====================================  =================
fp32                      VFMADD (AVX2 / AVX-512), NEON FMLA     2 L
bf16 (avx512_bf16)        VDPBF16PS (2 products + add per lane)  4 L
fp16 (avx512_fp16)        VFMADDPH                               4 L
int8 (avx512_vnni)        VPDPBUSD (4 products + add per lane)   8 L
int8 (avx_vnni only)      VEX VPDPBUSD, 256-bit                  8 x 8
int8 without VNNI         VPMADDUBSW + VPMADDWD + VPADDD         8 L / 3
bf16 / int8 / fp16 (AMX)  TDPBF16PS / TDPBUSD / TDPFP16PS        1024 / 2048 / 1024 per core
========================  =====================================  =================

A precision without native arithmetic (BF16 on a CPU without avx512_bf16, FP16 without
avx512_fp16) gets the FP32 peak, since the best a library can do is convert to FP32.

The clock is, in this order: cpufreq ``cpuinfo_max_freq`` (the maximum boost clock), the
maximum psutil reports, the effective clock *measured* with all used cores busy
(:func:`measure_cpu_clock_mhz`, a dependent integer-add chain: one add per cycle), or
``/proc/cpuinfo`` "cpu MHz" (the current clock; in a VM usually the nominal TSC frequency, while
the cores really run at their boost clock, so the peak would be too low). Heavy AVX-512 code may
run below the maximum clock (frequency licences); the peak does not model that.

**NVIDIA GPU**: SMs x max SM clock (NVML) x dense ops per SM per cycle by compute capability,
from NVIDIA's architecture whitepapers (datasheet dense peak / (SMs x boost clock)). ``fp32`` is
the CUDA-core rate; ``tf32``, ``fp16``, ``bf16``, ``int8``, ``fp8`` are tensor-core rates with
FP32 accumulation at the datacentre / professional rate (GeForce boards run FP16/BF16 with FP32
accumulation at half this rate on Ampere and Ada). NVIDIA's own datasheets often use a lower
boost clock than NVML's maximum, so this peak can be a few percent above the datasheet figure.

>>> from zhisuan.device.base import DeviceInfo
>>> h100 = DeviceInfo("cuda", 0, "H100", None, "HBM", (), ("fp32",), None,
...                   details={"compute_capability": "9.0", "multiprocessor_count": 132,
...                            "max_sm_clock_mhz": 1830})
>>> round(theoretical_peak(h100, "fp16").tflops, 1)
989.4
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan.device.clock import MeasuredClock, cached_cpu_clock
from zhisuan.precision import Precision
from zhisuan.results import Record


@dataclass(frozen=True)
class PeakEstimate(Record):
    """The theoretical dense peak of one device at one precision, or why there is none.

    ``ops_per_s`` is FLOP/s for floating-point precisions and OP/s for integer ones; ``None``
    with a ``reason`` when the device has no such arithmetic or its data is unknown.
    """

    precision: Precision | str  # a str only for a name that is not a precision (no estimate, a reason)
    ops_per_s: float | None
    units: int | None  # cores or SMs counted
    clock_mhz: float | None
    ops_per_cycle_per_unit: float | None
    formula: str
    clock_source: str | None
    native: bool
    assumptions: tuple[str, ...] = ()
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return "OP/s" if self.precision.startswith("int") else "FLOP/s"

    @property
    def tflops(self) -> float | None:
        """The peak in TFLOP/s (TOP/s for integer precisions)."""
        return self.ops_per_s / 1e12 if self.ops_per_s is not None else None

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        return {"precision": fields.pop("precision"), "ops_per_s": fields.pop("ops_per_s"), "unit": self.unit,
                **fields}


def theoretical_peak(
    device: Any,
    precision: Precision | str,
    *,
    cores: int | None = None,
    cpu_root: str | Path = "/sys/devices/system/cpu",
    cpuinfo_path: str | Path = "/proc/cpuinfo",
    measured_clock: MeasuredClock | None = None,
    measure_clock: bool = True,
) -> PeakEstimate:
    """The dense peak of ``device`` (a :class:`~zhisuan.device.base.DeviceInfo`) at ``precision``.

    ``cores`` limits a CPU peak to the cores a measurement used (default: every physical core).
    When cpufreq has no maximum, the CPU clock is ``measured_clock`` or, with ``measure_clock``,
    measured once per process (:func:`cached_cpu_clock`); otherwise "cpu MHz" is used.
    """
    if precision not in tuple(Precision):
        return _none(precision, f"unknown precision {precision!r}")
    precision = Precision(precision)
    if device.kind == "cpu":
        return cpu_peak(device, precision, cores=cores, cpu_root=cpu_root, cpuinfo_path=cpuinfo_path,
                        measured_clock=measured_clock, measure_clock=measure_clock)
    if device.kind == "cuda":
        return nvidia_peak(device, precision)
    return _none(precision, f"no peak model for {device.kind} devices")


def theoretical_peaks(device: Any, **kwargs: Any) -> dict[Precision, PeakEstimate]:
    """:func:`theoretical_peak` for every precision zhisuan knows."""
    return {p: theoretical_peak(device, p, **kwargs) for p in Precision}


def _none(precision: Precision | str, reason: str, **kw: Any) -> PeakEstimate:
    return PeakEstimate(precision, None, None, None, None, "", None, False, reason=reason, **kw)


# --- CPU ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuCore:
    """What one core can issue per cycle: FMA pipes and their effective width in bits."""

    family: str
    fma_pipes: int
    width_bits: int  # effective datapath per pipe and cycle (AVX-512 on 256-bit pipes: 256)
    assumption: str


def cpu_core_model(
    vendor: str | None, model_name: str, flags: set[str], cpu_family: int | None, cpu_model: int | None = None
) -> CpuCore:
    """The FMA pipes and datapath width assumed for this CPU (documented per family).

    ``cpu_family`` / ``cpu_model`` are the CPUID family and model ("cpu family", "model" in
    ``/proc/cpuinfo``): AMD family 0x17 is Zen 1/Zen+ below model 0x30 and Zen 2 above, 0x19 is
    Zen 3/4, 0x1A is Zen 5.
    """
    vendor = vendor or ""
    if "avx512f" in flags:
        if vendor == "AuthenticAMD":
            if cpu_family is not None and cpu_family >= 0x1A and "EPYC" in model_name.upper():
                return CpuCore("AMD Zen 5 server", 2, 512, "AMD Zen 5 server (EPYC) cores: two 512-bit "
                               "FMA pipes (full-width AVX-512); Zen 5 client parts use 256-bit pipes")
            if cpu_family is not None and cpu_family >= 0x1A:
                return CpuCore("AMD Zen 5 client", 2, 256, "AMD Zen 5 client cores: AVX-512 on two "
                               "256-bit FMA pipes (server parts have 512-bit pipes)")
            return CpuCore("AMD Zen 4", 2, 256, "AMD Zen 4: AVX-512 executed on two 256-bit FMA "
                           "pipes (each 512-bit operation takes two passes)")
        return CpuCore("Intel AVX-512", 2, 512, "Intel AVX-512 core with two 512-bit FMA units (Xeon "
                       "Gold 6xxx/8xxx, Platinum, 4th gen+); Xeon Silver/Bronze, some Gold 5xxx and "
                       "client parts have one, which halves this peak")
    if "avx2" in flags and "fma" in flags:
        if vendor == "AuthenticAMD" and cpu_family == 0x17 and cpu_model is not None and cpu_model < 0x30:
            return CpuCore("AMD Zen 1", 2, 128, "AMD Zen 1: two 128-bit FMA pipes (256-bit AVX split)")
        return CpuCore("x86 AVX2+FMA", 2, 256, "x86 core with AVX2 and two 256-bit FMA units (Intel "
                       "Haswell and later, AMD Zen 2 and later); Atom/E-cores have fewer")
    if "avx" in flags:
        return CpuCore("x86 AVX", 1, 256, "x86 AVX without FMA (Sandy/Ivy Bridge): one 256-bit add "
                       "and one 256-bit multiply per cycle, counted as one FMA-equivalent pipe")
    if "asimd" in flags:
        return CpuCore("Arm NEON", 2, 128, "Arm core with two 128-bit NEON FMA pipes (Neoverse N1/N2, "
                       "Cortex-A7x); Neoverse V1/V2 have four, which doubles this peak")
    if "sse2" in flags:
        return CpuCore("x86 SSE", 1, 128, "x86 SSE2: one 128-bit add and one multiply per cycle")
    return CpuCore("unknown", 1, 64, "unknown ISA: one scalar FMA per cycle assumed")


def cpu_ops_per_cycle(core: CpuCore, flags: set[str], precision: Precision) -> tuple[float | None, bool, str]:
    """(ops per core per cycle, native?, how) of ``precision`` on a core of this model."""
    lanes32 = core.width_bits / 32
    fp32 = core.fma_pipes * lanes32 * 2
    if precision is Precision.FP32:
        return fp32, True, f"{core.fma_pipes} FMA pipes x {core.width_bits // 32} fp32 lanes x 2 (FMA)"
    if precision is Precision.BF16:
        if "amx_bf16" in flags:
            return 1024.0, True, "AMX TDPBF16PS: 1024 BF16 FLOP per core per cycle"
        if "avx512_bf16" in flags or "bf16" in flags:
            return core.fma_pipes * lanes32 * 4, True, (
                f"{'VDPBF16PS' if 'avx512_bf16' in flags else 'BFDOT'}: {core.fma_pipes} pipes x "
                f"{core.width_bits // 32} lanes x (2 products + 2 adds), same pipes as the FMAs (assumed)")
        return fp32, False, "no native BF16 arithmetic: BF16 is converted to FP32, so the FP32 peak"
    if precision is Precision.FP16:
        if "amx_fp16" in flags:
            return 1024.0, True, "AMX TDPFP16PS: 1024 FP16 FLOP per core per cycle"
        if "avx512_fp16" in flags or "asimdhp" in flags:
            return core.fma_pipes * lanes32 * 4, True, (
                f"{core.fma_pipes} pipes x {core.width_bits // 16} fp16 lanes x 2 (FMA)")
        return fp32, False, "no native FP16 arithmetic: FP16 is converted to FP32, so the FP32 peak"
    if precision is Precision.INT8:
        if "amx_int8" in flags:
            return 2048.0, True, "AMX TDPBUSD: 2048 INT8 OP per core per cycle"
        if "avx512_vnni" in flags:
            return core.fma_pipes * lanes32 * 8, True, (
                f"VPDPBUSD: {core.fma_pipes} pipes x {core.width_bits // 32} int32 lanes x "
                "(4 products + 4 adds), same pipes as the FMAs (assumed)")
        if "avx_vnni" in flags:
            lanes = min(core.width_bits, 256) / 32
            return core.fma_pipes * lanes * 8, True, (
                f"VEX VPDPBUSD (256-bit): {core.fma_pipes} pipes x {int(lanes)} lanes x 8")
        if "asimddp" in flags or "i8mm" in flags:
            mult = 16 if "i8mm" in flags else 8
            return core.fma_pipes * lanes32 * mult, True, (
                f"{'SMMLA' if mult == 16 else 'SDOT'}: {core.fma_pipes} pipes x {int(lanes32)} lanes x {mult}")
        if "avx2" in flags:
            return core.fma_pipes * lanes32 * 8 / 3, False, (
                "no int8 dot-product instruction: VPMADDUBSW + VPMADDWD + VPADDD, 3 instructions per "
                "4 products per lane")
        return fp32, False, "no int8 SIMD dot product: assumed no faster than FP32"
    return None, False, f"{precision.upper()} has no CPU arithmetic model"


def cpu_clock_mhz(
    device: Any, cpu_root: str | Path = "/sys/devices/system/cpu", measured: MeasuredClock | None = None
) -> tuple[float | None, str | None]:
    """(clock in MHz, where it came from) for the CPU peak; see the module docstring for the order."""
    root = Path(cpu_root)
    maxima = []
    for path in sorted(root.glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq")):
        try:
            maxima.append(int(path.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    if maxima:
        return max(maxima), f"cpufreq cpuinfo_max_freq ({root}/cpu*/cpufreq), the maximum boost clock"
    freq = dict(getattr(device, "details", {}).get("frequency") or {})
    if freq.get("max_mhz"):
        return float(freq["max_mhz"]), "maximum frequency reported by psutil.cpu_freq()"
    if measured is not None and measured.mhz:
        nominal = f"; /proc/cpuinfo says {float(freq['current_mhz']):.0f} MHz" if freq.get("current_mhz") else ""
        return float(measured.mhz), (f"measured effective clock with {measured.cores} core(s) busy "
                                     f"({measured.method}); no cpufreq maximum here{nominal}")
    if freq.get("current_mhz"):
        return float(freq["current_mhz"]), (
            "/proc/cpuinfo 'cpu MHz' (no cpufreq maximum here): the current clock, in a VM usually "
            "the nominal TSC frequency; boost clocks, if any, make the real peak higher")
    return None, None


def _cpu_family(device: Any, cpuinfo_path: str | Path) -> tuple[int | None, int | None]:
    """CPUID (family, model) from the device details, else from ``/proc/cpuinfo``."""
    details = getattr(device, "details", {}) or {}
    if details.get("cpu_family") is not None:
        model = details.get("cpu_model")
        return int(details["cpu_family"]), int(model) if model is not None else None
    try:
        text = Path(cpuinfo_path).read_text()
    except OSError:
        return None, None
    family = re.search(r"^cpu family\s*:\s*(\d+)", text, re.MULTILINE)
    model = re.search(r"^model\s*:\s*(\d+)", text, re.MULTILINE)
    return (int(family.group(1)) if family else None), (int(model.group(1)) if model else None)


def cpu_peak(
    device: Any,
    precision: Precision,
    *,
    cores: int | None = None,
    cpu_root: str | Path = "/sys/devices/system/cpu",
    cpuinfo_path: str | Path = "/proc/cpuinfo",
    measured_clock: MeasuredClock | None = None,
    measure_clock: bool = True,
) -> PeakEstimate:
    details = getattr(device, "details", {}) or {}
    flags = set(details.get("flags") or device.features)
    physical = details.get("physical_cores") or details.get("threads")
    if not physical:
        return _none(precision, "the number of physical cores is unknown")
    used = min(int(cores), int(physical)) if cores else int(physical)
    clock, clock_source = cpu_clock_mhz(device, cpu_root, measured_clock)
    if measured_clock is None and measure_clock and (clock_source is None or clock_source.startswith("/proc")):
        measured_clock = cached_cpu_clock(used)
        clock, clock_source = cpu_clock_mhz(device, cpu_root, measured_clock)
    if clock is None:
        return _none(precision, "the CPU clock is unknown (no cpufreq and no 'cpu MHz' in /proc/cpuinfo)")
    family, model = _cpu_family(device, cpuinfo_path)
    core = cpu_core_model(details.get("vendor"), str(details.get("model_name") or device.name), flags,
                          family, model)
    per_cycle, native, how = cpu_ops_per_cycle(core, flags, precision)
    if per_cycle is None:
        return _none(precision, how)
    assumptions = [core.assumption, f"clock: {clock_source}",
                   "SMT siblings share their core's FMA pipes, so physical cores are counted"]
    if used < int(physical):
        assumptions.append(f"limited to the {used} of {physical} physical cores the measurement used")
    unit = "OP" if precision.is_integer else "FLOP"
    return PeakEstimate(
        precision=precision, ops_per_s=used * clock * 1e6 * per_cycle, units=used, clock_mhz=clock,
        ops_per_cycle_per_unit=per_cycle,
        formula=f"{used} cores x {clock:.0f} MHz x {per_cycle:g} {precision.upper()} {unit}/cycle/core ({how})",
        clock_source=clock_source, native=native, assumptions=tuple(assumptions),
        details={"microarchitecture": core.family, "fma_pipes": core.fma_pipes,
                 "datapath_bits": core.width_bits, "cpu_family": family, "cpu_model": model,
                 "physical_cores": physical,
                 "measured_clock": measured_clock.to_dict() if measured_clock is not None else None},
    )


# --- NVIDIA GPU ---------------------------------------------------------------------------------

# Dense ops per SM per cycle (FMA = 2), from NVIDIA whitepapers: datasheet peak / (SMs x clock).
# fp32 is the CUDA-core rate; the others are tensor cores with FP32 accumulation (int8: int32).
# Volta has no int8 tensor cores: its int8 figure is the dp4a rate of the CUDA cores.
GPU_OPS_PER_SM_CYCLE: dict[tuple[int, int], tuple[str, dict[str, float]]] = {
    (7, 0): ("Volta (V100)", {"fp32": 128, "fp16": 1024, "int8": 512}),
    (7, 2): ("Volta (Xavier)", {"fp32": 128, "fp16": 1024, "int8": 2048}),
    (7, 5): ("Turing (T4, RTX 20)", {"fp32": 128, "fp16": 1024, "int8": 2048}),
    (8, 0): ("Ampere (A100, A30)", {"fp32": 128, "tf32": 1024, "fp16": 2048, "bf16": 2048, "int8": 4096}),
    (8, 6): ("Ampere (A10, A40, RTX 30)", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024, "int8": 2048}),
    (8, 7): ("Ampere (Jetson Orin)", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024, "int8": 2048}),
    (8, 9): ("Ada (L4, L40S, RTX 40)", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024, "int8": 2048,
                                         "fp8": 2048}),
    (9, 0): ("Hopper (H100, H200)", {"fp32": 256, "tf32": 2048, "fp16": 4096, "bf16": 4096, "int8": 8192,
                                      "fp8": 8192}),
    (10, 0): ("Blackwell (B200, GB200)", {"fp32": 256, "tf32": 4096, "fp16": 8192, "bf16": 8192,
                                           "int8": 16384, "fp8": 16384}),
    (12, 0): ("Blackwell (RTX PRO 6000, RTX 50)", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024,
                                                    "int8": 2048, "fp8": 2048}),
}


def _parse_cc(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(value))
    return (int(match.group(1)), int(match.group(2))) if match else None


def nvidia_peak(device: Any, precision: Precision) -> PeakEstimate:
    details = getattr(device, "details", {}) or {}
    cc = _parse_cc(details.get("compute_capability"))
    sms = details.get("multiprocessor_count")
    clock = details.get("max_sm_clock_mhz")
    if cc is None:
        return _none(precision, "the GPU's compute capability is unknown")
    if not sms or not clock:
        return _none(precision, "the SM count or maximum SM clock was not readable from NVML")
    table = GPU_OPS_PER_SM_CYCLE.get(cc) or GPU_OPS_PER_SM_CYCLE.get((cc[0], 0))
    if table is None:
        return _none(precision, f"no per-SM table for compute capability {cc[0]}.{cc[1]}")
    arch, per_sm = table
    if precision not in per_sm:
        return _none(precision, f"{arch} (sm_{cc[0]}{cc[1]}) has no {precision.upper()} tensor-core arithmetic")
    ops = float(per_sm[precision])
    unit = "OP" if precision.is_integer else "FLOP"
    assumptions = [
        f"{arch}: {ops:g} dense {precision.upper()} {unit}/cycle per SM (NVIDIA whitepaper peak / "
        "(SMs x boost clock)); no sparsity",
        "clock: maximum SM clock from NVML (nvmlDeviceGetMaxClockInfo); datasheets may use a lower "
        "boost clock and sustained clocks under load can be lower still",
    ]
    if cc in ((8, 6), (8, 9), (12, 0)) and precision in (Precision.FP16, Precision.BF16, Precision.TF32):
        assumptions.append("professional/datacentre rate; GeForce boards run tensor-core math with "
                           "FP32 accumulation at half this rate")
    if cc not in GPU_OPS_PER_SM_CYCLE:
        assumptions.append(f"sm_{cc[0]}{cc[1]} is not in the table; sm_{cc[0]}0 figures are used")
    return PeakEstimate(
        precision=precision, ops_per_s=float(sms) * float(clock) * 1e6 * ops, units=int(sms),
        clock_mhz=float(clock), ops_per_cycle_per_unit=ops,
        formula=f"{sms} SMs x {float(clock):.0f} MHz x {ops:g} {precision.upper()} {unit}/cycle/SM",
        clock_source="NVML maximum SM clock", native=True, assumptions=tuple(assumptions),
        details={"architecture": arch, "compute_capability": f"{cc[0]}.{cc[1]}"},
    )


# --- memory and host link ---------------------------------------------------------------------

# PCIe bytes per second per lane and direction after line coding (8b/10b to gen 2, 128b/130b after).
PCIE_LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


@dataclass(frozen=True)
class BandwidthPeak(Record):
    """A theoretical bandwidth in GB/s (1e9 bytes/s), or why there is none."""

    gbps: float | None
    formula: str
    assumptions: tuple[str, ...] = ()
    reason: str | None = None


def memory_bandwidth_peak(device: Any) -> BandwidthPeak:
    """Device memory bandwidth: GPUs from NVML's max memory clock and bus width (x2, DDR).

    >>> from types import SimpleNamespace
    >>> a100 = SimpleNamespace(kind="cuda", details={"max_mem_clock_mhz": 1593, "memory_bus_width_bits": 5120})
    >>> round(memory_bandwidth_peak(a100).gbps)
    2039
    """
    details = getattr(device, "details", {}) or {}
    if device.kind == "cuda":
        clock, bits = details.get("max_mem_clock_mhz"), details.get("memory_bus_width_bits")
        if not clock or not bits:
            return BandwidthPeak(None, "", reason="NVML did not report the memory clock or bus width")
        gbps = 2 * float(clock) * 1e6 * int(bits) / 8 / 1e9
        return BandwidthPeak(gbps, f"2 (double data rate) x {float(clock):.0f} MHz x {bits} bits / 8",
                             ("NVML's maximum memory clock; for GDDR6X/GDDR7 NVML reports the clock at "
                              "which this formula gives the datasheet bandwidth",))
    if device.kind == "cpu":
        return BandwidthPeak(None, "", reason="the DRAM speed and channel count need the DMI tables "
                             "(dmidecode, root only), so there is no theoretical CPU memory bandwidth")
    return BandwidthPeak(None, "", reason=f"no memory model for {device.kind} devices")


def host_link_peak(device: Any) -> BandwidthPeak:
    """PCIe bandwidth per direction from the GPU's maximum link generation and width (NVML)."""
    details = getattr(device, "details", {}) or {}
    gen, width = details.get("pcie_max_generation"), details.get("pcie_max_width")
    if device.kind != "cuda" or not gen or not width:
        return BandwidthPeak(None, "", reason="the PCIe generation or width was not readable")
    lane = PCIE_LANE_GBPS.get(int(gen))
    if lane is None:
        return BandwidthPeak(None, "", reason=f"unknown PCIe generation {gen}")
    return BandwidthPeak(lane * int(width), f"PCIe gen {gen} x{width}: {lane} GB/s per lane and direction",
                         ("the GPU's maximum link; a slower slot, riser or root port lowers it, "
                          "and packet overhead keeps real copies ~10-20% below",))
