"""The test environment record (SPEC EV-1) that every evaluation report carries.

:func:`collect_environment` reads what decides a figure: the hardware (CPU model, cores and
threads, ISA features, memory; GPUs through the device registry), the OS and kernel, drivers,
Python and library versions (ONNX Runtime with its execution providers, OpenVINO with its
devices, torch with its CUDA build), thread settings, CPU frequency governor and clocks, power
limits (RAPL constraints from powercap, NVML power limits), the exact command line, the seed,
the host name and timestamps. A value that cannot be read is ``None`` and ``unavailable`` maps
its dotted path (``"clocks.cpu.governor"``) to the reason, so a VM without cpufreq says so.

>>> from zhisuan.device import list_devices
>>> from zhisuan.bench.environment_record import collect_environment
>>> cpu = list_devices(backends=False).devices[0]
>>> env = collect_environment(["zhisuan", "evaluate"], seed=0, threads=2, device=cpu)  # doctest: +SKIP
>>> env["command_line"], env["device"]["id"]  # doctest: +SKIP
('zhisuan evaluate', 'cpu:0')
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Distributions whose version is recorded without importing them (name in the record -> dist).
_VERSIONS_ONLY = {
    "scipy": "scipy",
    "scikit-learn": "scikit-learn",
    "psutil": "psutil",
    "nvidia-ml-py": "nvidia-ml-py",
    "matplotlib": "matplotlib",
    "jsonschema": "jsonschema",
    "onnxslim": "onnxslim",
    "tensorrt": "tensorrt",
}

# Environment variables that change how many threads a library uses.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES",
    "KMP_AFFINITY", "CUDA_VISIBLE_DEVICES",
)


class _Record:
    """Collects values; ``missing(path, reason)`` stores ``None`` and says why."""

    def __init__(self) -> None:
        self.unavailable: dict[str, str] = {}

    def missing(self, path: str, reason: str) -> None:
        self.unavailable[path] = reason

    def guard(self, path: str, read: Callable[[], Any]) -> Any:
        """``read()``, or ``None`` with the exception as the reason (one library must not stop the record)."""
        try:
            return read()
        except ImportError as exc:
            self.missing(path, f"not installed ({exc.name or exc})")
        except Exception as exc:  # a broken optional library is recorded, not fatal
            self.missing(path, f"{type(exc).__name__}: {exc}")
        return None


def collect_environment(
    command: Sequence[str],
    seed: int,
    threads: int,
    device: Any,
    *,
    devices: Any = None,
    sys_root: str | os.PathLike[str] = "/sys",
    os_release: str | os.PathLike[str] = "/etc/os-release",
    libraries: bool = True,
) -> dict[str, Any]:
    """The EV-1 record of this machine for a run of ``command`` on ``device`` (a ``DeviceInfo``).

    ``devices`` is a ``DeviceList`` already discovered (else the registry is asked);
    ``sys_root`` and ``os_release`` can point at a fake tree in tests; ``libraries=False`` skips
    importing the heavy libraries (their versions are still read from package metadata).
    """
    rec = _Record()
    if devices is None:
        from zhisuan.device import list_devices

        devices = list_devices(backends=False)
    sys_path = Path(sys_root)
    cpu = next((d for d in devices.devices if d.kind == "cpu"), None)
    gpus = [d for d in devices.devices if d.kind == "cuda"]
    now = dt.datetime.now(dt.UTC).astimezone()
    env: dict[str, Any] = {
        "collected_at": now.isoformat(timespec="seconds"),
        "timezone": now.tzname(),
        "hostname": rec.guard("hostname", socket.gethostname),
        "command": [str(c) for c in command],
        "command_line": shlex.join(str(c) for c in command),
        "cwd": rec.guard("cwd", os.getcwd),
        "seed": int(seed),
        "device": device.to_dict(),
        "threads": _threads(rec, threads, cpu, libraries),
        "hardware": _hardware(rec, cpu, gpus, devices.reasons),
        "os": _os(rec, os_release),
        "drivers": _drivers(rec, gpus, devices.reasons),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "libraries": _libraries(rec, libraries),
        "clocks": {"cpu": _cpu_clocks(rec, sys_path, cpu), "gpus": _gpu_clocks(rec, gpus)},
        "power_limits": {"rapl": _rapl_limits(rec, sys_path / "class" / "powercap"), "gpus": _gpu_power(rec, gpus)},
    }
    env["unavailable"] = dict(sorted(rec.unavailable.items()))
    return env


# ---- hardware, OS, drivers -----------------------------------------------------------------------


def _hardware(rec: _Record, cpu: Any, gpus: list[Any], reasons: dict[str, str]) -> dict[str, Any]:
    import psutil

    out: dict[str, Any] = {"cpu": None, "memory_bytes": None, "swap_bytes": None, "gpus": []}
    if cpu is None:
        rec.missing("hardware.cpu", reasons.get("cpu", "the CPU provider found no CPU"))
    else:
        d = cpu.details
        flags = list(d.get("flags") or [])
        out["cpu"] = {
            "model": cpu.name,
            "vendor": d.get("vendor"),
            "architecture": d.get("architecture"),
            "sockets": d.get("sockets"),
            "physical_cores": d.get("physical_cores"),
            "threads": d.get("threads"),
            "isa_features": list(cpu.features),
            "precisions": list(cpu.precisions),
            "flags_count": len(flags),
            "hypervisor": "hypervisor" in flags if flags else None,
            "cache_bytes": dict(d.get("cache_bytes") or {}),
            "numa_nodes": len(d.get("numa_nodes") or []) or None,
            "microcode": d.get("microcode"),
        }
        for key, why in cpu.unavailable.items():
            rec.missing(f"hardware.cpu.{key}", why)
    vm = rec.guard("hardware.memory_bytes", psutil.virtual_memory)
    if vm is not None:
        out["memory_bytes"] = int(vm.total)
    swap = rec.guard("hardware.swap_bytes", psutil.swap_memory)
    if swap is not None:
        out["swap_bytes"] = int(swap.total)
    out["gpus"] = [g.to_dict() for g in gpus]
    if not gpus:
        rec.missing("hardware.gpus", reasons.get("cuda", "no NVIDIA GPU found"))
    return out


def _os(rec: _Record, os_release: str | os.PathLike[str]) -> dict[str, Any]:
    out = {
        "system": platform.system(),
        "kernel": platform.release(),
        "kernel_build": platform.version(),
        "machine": platform.machine(),
        "distribution": None,
        "libc": None,
    }
    try:
        text = Path(os_release).read_text(encoding="utf-8")
        fields = dict(
            (k, v.strip().strip('"')) for k, _, v in (line.partition("=") for line in text.splitlines()) if v
        )
        out["distribution"] = fields.get("PRETTY_NAME") or fields.get("NAME")
    except OSError as exc:
        rec.missing("os.distribution", f"cannot read {os_release}: {exc.strerror or exc}")
    libc, version = platform.libc_ver()
    if libc:
        out["libc"] = f"{libc} {version}"
    else:
        rec.missing("os.libc", "platform.libc_ver() found no C library version")
    return out


def _drivers(rec: _Record, gpus: list[Any], reasons: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"linux_kernel": platform.release(), "nvidia": None, "cuda_driver": None, "nvml": None}
    if not gpus:
        why = reasons.get("cuda", "no NVIDIA GPU found")
        for key in ("nvidia", "cuda_driver", "nvml"):
            rec.missing(f"drivers.{key}", why)
        return out
    first = gpus[0]
    out["nvidia"] = first.driver_version
    out["cuda_driver"] = first.details.get("cuda_driver_version")
    out["nvml"] = first.details.get("nvml_version")
    for key in ("nvidia", "cuda_driver", "nvml"):
        if out[key] is None:
            rec.missing(f"drivers.{key}", "NVML did not report it")
    return out


# ---- software ----------------------------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _libraries(rec: _Record, probe: bool) -> dict[str, Any]:
    import numpy as np

    from zhisuan import __version__

    libs: dict[str, Any] = {"zhisuan": {"version": __version__}, "numpy": {"version": np.__version__}}
    blas = rec.guard("libraries.numpy.blas", lambda: _numpy_blas(np))
    libs["numpy"]["blas"] = blas
    probes: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "torch": ("torch", _torch_info),
        "onnx": ("onnx", _onnx_info),
        "onnxruntime": ("onnxruntime", _onnxruntime_info),
        "openvino": ("openvino", _openvino_info),
        "mlperf_loadgen": ("mlcommons-loadgen", _loadgen_info),
    }
    for name, (dist, info) in probes.items():
        version = _dist_version(dist)
        if version is None:
            rec.missing(f"libraries.{name}", f"{dist} is not installed")
            libs[name] = None
            continue
        libs[name] = {"version": version}
        if probe:
            extra = rec.guard(f"libraries.{name}", info)
            if extra:
                libs[name].update(extra)
    for name, dist in _VERSIONS_ONLY.items():
        version = _dist_version(dist)
        libs[name] = {"version": version} if version else None
        if version is None:
            rec.missing(f"libraries.{name}", f"{dist} is not installed")
    return libs


def _numpy_blas(np: Any) -> str | None:
    config = np.show_config(mode="dicts")
    blas = (config or {}).get("Build Dependencies", {}).get("blas", {})
    name, version = blas.get("name"), blas.get("version")
    return f"{name} {version}".strip() if name else None


def _torch_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "cuda_devices": torch.cuda.device_count() if cuda else 0,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
    }


def _onnx_info() -> dict[str, Any]:
    import onnx
    import onnx.defs

    return {"opset": onnx.defs.onnx_opset_version(), "ir_version": onnx.IR_VERSION}


def _onnxruntime_info() -> dict[str, Any]:
    import onnxruntime as ort

    return {"providers": list(ort.get_available_providers()), "build_device": ort.get_device()}


def _openvino_info() -> dict[str, Any]:
    import openvino as ov

    core = ov.Core()
    return {"build": ov.get_version(), "devices": list(core.available_devices)}


def _loadgen_info() -> dict[str, Any]:
    import mlperf_loadgen

    return {"module": mlperf_loadgen.__name__, "scenarios": [s for s in dir(mlperf_loadgen.TestScenario) if s[0].isupper()]}


def _threads(rec: _Record, requested: int, cpu: Any, libraries: bool) -> dict[str, Any]:
    import psutil

    out: dict[str, Any] = {
        "requested": int(requested),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cpus": psutil.cpu_count(logical=True),
        "affinity_cpus": None,
        "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }
    if hasattr(os, "sched_getaffinity"):
        out["affinity_cpus"] = len(os.sched_getaffinity(0))
    else:
        rec.missing("threads.affinity_cpus", "os.sched_getaffinity is not available on this OS")
    if cpu is not None and out["physical_cores"] is None:
        out["physical_cores"] = cpu.details.get("physical_cores")
    return out


# ---- clocks and power limits -------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_clocks(rec: _Record, sys_root: Path, cpu: Any) -> dict[str, Any]:
    freq_dir = sys_root / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    out: dict[str, Any] = {
        "governor": None, "driver": None, "current_mhz": None, "min_mhz": None, "max_mhz": None, "boost": None,
    }
    if not freq_dir.is_dir():
        why = f"no cpufreq in {freq_dir.parent} (no frequency scaling driver; common in VMs)"
        for key in ("governor", "driver", "min_mhz", "max_mhz", "boost"):
            rec.missing(f"clocks.cpu.{key}", why)
    else:
        out["governor"] = _read(freq_dir / "scaling_governor")
        out["driver"] = _read(freq_dir / "scaling_driver")
        for key, name in (("current_mhz", "scaling_cur_freq"), ("min_mhz", "cpuinfo_min_freq"), ("max_mhz", "cpuinfo_max_freq")):
            raw = _read(freq_dir / name)
            out[key] = int(raw) / 1000.0 if raw and raw.isdigit() else None  # kHz in sysfs
        boost = _read(sys_root / "devices" / "system" / "cpu" / "cpufreq" / "boost")
        no_turbo = _read(sys_root / "devices" / "system" / "cpu" / "intel_pstate" / "no_turbo")
        if boost in ("0", "1"):
            out["boost"] = boost == "1"
        elif no_turbo in ("0", "1"):
            out["boost"] = no_turbo == "0"
        for key in ("governor", "driver", "min_mhz", "max_mhz", "boost"):
            if out[key] is None:
                rec.missing(f"clocks.cpu.{key}", f"not readable under {freq_dir}")
    if out["current_mhz"] is None and cpu is not None:
        # /proc/cpuinfo "cpu MHz" (via psutil) is readable even without cpufreq
        current = (cpu.details.get("frequency") or {}).get("current_mhz")
        out["current_mhz"] = float(current) if current else None
    if out["current_mhz"] is None:
        rec.missing("clocks.cpu.current_mhz", "neither cpufreq nor /proc/cpuinfo gave a current frequency")
    return out


def _gpu_clocks(rec: _Record, gpus: list[Any]) -> list[dict[str, Any]]:
    if not gpus:
        return []
    current: dict[str, dict[str, float]] = {}
    try:
        from zhisuan.device import sample_once

        snapshot = sample_once(interval_s=0.05, kinds=["cuda"])
        current = {s.id: dict(s.clocks_mhz) for s in snapshot.samples}
    except Exception as exc:  # NVML can fail between discovery and sampling
        rec.missing("clocks.gpus", f"NVML sample failed: {exc}")
    out = []
    for gpu in gpus:
        now = current.get(gpu.id, {})
        entry = {
            "id": gpu.id,
            "sm_mhz": now.get("sm"),
            "mem_mhz": now.get("mem"),
            "max_sm_mhz": gpu.details.get("max_sm_clock_mhz"),
            "max_mem_mhz": gpu.details.get("max_mem_clock_mhz"),
        }
        for key, value in entry.items():
            if value is None:
                rec.missing(f"clocks.gpus.{gpu.id}.{key}", "NVML did not report it")
        out.append(entry)
    return out


def _gpu_power(rec: _Record, gpus: list[Any]) -> list[dict[str, Any]]:
    out = []
    for gpu in gpus:
        entry = {
            "id": gpu.id,
            "power_limit_w": gpu.details.get("power_limit_w"),
            "enforced_power_limit_w": gpu.details.get("enforced_power_limit_w"),
        }
        for key in ("power_limit_w", "enforced_power_limit_w"):
            if entry[key] is None:
                rec.missing(
                    f"power_limits.gpus.{gpu.id}.{key}",
                    gpu.unavailable.get(key, "NVML did not report it"),
                )
        out.append(entry)
    return out


_ZONE = re.compile(r"^intel-rapl:\d+(:\d+)?$")


def _rapl_limits(rec: _Record, powercap: Path) -> list[dict[str, Any]] | None:
    """RAPL zones and their power-limit constraints; unlike ``energy_uj`` these are world-readable."""
    if not powercap.is_dir():
        rec.missing("power_limits.rapl", f"no {powercap} (no powercap/RAPL driver; common in VMs)")
        return None
    zones = []
    for zone in sorted(p for p in powercap.iterdir() if _ZONE.match(p.name)):
        constraints = []
        for name_file in sorted(zone.glob("constraint_*_name")):
            k = name_file.name.split("_")[1]

            def number(field: str, scale: float, zone: Path = zone, k: str = k) -> float | None:
                raw = _read(zone / f"constraint_{k}_{field}")
                return int(raw) / scale if raw and raw.isdigit() else None

            constraints.append({
                "name": _read(name_file),
                "power_limit_w": number("power_limit_uw", 1e6),
                "max_power_w": number("max_power_uw", 1e6),
                "time_window_s": number("time_window_us", 1e6),
            })
        enabled = _read(zone / "enabled")
        zones.append({
            "zone": zone.name,
            "name": _read(zone / "name"),
            "enabled": enabled == "1" if enabled in ("0", "1") else None,
            "constraints": constraints,
        })
    if not zones:
        rec.missing("power_limits.rapl", f"no intel-rapl zone in {powercap}")
        return None
    return zones
