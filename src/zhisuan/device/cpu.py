"""The host CPU: model, topology, ISA features, caches, NUMA, and its telemetry.

All sockets of the host form one device ``cpu:0``, because that is what runtimes run on (ONNX
Runtime's "cpu", OpenVINO's "CPU"); ``details`` records sockets, cores and threads. Every path
(``/proc/cpuinfo``, ``/sys/devices/system/cpu``, powercap, thermal) is injectable for tests.

>>> from zhisuan.device.cpu import CpuProvider
>>> CpuProvider().discover().devices[0].kind
'cpu'
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan.device.base import DeviceInfo, DeviceSample, Discovery, SampleBuilder
from zhisuan.device.rapl import DEFAULT_POWERCAP_ROOT, RaplMeter
from zhisuan.precision import Precision, sort_precisions
from zhisuan.results import Record

# ISA features that matter for inference, in the order they are shown (x86 then Arm).
ML_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "avx_vnni_int8", "avx_ne_convert",
    "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimddp", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme",
)  # fmt: skip

_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}
_INT8_FAST = {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8", "asimddp", "i8mm"}
_FP16 = {"avx512_fp16", "amx_fp16", "asimdhp"}


@dataclass(frozen=True)
class CpuInfoText:
    """What ``/proc/cpuinfo`` says about the host, one entry per logical CPU folded together."""

    vendor: str | None
    model_name: str
    flags: tuple[str, ...]
    threads: int
    sockets: int
    physical_cores: int | None  # None when cpuinfo has no "core id" (Arm)
    microcode: str | None
    mhz: float | None


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def parse_cpuinfo(text: str) -> CpuInfoText:
    """Parse ``/proc/cpuinfo`` text (x86 ``flags`` or Arm ``Features``).

    >>> parse_cpuinfo("processor : 0\\nmodel name : X\\nflags : fpu avx2\\n").flags
    ('avx2', 'fpu')
    """
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    entries: list[dict[str, str]] = []
    for block in blocks:
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip().lower()] = value.strip()
        if "processor" in entry:
            entries.append(entry)
        elif entries:  # Arm puts "Hardware"/"Serial" in a trailing block
            entries[-1] = {**entry, **entries[-1]}
    if not entries:
        return CpuInfoText(None, "unknown CPU", (), 0, 1, None, None, None)
    first = entries[0]
    flags = first.get("flags") or first.get("features") or ""
    sockets = {e.get("physical id", "0") for e in entries}
    cores = {(e.get("physical id", "0"), e["core id"]) for e in entries if "core id" in e}
    model = first.get("model name") or first.get("hardware") or _arm_name(first) or "unknown CPU"
    try:
        mhz = float(first["cpu mhz"]) if "cpu mhz" in first else None
    except ValueError:
        mhz = None
    return CpuInfoText(
        vendor=first.get("vendor_id") or first.get("cpu implementer"),
        model_name=re.sub(r"\s+", " ", model),
        flags=tuple(sorted(set(flags.split()))),
        threads=len(entries),
        sockets=len(sockets),
        physical_cores=len(cores) or None,
        microcode=first.get("microcode"),
        mhz=mhz,
    )


def _arm_name(entry: dict[str, str]) -> str | None:
    part = entry.get("cpu part")
    return f"Arm CPU (implementer {entry.get('cpu implementer')}, part {part})" if part else None


_X86_SIMD = {"sse4_1", "sse4_2", "avx2", "avx512bw"}
_X86_DOT = {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"}


def u8s8_saturates(flags: Iterable[str]) -> bool:
    """Whether u8 x s8 integer kernels may saturate on this CPU: an x86 CPU without VNNI.

    Without a dot-product instruction, ONNX Runtime's MLAS multiplies u8 activations by s8
    weights with ``vpmaddubsw``, which adds pairs of products into a saturating int16 (255 x 127 x 2
    overflows it). ONNX Runtime's quantization guide therefore recommends 7-bit weights
    (``reduce_range``) there. Arm and VNNI CPUs compute exact int32 sums.

    >>> u8s8_saturates(["sse4_2", "avx2"]), u8s8_saturates(["avx2", "avx_vnni"]), u8s8_saturates(["asimd"])
    (True, False, False)
    """
    present = set(flags)
    return bool(present & _X86_SIMD) and not present & _X86_DOT


def host_u8s8_saturates(cpuinfo_path: str | os.PathLike[str] = "/proc/cpuinfo") -> bool:
    """:func:`u8s8_saturates` for this machine (False where ``/proc/cpuinfo`` cannot be read)."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return u8s8_saturates(parse_cpuinfo(text).flags)


def cpu_features(flags: Iterable[str]) -> tuple[str, ...]:
    """The inference-relevant subset of ``flags``, in :data:`ML_FEATURES` order."""
    present = set(flags)
    return tuple(f for f in ML_FEATURES if f in present)


def cpu_precisions(flags: Iterable[str]) -> tuple[Precision, ...]:
    """Precisions with native arithmetic: fp32 always; bf16, fast int8 (dot-product), fp16 by ISA."""
    present = set(flags)
    found = {Precision.FP32}
    if present & _BF16:
        found.add(Precision.BF16)
    if present & _INT8_FAST:
        found.add(Precision.INT8)
    if present & _FP16:
        found.add(Precision.FP16)
    return sort_precisions(found)


@dataclass(frozen=True)
class CacheInfo(Record):
    name: str  # "L1d", "L1i", "L2", "L3"
    level: int
    type: str  # "Data", "Instruction", "Unified"
    size_bytes: int
    instances: int  # how many such caches the host has (distinct shared_cpu_list)


def parse_size(text: str) -> int:
    """Sysfs cache size ("48K", "1024K", "32M") in bytes.

    >>> parse_size("48K")
    49152
    """
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a cache size: {text!r}")
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]


def read_caches(cpu_root: str | os.PathLike[str] = "/sys/devices/system/cpu") -> list[CacheInfo]:
    """Caches of ``cpu0`` from sysfs, with the number of instances counted over every CPU."""
    root = Path(cpu_root)
    shared: dict[tuple[int, str], set[str]] = {}
    for cache_dir in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
        level, ctype = _read(cache_dir / "level"), _read(cache_dir / "type")
        if level and ctype:
            shared.setdefault((int(level), ctype), set()).add(_read(cache_dir / "shared_cpu_list") or "?")
    caches = []
    for cache_dir in sorted((root / "cpu0" / "cache").glob("index[0-9]*")):
        level, ctype, size = _read(cache_dir / "level"), _read(cache_dir / "type"), _read(cache_dir / "size")
        if not (level and ctype and size):
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(ctype, "")
        caches.append(
            CacheInfo(
                name=f"L{level}{suffix}",
                level=int(level),
                type=ctype,
                size_bytes=parse_size(size),
                instances=len(shared.get((int(level), ctype), ())) or 1,
            )
        )
    return caches


@dataclass(frozen=True)
class NumaNode(Record):
    index: int
    cpus: str  # the kernel's cpulist, e.g. "0-15,32-47"


def read_numa_nodes(node_root: str | os.PathLike[str] = "/sys/devices/system/node") -> list[NumaNode]:
    nodes = []
    for node in Path(node_root).glob("node[0-9]*"):
        nodes.append(NumaNode(int(node.name[4:]), _read(node / "cpulist") or ""))
    return sorted(nodes, key=lambda n: n.index)


@dataclass(frozen=True)
class CpuProvider:
    """The host CPU as a device provider; every source of data can be pointed elsewhere."""

    kind: str = "cpu"
    default: bool = True
    cpuinfo_path: Path = Path("/proc/cpuinfo")
    cpu_root: Path = Path("/sys/devices/system/cpu")
    node_root: Path = Path("/sys/devices/system/node")
    powercap_root: Path = DEFAULT_POWERCAP_ROOT
    thermal_root: Path = Path("/sys/class/thermal")
    sensors_temperatures: Callable[[], dict[str, Any]] | None = field(default=None, compare=False)

    def discover(self) -> Discovery:
        import psutil

        unavailable: dict[str, str] = {}
        try:
            info = parse_cpuinfo(Path(self.cpuinfo_path).read_text())
        except OSError as exc:
            info = parse_cpuinfo("")
            unavailable["features"] = f"cannot read {self.cpuinfo_path}: {exc.strerror or exc}"
        physical = info.physical_cores or psutil.cpu_count(logical=False)
        threads = info.threads or psutil.cpu_count(logical=True)
        freq = _cpu_freq(psutil)
        freq_details = {"current_mhz": None, "min_mhz": None, "max_mhz": None}
        if freq is None:
            unavailable["frequency"] = "psutil.cpu_freq() returned nothing (no cpufreq in this kernel/VM)"
        else:
            freq_details = {
                "current_mhz": freq.current or info.mhz,
                "min_mhz": freq.min or None,
                "max_mhz": freq.max or None,
            }
            if not freq.max:
                unavailable["max_mhz"] = "cpufreq reports no maximum frequency (common in VMs)"
        caches = read_caches(self.cpu_root)
        if not caches:
            unavailable["caches"] = f"no cache description under {self.cpu_root}/cpu0/cache"
        numa = read_numa_nodes(self.node_root)
        if not numa:
            unavailable["numa_nodes"] = f"no NUMA nodes under {self.node_root}"
        unavailable["memory_type"] = "host memory type needs the DMI tables (dmidecode, root only)"
        details = {
            "vendor": info.vendor,
            "model_name": info.model_name,
            "sockets": info.sockets,
            "physical_cores": physical,
            "threads": threads,
            "numa_nodes": numa,
            "caches": caches,
            "cache_bytes": {c.name: c.size_bytes for c in caches},
            "frequency": freq_details,
            "microcode": info.microcode,
            "kernel": platform.release(),
            "architecture": platform.machine(),
            "flags": list(info.flags),
        }
        device = DeviceInfo(
            kind="cpu",
            index=0,
            name=info.model_name,
            memory_bytes=int(psutil.virtual_memory().total),
            memory_type=None,
            features=cpu_features(info.flags),
            precisions=cpu_precisions(info.flags),
            driver_version=f"Linux {platform.release()}" if platform.system() == "Linux" else None,
            details=details,
            unavailable=unavailable,
        )
        return Discovery("cpu", (device,))

    def open_sensors(self) -> list[CpuSensor]:
        name = parse_cpuinfo(_read(Path(self.cpuinfo_path)) or "").model_name
        return [CpuSensor(self, name)]


class CpuSensor:
    """Utilisation from ``psutil.cpu_times`` deltas, power from RAPL, temperature, frequency."""

    kind = "cpu"
    index = 0

    def __init__(
        self, provider: CpuProvider, name: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        import psutil

        self._psutil = psutil
        self._provider = provider
        self.name = name
        self._rapl = RaplMeter(provider.powercap_root, clock=clock)
        self._times = psutil.cpu_times()

    def read(self) -> DeviceSample:
        psutil = self._psutil
        b = SampleBuilder()
        times = psutil.cpu_times()
        b.values["utilization_pct"] = _busy_pct(self._times, times)
        if b.values["utilization_pct"] is None:
            b.missing("utilization_pct", "no CPU time passed since the previous sample")
        self._times = times
        mem = psutil.virtual_memory()
        b.values["memory_total_bytes"] = int(mem.total)
        b.values["memory_used_bytes"] = int(mem.total - mem.available)
        rapl = self._rapl.read()
        if rapl.reason:
            b.missing("power_w", rapl.reason)
            b.missing("energy_j", rapl.reason)
        else:
            b.values["energy_j"] = rapl.energy_j
            b.values["power_w"] = rapl.power_w
        temp, why = read_cpu_temperature(
            self._provider.sensors_temperatures or _psutil_temps(psutil), self._provider.thermal_root
        )
        if temp is None:
            b.missing("temperature_c", why or "no temperature sensor")
        else:
            b.values["temperature_c"] = temp
        clocks = {}
        freq = _cpu_freq(psutil)
        if freq is not None and freq.current:
            clocks["cpu"] = float(freq.current)
        else:
            b.unavailable["clocks_mhz.cpu"] = (
                "psutil.cpu_freq() returned nothing (no cpufreq in this kernel/VM)"
            )
        return b.build(self.kind, self.index, self.name, clocks)

    def close(self) -> None:
        pass


def _busy_pct(before: Any, after: Any) -> float | None:
    # Linux counts guest time inside user/nice too; psutil's own cpu_percent drops it the same way.
    total = _total(after) - _total(before)
    if total <= 0:
        return None
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    return max(0.0, min(100.0, 100.0 * (total - idle) / total))


def _total(times: Any) -> float:
    return sum(times) - getattr(times, "guest", 0) - getattr(times, "guest_nice", 0)


# Sensor chips that carry the package temperature, best first: Intel, AMD, generic ACPI.
_TEMP_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "acpitz")
_THERMAL_TYPES = ("x86_pkg_temp", "cpu-thermal", "cpu_thermal", "acpitz")


def read_cpu_temperature(
    sensors_temperatures: Callable[[], dict[str, Any]] | None,
    thermal_root: str | os.PathLike[str] = "/sys/class/thermal",
) -> tuple[float | None, str | None]:
    """CPU temperature in °C from psutil's hwmon view, else ``/sys/class/thermal``; or the reason."""
    tried = []
    if sensors_temperatures is not None:
        try:
            chips = sensors_temperatures() or {}
        except Exception as exc:  # psutil raises on odd hwmon entries
            chips = {}
            tried.append(f"psutil.sensors_temperatures failed: {exc}")
        for chip in (*_TEMP_CHIPS, *chips):
            entries = chips.get(chip) or []
            package = [
                e
                for e in entries
                if str(getattr(e, "label", "")).lower().startswith(("package", "tctl", "tdie"))
            ]
            for entry in package or entries:
                if getattr(entry, "current", None) is not None:
                    return float(entry.current), None
        tried.append("psutil.sensors_temperatures() found no CPU sensor")
    root = Path(thermal_root)
    zones = sorted(root.glob("thermal_zone*")) if root.is_dir() else []
    typed = {z: (_read(z / "type") or "") for z in zones}
    ordered = sorted(
        zones, key=lambda z: _THERMAL_TYPES.index(typed[z]) if typed[z] in _THERMAL_TYPES else 99
    )
    for zone in ordered:
        raw = _read(zone / "temp")
        if raw and raw.lstrip("-").isdigit():
            return int(raw) / 1000.0, None
    tried.append(f"no readable thermal zone in {root}")
    return None, "; ".join(tried)


def _psutil_temps(psutil: Any) -> Callable[[], dict[str, Any]] | None:
    return getattr(psutil, "sensors_temperatures", None)  # absent on macOS/Windows builds


def _cpu_freq(psutil: Any) -> Any:
    try:
        return psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


PROVIDER = CpuProvider()
