"""The EV-1 environment record: every value read, or None with the reason."""

from __future__ import annotations

from pathlib import Path

from zhisuan.bench.environment_record import collect_environment
from zhisuan.device import DeviceInfo, DeviceList, list_devices

GPU = DeviceInfo(
    "cuda", 0, "NVIDIA A100", 40 << 30, "HBM", ("sm_80",), ("fp32", "tf32", "fp16", "bf16", "int8"), "550.54",
    details={"cuda_driver_version": "12.4", "nvml_version": "12.550", "power_limit_w": 400.0,
             "enforced_power_limit_w": 300.0, "max_sm_clock_mhz": 1410, "max_mem_clock_mhz": 1215},
)


def fake_sys(root: Path) -> Path:
    freq = root / "devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    for name, value in {"scaling_governor": "performance", "scaling_driver": "intel_pstate",
                        "scaling_cur_freq": "2400000", "cpuinfo_min_freq": "800000", "cpuinfo_max_freq": "3500000"}.items():
        (freq / name).write_text(value + "\n")
    pstate = root / "devices/system/cpu/intel_pstate"
    pstate.mkdir(parents=True)
    (pstate / "no_turbo").write_text("0\n")
    zone = root / "class/powercap/intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "enabled").write_text("1\n")
    (zone / "energy_uj").write_text("1\n")
    for k, (name, limit, window) in enumerate((("long_term", 125_000_000, 28_000_000), ("short_term", 200_000_000, 2440))):
        (zone / f"constraint_{k}_name").write_text(name + "\n")
        (zone / f"constraint_{k}_power_limit_uw").write_text(f"{limit}\n")
        (zone / f"constraint_{k}_time_window_us").write_text(f"{window}\n")
    (zone / "constraint_0_max_power_uw").write_text("150000000\n")
    return root


def test_record_reads_clocks_and_rapl_limits_from_sysfs(tmp_path: Path) -> None:
    found = list_devices(backends=False)
    env = collect_environment(["zhisuan", "evaluate", "--seed", "3"], 3, 2, found.devices[0], devices=found,
                              sys_root=fake_sys(tmp_path / "sys"), libraries=False)
    cpu = env["clocks"]["cpu"]
    assert cpu == {"governor": "performance", "driver": "intel_pstate", "current_mhz": 2400.0, "min_mhz": 800.0,
                   "max_mhz": 3500.0, "boost": True}
    zone = env["power_limits"]["rapl"][0]
    assert zone["name"] == "package-0" and zone["enabled"] is True
    assert zone["constraints"][0] == {"name": "long_term", "power_limit_w": 125.0, "max_power_w": 150.0,
                                      "time_window_s": 28.0}
    assert env["command_line"] == "zhisuan evaluate --seed 3" and env["seed"] == 3
    assert env["threads"]["requested"] == 2
    assert not any(k.startswith(("clocks.cpu", "power_limits.rapl")) for k in env["unavailable"])


def test_missing_sysfs_gives_none_with_reasons(tmp_path: Path) -> None:
    found = list_devices(backends=False)
    env = collect_environment(["zhisuan"], 0, 1, found.devices[0], devices=found, sys_root=tmp_path / "empty",
                              os_release=tmp_path / "no-os-release", libraries=False)
    assert env["clocks"]["cpu"]["governor"] is None
    assert "no cpufreq" in env["unavailable"]["clocks.cpu.governor"]
    assert env["power_limits"]["rapl"] is None and "powercap" in env["unavailable"]["power_limits.rapl"]
    assert env["os"]["distribution"] is None and "os-release" in env["unavailable"]["os.distribution"]
    assert env["unavailable"]["drivers.nvidia"]  # no GPU: the reason from the registry, not a fake value
    assert all(isinstance(v, str) and v for v in env["unavailable"].values())


def test_gpu_drivers_and_power_limits_come_from_the_device_registry(tmp_path: Path) -> None:
    cpu = list_devices(backends=False).devices[0]
    found = DeviceList((cpu, GPU), {})
    env = collect_environment(["zhisuan"], 0, 1, GPU, devices=found, sys_root=tmp_path, libraries=False)
    assert env["drivers"]["nvidia"] == "550.54" and env["drivers"]["cuda_driver"] == "12.4"
    assert env["power_limits"]["gpus"] == [{"id": "cuda:0", "power_limit_w": 400.0, "enforced_power_limit_w": 300.0}]
    clocks = env["clocks"]["gpus"][0]
    assert clocks["max_sm_mhz"] == 1410 and clocks["max_mem_mhz"] == 1215
    assert env["hardware"]["gpus"][0]["name"] == "NVIDIA A100" and env["device"]["id"] == "cuda:0"


def test_library_versions_and_providers_are_recorded(tmp_path: Path) -> None:
    found = list_devices(backends=False)
    env = collect_environment(["zhisuan"], 0, 1, found.devices[0], devices=found, sys_root=tmp_path)
    libs = env["libraries"]
    assert "CPUExecutionProvider" in libs["onnxruntime"]["providers"]
    assert libs["numpy"]["version"] and libs["zhisuan"]["version"]
    assert libs["torch"]["intra_op_threads"] >= 1
    assert libs["onnx"]["opset"] >= 17
    assert env["python"]["version"].startswith("3.")
