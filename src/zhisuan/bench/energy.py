"""EV-7 energy: joules and performance per watt over exactly the window of a performance figure.

:func:`energy_window` marks a window on the running :class:`~zhisuan.device.telemetry.TelemetrySampler`
of the evaluation and, when the window closes, works out the device's energy inside it from the
sampler's history. :func:`energy_items` turns that reading and the figure measured in the same
window into EV-7 report items (or skipped items with the reason when power is unreadable).

How the energy is obtained, best first (``EnergyReading.source`` says which was used):

- **a cumulative energy counter** ("RAPL counter" on CPUs through powercap ``energy_uj``, "NVML
  total energy counter" on NVIDIA GPUs from ``nvmlDeviceGetTotalEnergyConsumption``, Volta and
  later). The counter is read at every sample; its value at the window's start and end is
  interpolated linearly between the two samples around each edge, so the window need not fall
  on sample times. Counters integrate every joule, so they are the exact figure.
- **power x time** when there is no counter: each power reading is taken as the mean power over
  the interval before it (that is what RAPL-derived power is; NVML's ``nvmlDeviceGetPowerUsage``
  is a moving average over about 1 s on most datacentre GPUs, and only newer boards report a
  near-instantaneous value), and that step function is integrated over the window.
  ``EnergyReading.reading_kind`` records "averaged" or "instantaneous" accordingly.

The window's edges are blurred by at most one sampling interval for power x time, which is why
a reading keeps ``sampling_interval_s`` and warns when the window is shorter than a few intervals.

>>> from zhisuan.bench.energy import energy_window, energy_items
>>> with energy_window(ctx) as window:  # doctest: +SKIP
...     gflops = run_gemm()
>>> items = energy_items("EV-7.gemm.fp32", gflops, "GFLOP/s", window.reading)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from zhisuan.bench.schema import Item
from zhisuan.errors import InternalError
from zhisuan.results import Record

ReadingKind = Literal["cumulative counter", "averaged", "instantaneous"]

# What each device kind's counter and power readings are (documented in the module docstring).
_COUNTER_SOURCE = {"cpu": "RAPL counter", "cuda": "NVML total energy counter"}
_POWER_KIND: dict[str, ReadingKind] = {
    "cpu": "averaged",  # RAPL power is an energy delta over the interval
    "cuda": "averaged",  # NVML power usage: ~1 s moving average on most boards
    "null": "instantaneous",  # the NULL device's power is a constant
}
_POWER_NOTE = {
    "cpu": "power is the RAPL energy difference over each sampling interval",
    "cuda": "nvmlDeviceGetPowerUsage is a moving average over about 1 s on most NVIDIA GPUs "
    "(newer boards may report near-instantaneous power); the reading is taken as the mean "
    "over the interval before it",
}
# Fewer sampling intervals than this in a window makes power x time edge errors noticeable.
MIN_INTERVALS = 4


@dataclass(frozen=True)
class EnergyReading(Record):
    """The energy of one device over one window, or why it could not be read.

    ``joules`` and ``mean_power_w`` are ``None`` when unavailable and ``reason`` says why.
    ``reading_kind`` is "cumulative counter" (RAPL, NVML energy), "averaged" (power readings
    that are means over an interval) or "instantaneous".
    """

    joules: float | None
    mean_power_w: float | None
    duration_s: float
    source: str | None
    sampling_interval_s: float | None
    reading_kind: ReadingKind | None
    device_id: str | None
    samples: int
    reason: str | None = None
    note: str | None = None

    @property
    def available(self) -> bool:
        return self.joules is not None and self.reason is None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "available": self.available}


class EnergyWindow:
    """The handle :func:`energy_window` yields; ``reading`` is set when the window closes."""

    def __init__(self, device_id: str | None, start_s: float) -> None:
        self.device_id = device_id
        self.start_s = start_s
        self.end_s: float | None = None
        self._reading: EnergyReading | None = None

    @property
    def reading(self) -> EnergyReading:
        if self._reading is None:
            raise InternalError("the energy reading is read only after the energy_window closes")
        return self._reading


@contextmanager
def energy_window(
    ctx: Any,
    *,
    device_id: str | None = None,
    clock: Callable[[], float] = time.time,
    settle_s: float | None = None,
) -> Iterator[EnergyWindow]:
    """Measure the device's energy while the ``with`` body runs.

    ``ctx`` is an :class:`~zhisuan.bench.tasks.EvalContext` (its ``sampler`` and ``device`` are
    used); ``device_id`` defaults to ``ctx.device.id``. After the body the window waits for the
    sampler's next snapshot (at most ``settle_s``, default two sampling intervals) so the end
    edge lies between two readings. ``clock`` must be the clock of ``snapshot.timestamp_s``
    (``time.time``); tests inject their own.
    """
    sampler = getattr(ctx, "sampler", None)
    if device_id is None:
        device = getattr(ctx, "device", None)
        device_id = getattr(device, "id", None)
    window = EnergyWindow(device_id, clock())
    yield window
    window.end_s = clock()
    if sampler is None:
        window._reading = _unavailable(window, None, "no telemetry sampler was running for this evaluation")
        return
    interval = float(getattr(sampler, "interval_s", 0.0)) or None
    wait_s = settle_s if settle_s is not None else 2.0 * (interval or 0.5) + 0.2
    _wait_for_snapshot_after(sampler, window.end_s, wait_s)
    window._reading = reading_from_history(
        sampler.history(), device_id=device_id, start_s=window.start_s, end_s=window.end_s,
        interval_s=interval,
    )


def _wait_for_snapshot_after(sampler: Any, t_s: float, max_wait_s: float) -> None:
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        latest = getattr(sampler, "latest", None)
        if latest is not None and latest.timestamp_s >= t_s:
            return
        if sampler.wait(0.05):  # a stopped sampler took its final snapshot; nothing newer comes
            return


def _unavailable(window: EnergyWindow, interval_s: float | None, reason: str) -> EnergyReading:
    end = window.end_s if window.end_s is not None else window.start_s
    return EnergyReading(
        joules=None, mean_power_w=None, duration_s=max(0.0, end - window.start_s), source=None,
        sampling_interval_s=interval_s, reading_kind=None, device_id=window.device_id, samples=0,
        reason=reason,
    )


def reading_from_history(
    history: Sequence[Any],
    *,
    device_id: str | None,
    start_s: float,
    end_s: float,
    interval_s: float | None = None,
) -> EnergyReading:
    """Energy of ``device_id`` between ``start_s`` and ``end_s`` (``time.time()`` seconds).

    ``history`` is a list of :class:`~zhisuan.device.telemetry.TelemetrySnapshot` in time order.
    Uses the energy counter when every sample around the window has one, else power x time.
    """
    duration = max(0.0, end_s - start_s)
    window = EnergyWindow(device_id, start_s)
    window.end_s = end_s
    if end_s <= start_s:
        return _unavailable(window, interval_s, "the window has no duration")
    points = []  # (timestamp_s, DeviceSample) of this device, in time order
    for snap in history:
        for s in snap.samples:
            if device_id is None or s.id == device_id:
                points.append((float(snap.timestamp_s), s))
                break
    if not points:
        return _unavailable(window, interval_s, f"the telemetry has no samples of device {device_id}")
    kind = points[0][1].kind
    inside = [p for p in points if start_s <= p[0] <= end_s]
    before = [p for p in points if p[0] < start_s][-1:]
    after = [p for p in points if p[0] > end_s][:1]
    span = before + inside + after
    notes = []
    if interval_s and duration < MIN_INTERVALS * interval_s:
        notes.append(f"the window ({duration:.2f} s) is shorter than {MIN_INTERVALS} sampling intervals "
                     f"({interval_s:g} s); its edges blur the figure")

    counters = [(t, s.energy_j) for t, s in span]
    if len(span) >= 2 and all(e is not None for _, e in counters) and before and after:
        e0 = _interpolate(counters, start_s)
        e1 = _interpolate(counters, end_s)
        joules = max(0.0, e1 - e0)
        return EnergyReading(
            joules=joules, mean_power_w=joules / duration, duration_s=duration,
            source=_COUNTER_SOURCE.get(kind, f"{kind} energy counter"),
            sampling_interval_s=interval_s, reading_kind="cumulative counter", device_id=device_id,
            samples=len(span), note="; ".join(notes) or None,
        )

    # power x time: a power reading at t covers (previous read, t]; integrate over the window
    powered = [(t, s.power_w) for t, s in points if s.power_w is not None]
    if not powered:
        reasons = points[-1][1].unavailable
        why = reasons.get("power_w") or reasons.get("energy_j") or "the sensor reports no power"
        return _unavailable(window, interval_s, f"power is not readable on {device_id}: {why}")
    covering = [p for p in powered if p[0] > start_s]
    if not covering or covering[-1][0] < end_s:
        return _unavailable(window, interval_s, "no power reading covers the end of the window "
                            "(the sampler stopped or lags)")
    joules, used = 0.0, 0
    prev_t = max([t for t, _ in powered if t <= start_s], default=None)
    if prev_t is None:
        notes.append("no reading before the window; the first reading's power is extended back to its start")
        prev_t = start_s
    for t, p in covering:
        lo, hi = max(prev_t, start_s), min(t, end_s)
        if hi > lo:
            joules += float(p) * (hi - lo)
            used += 1
        prev_t = t
        if t >= end_s:
            break
    reading_kind = _POWER_KIND.get(kind, "averaged")
    if kind in _POWER_NOTE:
        notes.append(_POWER_NOTE[kind])
    return EnergyReading(
        joules=joules, mean_power_w=joules / duration, duration_s=duration,
        source=f"power x time from {reading_kind} readings", sampling_interval_s=interval_s,
        reading_kind=reading_kind, device_id=device_id,
        samples=used, note="; ".join(notes) or None,
    )


def _interpolate(points: Sequence[tuple[float, float | None]], t: float) -> float:
    """The counter's value at ``t`` by linear interpolation between the readings around it."""
    for (t0, e0), (t1, e1) in pairwise(points):
        if t0 <= t <= t1:
            assert e0 is not None and e1 is not None
            if t1 == t0:
                return float(e1)
            return float(e0) + (float(e1) - float(e0)) * (t - t0) / (t1 - t0)
    raise InternalError(f"time {t} is outside the readings {points[0][0]}..{points[-1][0]}")


def energy_items(id_prefix: str, perf_value: float | None, perf_unit: str, reading: EnergyReading) -> list[Item]:
    """EV-7 items for one window: energy (J), mean power (W) and performance per watt.

    ``perf_value`` (in ``perf_unit``, e.g. GFLOP/s) must be measured over the same window as
    ``reading``. Items are skipped with the reading's reason when the energy is unavailable.

    >>> r = EnergyReading(20.0, 10.0, 2.0, "RAPL counter", 0.5, "cumulative counter", "cpu:0", 5)
    >>> [(i.id, i.value, i.unit) for i in energy_items("EV-7.gemm.fp32", 100.0, "GFLOP/s", r)]
    [('EV-7.gemm.fp32.energy', 20.0, 'J'), ('EV-7.gemm.fp32.power', 10.0, 'W'), \
('EV-7.gemm.fp32.perf_per_watt', 10.0, 'GFLOP/s/W')]
    """
    what = id_prefix.split(".", 1)[-1]
    names = {
        "energy": (f"Energy over the {what} run", "J"),
        "power": (f"Mean power during the {what} run", "W"),
        "perf_per_watt": (f"{what} performance per watt", f"{perf_unit}/W"),
    }
    if not reading.available:
        reason = reading.reason or "energy was not measured"
        return [Item.skipped(f"{id_prefix}.{k}", "EV-7", name, reason=reason, unit=unit)
                for k, (name, unit) in names.items()]
    assert reading.joules is not None and reading.mean_power_w is not None
    method = (f"{reading.source} over the {reading.duration_s:.2f} s window of the measurement, "
              f"device {reading.device_id}, sampled every {reading.sampling_interval_s} s "
              f"({reading.reading_kind})")
    details = {"energy_reading": reading.to_dict()}
    items = [
        Item.measured(f"{id_prefix}.energy", "EV-7", names["energy"][0], value=reading.joules, unit="J",
                      method=method, repeats=1, details={**details, "higher_is_better": False}),
        Item.measured(f"{id_prefix}.power", "EV-7", names["power"][0], value=reading.mean_power_w,
                      unit="W", method=method + "; energy / duration", repeats=1,
                      details={**details, "higher_is_better": False}),
    ]
    if perf_value is None or reading.mean_power_w <= 0:
        why = "no performance figure for this window" if perf_value is None else "mean power was 0 W"
        items.append(Item.skipped(f"{id_prefix}.perf_per_watt", "EV-7", names["perf_per_watt"][0],
                                  reason=why, unit=names["perf_per_watt"][1]))
    else:
        items.append(Item.measured(
            f"{id_prefix}.perf_per_watt", "EV-7", names["perf_per_watt"][0],
            value=float(perf_value) / reading.mean_power_w, unit=names["perf_per_watt"][1],
            method=f"{perf_value:.4g} {perf_unit} / {reading.mean_power_w:.4g} W mean power; " + method,
            repeats=1, details={**details, "performance": perf_value, "performance_unit": perf_unit},
        ))
    return items
