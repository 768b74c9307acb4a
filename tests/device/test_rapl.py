"""RAPL through a fake /sys/class/powercap tree: power, wrap-around, and unreadable counters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from zhisuan.device.rapl import RaplMeter, find_package_domains


def _powercap(
    tree: Callable[[dict[str, str]], Path], packages: dict[int, int], max_uj: int = 10_000_000
) -> Path:
    files = {}
    for n, energy in packages.items():
        files[f"powercap/intel-rapl:{n}/name"] = f"package-{n}\n"
        files[f"powercap/intel-rapl:{n}/energy_uj"] = f"{energy}\n"
        files[f"powercap/intel-rapl:{n}/max_energy_range_uj"] = f"{max_uj}\n"
        # sub-zones (core, dram) sit inside the package and must not be counted twice
        files[f"powercap/intel-rapl:{n}/intel-rapl:{n}:0/name"] = "core\n"
        files[f"powercap/intel-rapl:{n}:0/name"] = "core\n"
        files[f"powercap/intel-rapl:{n}:0/energy_uj"] = "123\n"
    files["powercap/intel-rapl:9/name"] = "psys\n"  # the whole platform: excluded
    files["powercap/intel-rapl:9/energy_uj"] = "999999\n"
    return tree(files) / "powercap"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _set(root: Path, n: int, energy: int) -> None:
    (root / f"intel-rapl:{n}" / "energy_uj").write_text(f"{energy}\n")


def test_power_is_energy_delta_over_time_summed_over_packages(tree) -> None:  # type: ignore[no-untyped-def]
    root = _powercap(tree, {0: 1_000_000, 1: 2_000_000})
    assert [d.name for d in find_package_domains(root)[0]] == ["package-0", "package-1"]
    clock = Clock()
    meter = RaplMeter(root, clock=clock)
    assert meter.available
    _set(root, 0, 3_000_000)  # +2 J
    _set(root, 1, 5_000_000)  # +3 J
    clock.t += 2.0
    r = meter.read()
    assert r.reason is None
    assert r.energy_j == pytest.approx(5.0)
    assert r.power_w == pytest.approx(2.5)
    _set(root, 0, 4_000_000)  # +1 J
    clock.t += 0.5
    r = meter.read()
    assert r.energy_j == pytest.approx(6.0)  # cumulative since the meter opened
    assert r.power_w == pytest.approx(2.0)


def test_counter_wrap_around_uses_max_energy_range(tree) -> None:  # type: ignore[no-untyped-def]
    root = _powercap(tree, {0: 9_500_000}, max_uj=10_000_000)
    clock = Clock()
    meter = RaplMeter(root, clock=clock)
    _set(root, 0, 500_000)  # wrapped: 0.5 J to the top, 0.5 J after restarting at 0
    clock.t += 1.0
    r = meter.read()
    assert r.energy_j == pytest.approx(1.0)
    assert r.power_w == pytest.approx(1.0)


def test_no_time_between_reads_gives_no_power(tree) -> None:  # type: ignore[no-untyped-def]
    meter = RaplMeter(_powercap(tree, {0: 0}), clock=lambda: 5.0)
    r = meter.read()
    assert r.power_w is None and r.energy_j == 0.0
    assert r.reason and "no time passed" in r.reason


def test_absent_powercap_is_none_with_reason(tmp_path: Path) -> None:
    r = RaplMeter(tmp_path / "powercap").read()
    assert (r.energy_j, r.power_w) == (None, None)
    assert r.reason and r.reason.startswith("no RAPL domain") and "does not exist" in r.reason


def test_powercap_without_a_package_domain(tree) -> None:  # type: ignore[no-untyped-def]
    root = (
        tree({"powercap/intel-rapl:0/name": "psys\n", "powercap/intel-rapl:0/energy_uj": "1\n"}) / "powercap"
    )
    r = RaplMeter(root).read()
    assert r.power_w is None and r.reason and "no RAPL package domain" in r.reason


def test_permission_denied_is_none_with_reason(tree, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    root = _powercap(tree, {0: 1_000_000})
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        # tests run as root, where chmod 000 would not stop the read; Linux >= 5.10 denies non-root
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    meter = RaplMeter(root)
    r = meter.read()
    assert not meter.available
    assert (r.energy_j, r.power_w) == (None, None)
    assert r.reason and r.reason.startswith("RAPL not readable: permission denied")
