"""EV-1 tasks: the device's identity and the test environment as report items.

The full environment record lives in ``report.json["environment"]``
(:func:`zhisuan.bench.environment_record.collect_environment`); these items put its parts that decide
a figure (device, cores, memory, precisions, driver, runtime versions, clocks, power limits) in
the report's item list, so ``zhisuan report compare`` shows them side by side. Each item says
where its value was read; a value that is not readable here is a ``skip`` with the reason.

>>> from zhisuan.bench.environment import device_items
>>> from zhisuan.device import list_devices
>>> [i.id for i in device_items(list_devices(backends=False).devices[0])][:2]
['EV-1.device.name', 'EV-1.device.kind']
"""

from __future__ import annotations

from typing import Any

from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task

_GIB = float(1 << 30)

# Where each device kind's identity comes from (the method text of its items).
_SOURCE = {
    "cpu": "/proc/cpuinfo and sysfs (/sys/devices/system/cpu) via zhisuan.device.cpu",
    "cuda": "NVML (nvidia-ml-py) via zhisuan.device.nvidia",
    "null": "the NULL test device (fixed values)",
}
LIBRARIES = ("numpy", "torch", "onnx", "onnxruntime", "openvino", "mlperf_loadgen", "zhisuan")


def _ident(id: str, name: str, value: Any, method: str, unit: str = "", **details: Any) -> Item:
    return Item.measured(id, "EV-1", name, value=value, unit=unit, method=method, repeats=1,
                         details={k: v for k, v in details.items() if v is not None})


def _skip(id: str, name: str, reason: str, method: str, unit: str = "") -> Item:
    return Item.skipped(id, "EV-1", name, reason=reason, unit=unit, method=method)


def device_items(device: Any) -> list[Item]:
    """Identity of the device under test (a ``DeviceInfo``)."""
    src = _SOURCE.get(device.kind, f"the {device.kind} device provider")
    d, why = device.details, device.unavailable
    items = [
        _ident("EV-1.device.name", "Device name", device.name, f"{src}; device id {device.id}", key=True),
        _ident("EV-1.device.kind", "Device kind", device.kind, "zhisuan device registry (one provider per kind)"),
    ]
    if device.kind == "cuda":
        sms = d.get("multiprocessor_count")
        items.append(
            _ident("EV-1.device.cores", "Streaming multiprocessors", sms, f"{src}: nvmlDeviceGetAttributes_v2",
                   "SMs", cuda_cores=d.get("cuda_cores"), compute_capability=d.get("compute_capability"), key=True)
            if sms else _skip("EV-1.device.cores", "Streaming multiprocessors",
                              why.get("multiprocessor_count", "NVML did not report the SM count"), src, "SMs")
        )
    else:
        cores = d.get("physical_cores")
        items.append(
            _ident("EV-1.device.cores", "Physical cores", cores, f"{src}: distinct (physical id, core id) pairs",
                   "cores", threads=d.get("threads"), sockets=d.get("sockets"), key=True)
            if cores else _skip("EV-1.device.cores", "Physical cores", "the provider did not report cores", src, "cores")
        )
    if device.memory_bytes:
        items.append(_ident(
            "EV-1.device.memory", "Device memory", round(device.memory_bytes / _GIB, 2),
            f"{src}: " + ("nvmlDeviceGetMemoryInfo total" if device.kind == "cuda" else "psutil.virtual_memory().total"),
            "GiB", bytes=device.memory_bytes, memory_type=device.memory_type, key=True,
            memory_type_unavailable=why.get("memory_type"),
        ))
    else:
        items.append(_skip("EV-1.device.memory", "Device memory", why.get("memory_bytes", "not reported"), src, "GiB"))
    items.append(_ident(
        "EV-1.device.precisions", "Native precisions", ", ".join(device.precisions),
        f"{src}: " + ("compute capability against each precision's first architecture" if device.kind == "cuda"
                      else "ISA flags (bf16: avx512_bf16/amx_bf16; int8: VNNI/AMX/dot-product; fp16: avx512_fp16)"),
    ))
    items.append(_ident(
        "EV-1.device.features", "ISA / architecture features", ", ".join(device.features) or "(none)",
        f"{src}: " + ("sm_<compute capability>" if device.kind == "cuda" else "inference-relevant /proc/cpuinfo flags"),
        architecture=d.get("architecture"),
    ))
    driver = device.driver_version
    if device.kind == "cuda" and driver:
        driver = f"{driver} (CUDA driver {d.get('cuda_driver_version') or '?'})"
    items.append(
        _ident("EV-1.device.driver", "Driver version", driver,
               f"{src}: " + ("nvmlSystemGetDriverVersion, nvmlSystemGetCudaDriverVersion" if device.kind == "cuda"
                             else "platform.release() (the kernel drives the CPU)"))
        if driver else _skip("EV-1.device.driver", "Driver version", "the provider reported no driver version", src)
    )
    reach = [f"{b.runtime} {b.version or '?'} ({b.device})" for b in device.backends]
    items.append(
        _ident("EV-1.device.backends", "Runtimes reaching the device", ", ".join(reach),
               "zhisuan.runtime backend status: each available backend's device list")
        if reach else _skip("EV-1.device.backends", "Runtimes reaching the device",
                            "no runtime backend was asked or none reaches this device",
                            "zhisuan.runtime backend status")
    )
    return items


def environment_items(env: dict[str, Any], device: Any) -> list[Item]:
    """Software stack, threads, clocks and power limits from the environment record."""
    unavailable: dict[str, str] = env.get("unavailable") or {}
    os_info = env.get("os") or {}
    items = [
        _ident("EV-1.env.os", "Operating system and kernel",
               f"{os_info.get('distribution') or os_info.get('system')} / {os_info.get('system')} {os_info.get('kernel')}",
               "/etc/os-release PRETTY_NAME and platform.release()", libc=os_info.get("libc")),
        _ident("EV-1.env.python", "Python", (env.get("python") or {}).get("version"), "platform.python_version()"),
        _ident("EV-1.env.command", "Command", env.get("command_line"), "the exact command line of this run",
               seed=env.get("seed"), hostname=env.get("hostname")),
    ]
    libs = env.get("libraries") or {}
    for name in LIBRARIES:
        data = libs.get(name)
        method = "importlib.metadata version" + (
            {"onnxruntime": "; providers from onnxruntime.get_available_providers()",
             "openvino": "; devices from openvino.Core().available_devices",
             "torch": "; CUDA build and availability from torch.version / torch.cuda"}.get(name, "")
        )
        if data:
            extra = {k: v for k, v in data.items() if k != "version"}
            items.append(_ident(f"EV-1.library.{name}", f"{name} version", data.get("version"), method, **extra))
        else:
            items.append(_skip(f"EV-1.library.{name}", f"{name} version",
                               unavailable.get(f"libraries.{name}", f"{name} is not installed"), method))
    threads = env.get("threads") or {}
    items.append(_ident(
        "EV-1.env.threads", "Threads for the measurements", threads.get("requested"),
        "--threads, default: physical cores (psutil.cpu_count(logical=False))", "threads",
        physical_cores=threads.get("physical_cores"), logical_cpus=threads.get("logical_cpus"),
        affinity_cpus=threads.get("affinity_cpus"),
        env={k: v for k, v in (threads.get("env") or {}).items() if v is not None} or None,
    ))
    items.extend(_clock_items(env, device, unavailable))
    items.extend(_power_items(env, device, unavailable))
    items.append(_ident(
        "EV-1.env.unreadable", "Environment values not readable here", len(unavailable),
        "count of the environment record's values that are None, each with its reason (report.json "
        "environment.unavailable)", "values", reasons=unavailable,
    ))
    return items


def _clock_items(env: dict[str, Any], device: Any, unavailable: dict[str, str]) -> list[Item]:
    clocks = env.get("clocks") or {}
    if device.kind == "cuda":
        gpu = next((g for g in clocks.get("gpus") or [] if g.get("id") == device.id), {})
        method = "NVML nvmlDeviceGetMaxClockInfo(SM) / nvmlDeviceGetClockInfo(SM)"
        if gpu.get("max_sm_mhz"):
            return [_ident("EV-1.env.clock", "Max SM clock", gpu["max_sm_mhz"], method, "MHz",
                           current_sm_mhz=gpu.get("sm_mhz"), max_mem_mhz=gpu.get("max_mem_mhz"))]
        return [_skip("EV-1.env.clock", "Max SM clock",
                      unavailable.get(f"clocks.gpus.{device.id}.max_sm_mhz", "NVML did not report it"), method, "MHz")]
    cpu = clocks.get("cpu") or {}
    method = "cpufreq sysfs (scaling_governor, cpuinfo_max_freq, scaling_cur_freq), else /proc/cpuinfo 'cpu MHz'"
    items = []
    if cpu.get("current_mhz"):
        items.append(_ident("EV-1.env.clock", "CPU clock when the run started", cpu["current_mhz"], method, "MHz",
                            governor=cpu.get("governor"), driver=cpu.get("driver"), boost=cpu.get("boost")))
    else:
        items.append(_skip("EV-1.env.clock", "CPU clock when the run started",
                           unavailable.get("clocks.cpu.current_mhz", "not readable"), method, "MHz"))
    if cpu.get("max_mhz"):
        items.append(_ident("EV-1.env.clock_max", "CPU max clock", cpu["max_mhz"], method, "MHz"))
    else:
        items.append(_skip("EV-1.env.clock_max", "CPU max clock",
                           unavailable.get("clocks.cpu.max_mhz", "not readable"), method, "MHz"))
    if cpu.get("governor"):
        items.append(_ident("EV-1.env.governor", "CPU frequency governor", cpu["governor"], method))
    else:
        items.append(_skip("EV-1.env.governor", "CPU frequency governor",
                           unavailable.get("clocks.cpu.governor", "not readable"), method))
    return items


def _power_items(env: dict[str, Any], device: Any, unavailable: dict[str, str]) -> list[Item]:
    limits = env.get("power_limits") or {}
    if device.kind == "cuda":
        gpu = next((g for g in limits.get("gpus") or [] if g.get("id") == device.id), {})
        method = "NVML nvmlDeviceGetEnforcedPowerLimit (and nvmlDeviceGetPowerManagementLimit)"
        if gpu.get("enforced_power_limit_w") is not None:
            return [_ident("EV-1.env.power_limit", "Power limit", gpu["enforced_power_limit_w"], method, "W",
                           power_management_limit_w=gpu.get("power_limit_w"))]
        return [_skip("EV-1.env.power_limit", "Power limit",
                      unavailable.get(f"power_limits.gpus.{device.id}.enforced_power_limit_w", "not readable"),
                      method, "W")]
    method = "RAPL powercap constraint files (/sys/class/powercap/intel-rapl:N/constraint_*_power_limit_uw)"
    zones = limits.get("rapl") or []
    package = [
        (z, c) for z in zones if str(z.get("name", "")).startswith("package")
        for c in z.get("constraints") or [] if c.get("power_limit_w") is not None
    ]
    if not package:
        return [_skip("EV-1.env.power_limit", "CPU package power limit",
                      unavailable.get("power_limits.rapl", "no RAPL package constraint is readable"), method, "W")]
    long_term = [(z, c) for z, c in package if c.get("name") == "long_term"] or package
    total = sum(c["power_limit_w"] for _, c in long_term)
    return [_ident("EV-1.env.power_limit", "CPU package power limit (long term, all packages)", total, method, "W",
                   constraints=[{"zone": z.get("zone"), **c} for z, c in package])]


def _environment(ctx: EvalContext) -> dict[str, Any]:
    if ctx.environment:
        return ctx.environment
    from zhisuan.bench.environment_record import collect_environment

    return collect_environment(["(python API)"], ctx.seed, ctx.threads, ctx.device)


@task("EV-1.device", clause="EV-1", title="Device identity (name, cores, memory, precisions, driver, runtimes)",
      est_s={"quick": 1, "standard": 1, "full": 1})
def measure_device(ctx: EvalContext) -> list[Item]:
    """Device identity (name, cores, memory, precisions, driver, runtimes)."""
    return device_items(ctx.device)


@task("EV-1.environment", clause="EV-1", title="Test environment (OS, libraries, threads, clocks, power limits)",
      est_s={"quick": 1, "standard": 1, "full": 1})
def measure_environment(ctx: EvalContext) -> list[Item]:
    """Test environment (OS, libraries, threads, clocks, power limits)."""
    return environment_items(_environment(ctx), ctx.device)
