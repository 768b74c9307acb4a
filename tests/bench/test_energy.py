"""EV-7 energy: counter interpolation, power x time, skips with reasons, and items."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from zhisuan.bench.energy import EnergyReading, energy_items, energy_window, reading_from_history
from zhisuan.device.base import DeviceSample
from zhisuan.device.null import NullProvider
from zhisuan.device.telemetry import TelemetrySampler, TelemetrySnapshot


def sample(t: float, *, power: float | None = None, energy: float | None = None, kind: str = "cpu",
           unavailable: dict[str, str] | None = None) -> DeviceSample:
    return DeviceSample(kind, 0, "fake", t, None, None, None, power, energy, None, {}, unavailable or {})


def snap(t: float, s: DeviceSample) -> TelemetrySnapshot:
    return TelemetrySnapshot(t, t, (s,))


class FakeSampler:
    """A stopped sampler with a fixed history: what energy_window reads."""

    def __init__(self, history: list[TelemetrySnapshot], interval_s: float = 1.0) -> None:
        self._history = history
        self.interval_s = interval_s

    def history(self) -> list[TelemetrySnapshot]:
        return list(self._history)

    @property
    def latest(self) -> TelemetrySnapshot | None:
        return self._history[-1] if self._history else None

    def wait(self, seconds: float) -> bool:
        return True


def test_counter_is_interpolated_at_the_window_edges() -> None:
    # a counter rising 50 J per second, read each second
    history = [snap(float(t), sample(float(t), energy=50.0 * t, power=50.0)) for t in range(11)]
    reading = reading_from_history(history, device_id="cpu:0", start_s=2.25, end_s=7.75, interval_s=1.0)
    assert reading.source == "RAPL counter" and reading.reading_kind == "cumulative counter"
    assert reading.joules == pytest.approx(50.0 * 5.5)
    assert reading.mean_power_w == pytest.approx(50.0)
    assert reading.duration_s == pytest.approx(5.5)


def test_power_times_time_integrates_the_step_function() -> None:
    # no counter; each power reading is the mean over the second before it
    powers = {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0}
    history = [snap(float(t), sample(float(t), power=p, kind="cuda",
                                     unavailable={"energy_j": "not supported"})) for t, p in powers.items()]
    reading = reading_from_history(history, device_id="cuda:0", start_s=1.5, end_s=3.5, interval_s=1.0)
    # 0.5 s at 20 W + 1 s at 30 W + 0.5 s at 40 W
    assert reading.joules == pytest.approx(0.5 * 20 + 30 + 0.5 * 40)
    assert reading.source == "power x time from averaged readings" and reading.reading_kind == "averaged"
    assert "1 s" in (reading.note or "")  # the NVML averaging window is documented
    assert "shorter than" in (reading.note or "")  # 2 s window < 4 intervals


def test_unreadable_power_gives_a_reason_and_skipped_items() -> None:
    why = "RAPL not readable: permission denied on /sys/class/powercap/intel-rapl:0/energy_uj"
    history = [snap(float(t), sample(float(t), unavailable={"power_w": why, "energy_j": why})) for t in range(5)]
    reading = reading_from_history(history, device_id="cpu:0", start_s=1.0, end_s=3.0, interval_s=1.0)
    assert not reading.available and why in (reading.reason or "")
    items = energy_items("EV-7.gemm.fp32", 100.0, "GFLOP/s", reading)
    assert [i.id for i in items] == ["EV-7.gemm.fp32.energy", "EV-7.gemm.fp32.power", "EV-7.gemm.fp32.perf_per_watt"]
    assert all(i.status == "skip" and why in (i.reason or "") and i.clause == "EV-7" for i in items)


def test_energy_items_values() -> None:
    reading = EnergyReading(120.0, 40.0, 3.0, "RAPL counter", 0.5, "cumulative counter", "cpu:0", 7)
    energy, power, ppw = energy_items("EV-7.gemm.fp32", 200.0, "GFLOP/s", reading)
    assert (energy.value, energy.unit, energy.status) == (120.0, "J", "pass")
    assert (power.value, power.unit) == (40.0, "W")
    assert ppw.value == pytest.approx(5.0) and ppw.unit == "GFLOP/s/W"
    assert energy.details["higher_is_better"] is False
    assert "RAPL counter" in ppw.method and "0.5 s" in ppw.method
    assert energy_items("EV-7.x", None, "samples/s", reading)[2].status == "skip"


def test_energy_window_with_a_fake_sampler_and_clock() -> None:
    history = [snap(float(t), sample(float(t), energy=10.0 * t)) for t in range(20)]
    times = iter([4.0, 9.0])
    ctx = SimpleNamespace(sampler=FakeSampler(history), device=SimpleNamespace(id="cpu:0"))
    with energy_window(ctx, clock=lambda: next(times)) as window:
        pass
    assert window.reading.joules == pytest.approx(50.0)
    assert window.reading.duration_s == pytest.approx(5.0)


def test_energy_window_without_sampler() -> None:
    ctx: Any = SimpleNamespace(sampler=None, device=SimpleNamespace(id="cpu:0"))
    with energy_window(ctx) as window:
        pass
    assert not window.reading.available and "no telemetry sampler" in (window.reading.reason or "")


def test_energy_window_on_the_null_device_matches_power_times_time() -> None:
    with TelemetrySampler(interval_s=0.05, providers=[NullProvider(power_w=80.0)]) as sampler:
        time.sleep(0.1)
        ctx = SimpleNamespace(sampler=sampler, device=SimpleNamespace(id="null:0"))
        with energy_window(ctx) as window:
            time.sleep(0.5)
    reading = window.reading
    assert reading.available and reading.reading_kind == "cumulative counter"
    assert reading.mean_power_w == pytest.approx(80.0, rel=0.05)
    assert reading.joules == pytest.approx(80.0 * reading.duration_s, rel=0.05)
