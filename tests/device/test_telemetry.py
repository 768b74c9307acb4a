"""The telemetry sampler: thread, bounded history, summary (what EV-7 reads), failures."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from zhisuan.device.base import DeviceSample, Discovery, SampleBuilder
from zhisuan.device.null import MISSING_REASON, NullProvider
from zhisuan.device.nvidia import NvidiaProvider
from zhisuan.device.telemetry import TelemetrySampler, sample_once
from zhisuan.errors import InternalError, UserError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class ScriptedSensor:
    """A device whose power follows a script and that has no energy counter."""

    powers: list[float | None]
    kind: str = "scripted"
    index: int = 0
    name: str = "scripted"
    fail: bool = False

    def read(self) -> DeviceSample:
        if self.fail:
            raise RuntimeError("sensor bug")
        b = SampleBuilder()
        power = self.powers.pop(0)
        if power is None:
            b.missing("power_w", "dropped out")
        b.values["power_w"] = power
        b.missing("energy_j", "no counter")
        return b.build(self.kind, self.index, self.name, {})

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedProvider:
    sensor: ScriptedSensor
    kind: str = "scripted"
    default: bool = False

    def discover(self) -> Discovery:
        return Discovery(self.kind, ())

    def open_sensors(self) -> list[ScriptedSensor]:
        return [self.sensor]


def test_summary_integrates_power_over_time_without_a_counter() -> None:
    clock = Clock()
    sensor = ScriptedSensor([10.0, 30.0, None, 20.0])
    sampler = TelemetrySampler(interval_s=3600, providers=[ScriptedProvider(sensor)], clock=clock).start()
    for step in (1.0, 1.0, 1.0):
        clock.t += step
        sampler.sample()
    clock.t += 2.0
    summary = sampler.stop()  # takes the final sample (20 W over the last 2 s)
    (d,) = summary.devices
    assert d.samples == 4 and summary.snapshots == 4
    assert d.energy_j == pytest.approx(10 + 30 + 20 * 2)
    assert d.energy_source == "power x time"
    assert d.mean_power_w == pytest.approx(80 / 4)  # time-weighted over the 4 s with a reading
    assert d.max_power_w == 30.0
    assert "power_w" not in d.unavailable  # it was read at least once
    assert d.unavailable["energy_j"] == "no counter"
    assert summary.duration_s == pytest.approx(5.0)
    assert sensor.closed


def test_summary_uses_the_energy_counter_of_the_null_device() -> None:
    clock = Clock()
    sampler = TelemetrySampler(
        interval_s=3600, providers=[NullProvider(count=2, clock=clock)], clock=clock
    ).start()
    clock.t += 2.5
    summary = sampler.stop()
    assert [d.id for d in summary.devices] == ["null:0", "null:1"]
    d = summary.device("null:1")
    assert d.energy_j == pytest.approx(250.0) and d.energy_source == "counter"
    assert summary.total_energy_j == pytest.approx(500.0)
    assert d.mean_utilization_pct == 50.0 and d.max_memory_used_bytes == 2**29
    assert d.max_temperature_c is None and d.unavailable["temperature_c"] == MISSING_REASON
    with pytest.raises(UserError, match="no device 'cpu:0'"):
        summary.device("cpu:0")


def test_background_thread_samples_and_history_is_bounded() -> None:
    seen = []
    with TelemetrySampler(interval_s=0.02, history=3, kinds=["null"], on_sample=seen.append) as sampler:
        deadline = time.monotonic() + 5
        while len(seen) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    summary = sampler.summary()
    assert summary.snapshots >= 7  # six from the thread and the final one
    assert len(sampler.history()) == 3  # the history keeps only the newest
    assert sampler.history()[-1] is sampler.latest
    assert summary.devices[0].samples == summary.snapshots  # the summary still covers every sample
    elapsed = [s.elapsed_s for s in sampler.history()]
    assert elapsed == sorted(elapsed)


def test_a_sensor_failure_in_the_thread_is_raised_on_stop() -> None:
    sampler = TelemetrySampler(interval_s=0.01, providers=[ScriptedProvider(ScriptedSensor([], fail=True))])
    sampler.start()
    time.sleep(0.1)
    with pytest.raises(InternalError, match="telemetry thread failed: RuntimeError"):
        sampler.stop()


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="interval must be > 0"):
        TelemetrySampler(interval_s=0)
    with pytest.raises(UserError, match="at least 1 snapshot"):
        TelemetrySampler(history=0)


def test_sample_once_real_cpu_and_null() -> None:
    snapshot = sample_once(interval_s=0.1, kinds=["cpu", "null"])
    cpu, null = snapshot.samples
    assert cpu.id == "cpu:0" and cpu.memory_total_bytes and cpu.memory_used_bytes
    for metric in ("utilization_pct", "power_w", "energy_j", "temperature_c"):
        value = getattr(cpu, metric)
        assert value is not None or cpu.unavailable[metric]  # read, or None with a reason
    assert null.power_w == 100.0 and null.energy_j == pytest.approx(10.0, rel=0.5)
    assert snapshot.elapsed_s >= 0.1


def test_no_gpu_means_no_gpu_sensors_and_no_crash(nvml_fakes) -> None:  # type: ignore[no-untyped-def]
    nvml = nvml_fakes.FakeNVML([], init_error=nvml_fakes.LibraryNotFound())
    with TelemetrySampler(interval_s=0.05, providers=[NvidiaProvider(nvml=nvml)]) as sampler:
        time.sleep(0.06)
    assert sampler.summary().devices == ()


def test_sampler_with_fake_gpus_closes_nvml(two_gpus) -> None:  # type: ignore[no-untyped-def]
    with TelemetrySampler(interval_s=3600, providers=[NvidiaProvider(nvml=two_gpus)]) as sampler:
        assert two_gpus.init_count == 2
    summary = sampler.summary()
    assert two_gpus.init_count == 0
    h100, rtx = summary.devices
    assert h100.mean_power_w == 350.0 and h100.energy_source == "counter"
    assert rtx.mean_power_w is None and rtx.energy_j is None
    assert rtx.unavailable["power_w"] == "nvmlDeviceGetPowerUsage: Not Supported"
