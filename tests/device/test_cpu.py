"""CPU discovery from fake /proc/cpuinfo and sysfs trees, and the real host CPU."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest

from zhisuan.device.cpu import (
    CpuProvider,
    CpuSensor,
    cpu_features,
    cpu_precisions,
    parse_cpuinfo,
    parse_size,
    read_caches,
    read_cpu_temperature,
    read_numa_nodes,
)

SPR_FLAGS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl "
    "avx512_vnni avx512_bf16 avx512_fp16 avx_vnni amx_tile amx_bf16 amx_int8"
)


def _cpuinfo(sockets: int, cores: int, threads_per_core: int, flags: str) -> str:
    blocks = []
    n = 0
    for socket in range(sockets):
        for _thread in range(threads_per_core):
            for core in range(cores):
                blocks.append(
                    f"processor\t: {n}\nvendor_id\t: GenuineIntel\n"
                    "model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                    f"physical id\t: {socket}\ncore id\t\t: {core}\ncpu cores\t: {cores}\n"
                    f"siblings\t: {cores * threads_per_core}\nmicrocode\t: 0x2b0004b1\n"
                    f"cpu MHz\t\t: 2000.000\nflags\t\t: {flags}\n"
                )
                n += 1
    return "\n".join(blocks) + "\n"


def test_parse_cpuinfo_counts_sockets_cores_threads_and_reads_amx_flags() -> None:
    info = parse_cpuinfo(_cpuinfo(sockets=2, cores=4, threads_per_core=2, flags=SPR_FLAGS))
    assert (info.sockets, info.physical_cores, info.threads) == (2, 8, 16)
    assert info.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert info.vendor == "GenuineIntel"
    assert info.microcode == "0x2b0004b1"
    assert info.mhz == 2000.0
    features = cpu_features(info.flags)
    for flag in (
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ):
        assert flag in features
    assert "fpu" not in features  # only inference-relevant flags are features
    assert cpu_precisions(info.flags) == ("fp32", "fp16", "bf16", "int8")


@pytest.mark.parametrize(
    ("flags", "precisions"),
    [
        ("sse4_2 avx avx2 fma", ("fp32",)),  # Haswell: no fast int8, no bf16
        ("avx2 avx512f avx512_vnni", ("fp32", "int8")),  # Cascade Lake
        ("avx2 avx_vnni", ("fp32", "int8")),  # Alder Lake
        ("avx512f avx512_vnni avx512_bf16", ("fp32", "bf16", "int8")),  # Zen 4, Cooper Lake
        ("amx_tile amx_bf16", ("fp32", "bf16")),
        ("amx_tile amx_fp16", ("fp32", "fp16")),
    ],
)
def test_cpu_precisions_follow_the_isa(flags: str, precisions: tuple[str, ...]) -> None:
    assert cpu_precisions(flags.split()) == precisions


def test_parse_cpuinfo_arm_features() -> None:
    text = (
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp bf16 i8mm sve\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xd4f\n\n"
        "processor\t: 1\nFeatures\t: fp asimd asimddp bf16 i8mm sve\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n"
    )
    info = parse_cpuinfo(text)
    assert info.threads == 2
    assert info.physical_cores is None  # Arm cpuinfo has no core id; psutil fills it in
    assert "0xd4f" in info.model_name
    assert cpu_features(info.flags) == ("asimd", "asimddp", "sve", "bf16", "i8mm")
    assert cpu_precisions(info.flags) == ("fp32", "bf16", "int8")


def test_parse_cpuinfo_of_nothing_is_an_unknown_cpu() -> None:
    info = parse_cpuinfo("")
    assert info.model_name == "unknown CPU" and info.flags == () and info.threads == 0


@pytest.mark.parametrize(
    ("text", "size"), [("48K", 48 * 1024), ("1024K", 2**20), ("32M", 32 * 2**20), ("512", 512)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def _cache_files(cpu: int, level: int, ctype: str, size: str, shared: str, index: int) -> dict[str, str]:
    base = f"cpu/cpu{cpu}/cache/index{index}"
    return {f"{base}/level": f"{level}\n", f"{base}/type": f"{ctype}\n", f"{base}/size": f"{size}\n",
            f"{base}/shared_cpu_list": f"{shared}\n"}  # fmt: skip


def _fake_cpu_sysfs(tree) -> Path:  # type: ignore[no-untyped-def]
    files: dict[str, str] = {}
    for cpu in range(4):
        files |= _cache_files(cpu, 1, "Data", "48K", str(cpu), 0)
        files |= _cache_files(cpu, 1, "Instruction", "32K", str(cpu), 1)
        files |= _cache_files(cpu, 2, "Unified", "2048K", str(cpu), 2)
        files |= _cache_files(cpu, 3, "Unified", "105M", "0-1" if cpu < 2 else "2-3", 3)
    files["node/node0/cpulist"] = "0-1\n"
    files["node/node1/cpulist"] = "2-3\n"
    files["cpuinfo"] = _cpuinfo(sockets=2, cores=2, threads_per_core=1, flags=SPR_FLAGS)
    return tree(files)


def test_caches_and_numa_from_a_fake_sysfs_tree(tree) -> None:  # type: ignore[no-untyped-def]
    root = _fake_cpu_sysfs(tree)
    caches = {c.name: c for c in read_caches(root / "cpu")}
    assert list(caches) == ["L1d", "L1i", "L2", "L3"]
    assert caches["L1d"].size_bytes == 48 * 1024 and caches["L1d"].instances == 4
    assert caches["L1i"].size_bytes == 32 * 1024
    assert caches["L2"].size_bytes == 2 * 2**20
    assert caches["L3"].size_bytes == 105 * 2**20 and caches["L3"].instances == 2  # one per socket
    nodes = read_numa_nodes(root / "node")
    assert [(n.index, n.cpus) for n in nodes] == [(0, "0-1"), (1, "2-3")]


def test_cpu_provider_discovers_from_injected_paths(tree) -> None:  # type: ignore[no-untyped-def]
    root = _fake_cpu_sysfs(tree)
    provider = CpuProvider(cpuinfo_path=root / "cpuinfo", cpu_root=root / "cpu", node_root=root / "node")
    found = provider.discover()
    assert found.reason is None
    (cpu,) = found.devices
    assert (cpu.kind, cpu.index, cpu.id) == ("cpu", 0, "cpu:0")
    assert cpu.name == "Intel(R) Xeon(R) Platinum 8480+"
    assert (cpu.details["sockets"], cpu.details["physical_cores"], cpu.details["threads"]) == (2, 4, 4)
    assert cpu.details["cache_bytes"] == {"L1d": 49152, "L1i": 32768, "L2": 2097152, "L3": 110100480}
    assert len(cpu.details["numa_nodes"]) == 2
    assert "amx_int8" in cpu.features and "bf16" in cpu.precisions
    assert cpu.memory_bytes and cpu.memory_bytes > 0
    assert cpu.memory_type is None and "dmidecode" in cpu.unavailable["memory_type"]
    d = cpu.to_dict()
    assert d["details"]["caches"][3] == {
        "name": "L3",
        "level": 3,
        "type": "Unified",
        "size_bytes": 110100480,
        "instances": 2,
    }


def test_cpu_provider_without_sysfs_says_what_is_missing(tmp_path: Path) -> None:
    provider = CpuProvider(cpuinfo_path=tmp_path / "nope", cpu_root=tmp_path, node_root=tmp_path)
    (cpu,) = provider.discover().devices
    assert cpu.precisions == ("fp32",)
    assert "cannot read" in cpu.unavailable["features"]
    assert "caches" in cpu.unavailable and "numa_nodes" in cpu.unavailable
    assert cpu.details["threads"] >= 1  # psutil still counts them


def test_the_real_host_cpu() -> None:
    (cpu,) = CpuProvider().discover().devices
    assert cpu.details["threads"] >= 1 and cpu.details["physical_cores"] >= 1
    assert cpu.precisions[0] == "fp32"
    assert cpu.memory_bytes and cpu.memory_bytes > 2**26
    assert all(f in cpu.details["flags"] for f in cpu.features)


Temp = namedtuple("Temp", "label current high critical")


def test_temperature_prefers_the_package_sensor() -> None:
    chips = {
        "nvme": [Temp("Composite", 30.0, None, None)],
        "coretemp": [Temp("Core 0", 50.0, None, None), Temp("Package id 0", 61.0, None, None)],
    }
    assert read_cpu_temperature(lambda: chips, "/nonexistent") == (61.0, None)
    amd = {"k10temp": [Temp("Tctl", 48.5, None, None)]}
    assert read_cpu_temperature(lambda: amd, "/nonexistent") == (48.5, None)


def test_temperature_falls_back_to_sys_class_thermal(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({
        "thermal/thermal_zone0/type": "acpitz\n", "thermal/thermal_zone0/temp": "27800\n",
        "thermal/thermal_zone1/type": "x86_pkg_temp\n", "thermal/thermal_zone1/temp": "45000\n",
    })  # fmt: skip
    assert read_cpu_temperature(lambda: {}, root / "thermal") == (45.0, None)


def test_no_temperature_sensor_is_none_with_reason(tmp_path: Path) -> None:
    value, reason = read_cpu_temperature(lambda: {}, tmp_path / "thermal")
    assert value is None
    assert reason and "no CPU sensor" in reason and "thermal zone" in reason


def test_cpu_sensor_reads_rapl_power_and_reports_missing_sensors(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({
        "powercap/intel-rapl:0/name": "package-0\n",
        "powercap/intel-rapl:0/energy_uj": "1000000\n",
        "powercap/intel-rapl:0/max_energy_range_uj": "262143328850\n",
    })  # fmt: skip
    provider = CpuProvider(powercap_root=root / "powercap", thermal_root=root / "thermal",
                           sensors_temperatures=lambda: {})  # fmt: skip
    times = iter([0.0, 2.0])
    sensor = CpuSensor(provider, "fake CPU", clock=lambda: next(times))
    (root / "powercap/intel-rapl:0/energy_uj").write_text("51000000\n")
    sample = sensor.read()
    assert sample.energy_j == pytest.approx(50.0)
    assert sample.power_w == pytest.approx(25.0)
    assert sample.memory_total_bytes and 0 < sample.memory_used_bytes <= sample.memory_total_bytes  # type: ignore[operator]
    assert sample.temperature_c is None and "thermal zone" in sample.unavailable["temperature_c"]
    for metric, value in sample.to_dict().items():  # nothing unread is reported as a number
        if value is None:
            assert metric in sample.unavailable


def test_cpu_sensor_without_rapl_reports_none_with_reason(tmp_path: Path) -> None:
    provider = CpuProvider(powercap_root=tmp_path / "powercap", thermal_root=tmp_path)
    sample = CpuSensor(provider, "fake CPU").read()
    assert sample.power_w is None and sample.energy_j is None
    assert "no RAPL domain" in sample.unavailable["power_w"]
    assert sample.utilization_pct is None or 0.0 <= sample.utilization_pct <= 100.0
