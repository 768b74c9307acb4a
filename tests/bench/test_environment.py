"""EV-1 items: device identity and the environment record's decisive parts, with reasons for gaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zhisuan.bench.environment import device_items, environment_items, measure_device, measure_environment
from zhisuan.bench.tasks import EvalContext, registered_tasks
from zhisuan.device import BackendReach, DeviceInfo, list_devices

GPU = DeviceInfo(
    "cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "HBM", ("sm_90",), ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"),
    "555.42.06", backends=(BackendReach("onnxruntime", "1.32.0", "cuda"),),
    details={"multiprocessor_count": 132, "cuda_cores": 16896, "compute_capability": "9.0",
             "cuda_driver_version": "12.5", "architecture": "Hopper"},
)


def test_cpu_identity_items_are_read_from_the_registry() -> None:
    cpu = list_devices(backends=False).devices[0]
    items = {i.id: i for i in device_items(cpu)}
    assert items["EV-1.device.name"].value == cpu.name
    assert items["EV-1.device.cores"].value == cpu.details["physical_cores"] and items["EV-1.device.cores"].unit == "cores"
    assert items["EV-1.device.memory"].details["bytes"] == cpu.memory_bytes
    assert items["EV-1.device.precisions"].value.startswith("fp32")
    # no backends were asked for: the item says so instead of inventing one
    assert items["EV-1.device.backends"].status == "skip" and items["EV-1.device.backends"].reason
    assert all(i.clause == "EV-1" and i.method for i in items.values())


def test_gpu_identity_uses_nvml_fields() -> None:
    items = {i.id: i for i in device_items(GPU)}
    assert items["EV-1.device.cores"].value == 132 and items["EV-1.device.cores"].unit == "SMs"
    assert items["EV-1.device.driver"].value == "555.42.06 (CUDA driver 12.5)"
    assert items["EV-1.device.backends"].value == "onnxruntime 1.32.0 (cuda)"
    assert items["EV-1.device.memory"].value == 80.0 and "nvmlDeviceGetMemoryInfo" in items["EV-1.device.memory"].method


def _env(**over: Any) -> dict[str, Any]:
    env = {
        "os": {"system": "Linux", "kernel": "6.1", "distribution": "Debian 12"},
        "python": {"version": "3.11.7"},
        "command_line": "zhisuan evaluate", "seed": 0,
        "libraries": {"numpy": {"version": "2.0"}, "torch": None},
        "threads": {"requested": 4, "physical_cores": 4, "env": {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": None}},
        "clocks": {"cpu": {"governor": "performance", "current_mhz": 3000.0, "max_mhz": 3500.0}},
        "power_limits": {"rapl": [{"zone": "intel-rapl:0", "name": "package-0", "constraints": [
            {"name": "long_term", "power_limit_w": 125.0}, {"name": "short_term", "power_limit_w": 200.0}]}]},
        "unavailable": {"libraries.torch": "torch is not installed"},
    }
    env.update(over)
    return env


def test_environment_items_report_versions_clocks_and_power_limits() -> None:
    cpu = list_devices(backends=False).devices[0]
    items = {i.id: i for i in environment_items(_env(), cpu)}
    assert items["EV-1.library.numpy"].value == "2.0"
    assert items["EV-1.library.torch"].status == "skip" and items["EV-1.library.torch"].reason == "torch is not installed"
    assert items["EV-1.env.threads"].value == 4 and items["EV-1.env.threads"].details["env"] == {"OMP_NUM_THREADS": "4"}
    assert items["EV-1.env.governor"].value == "performance" and items["EV-1.env.clock_max"].value == 3500.0
    assert items["EV-1.env.power_limit"].value == 125.0  # long-term package limit, not the short burst
    assert items["EV-1.env.unreadable"].value == 1


def test_unreadable_clocks_and_power_are_skips_with_the_reason() -> None:
    cpu = list_devices(backends=False).devices[0]
    env = _env(clocks={"cpu": {"current_mhz": None}}, power_limits={"rapl": None},
               unavailable={"clocks.cpu.governor": "no cpufreq here", "power_limits.rapl": "no /sys/class/powercap"})
    items = {i.id: i for i in environment_items(env, cpu)}
    assert items["EV-1.env.governor"].status == "skip" and items["EV-1.env.governor"].reason == "no cpufreq here"
    assert items["EV-1.env.power_limit"].reason == "no /sys/class/powercap"
    assert items["EV-1.env.clock"].status == "skip"


def test_gpu_environment_items_read_nvml_limits() -> None:
    env = _env(clocks={"gpus": [{"id": "cuda:0", "max_sm_mhz": 1980, "sm_mhz": 1755}]},
               power_limits={"gpus": [{"id": "cuda:0", "enforced_power_limit_w": 700.0, "power_limit_w": 700.0}]})
    items = {i.id: i for i in environment_items(env, GPU)}
    assert items["EV-1.env.clock"].value == 1980 and items["EV-1.env.clock"].details["current_sm_mhz"] == 1755
    assert items["EV-1.env.power_limit"].value == 700.0


def test_ev1_tasks_are_registered_for_every_suite(tmp_path: Path) -> None:
    tasks = registered_tasks()
    for tid in ("EV-1.device", "EV-1.environment"):
        assert tasks[tid].suites == ("quick", "standard", "full") and not tasks[tid].device_kinds
    cpu = list_devices(backends=False).devices[0]
    ctx = EvalContext(suite="quick", device=cpu, threads=2, seed=3, work_dir=tmp_path)
    assert measure_device(ctx)[0].id == "EV-1.device.name"
    # without the suite's record the task collects one itself
    items = {i.id: i for i in measure_environment(ctx)}
    assert items["EV-1.env.threads"].value == 2 and items["EV-1.env.command"].details["seed"] == 3
