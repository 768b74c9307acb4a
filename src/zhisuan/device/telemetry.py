"""Sample every device's telemetry on a background thread, keep a bounded history, summarise.

The summary covers the whole run even after the history has dropped old snapshots, because it
is accumulated as samples arrive. Energy comes from a hardware counter where one exists (RAPL,
NVML total energy) and otherwise from power x time; the summary says which (EV-7 uses it).

>>> from zhisuan.device.telemetry import TelemetrySampler
>>> with TelemetrySampler(interval_s=0.1, kinds=["null"]) as sampler:
...     run_the_workload()  # doctest: +SKIP
>>> sampler.summary().devices[0].mean_power_w  # doctest: +SKIP
100.0
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zhisuan.device.base import DeviceProvider, DeviceSample, Sensor
from zhisuan.errors import InternalError, UserError
from zhisuan.results import Record


@dataclass(frozen=True)
class TelemetrySnapshot(Record):
    """One read of every device, taken together."""

    timestamp_s: float  # time.time()
    elapsed_s: float  # since the sampler started
    samples: tuple[DeviceSample, ...]

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        fields["devices"] = fields.pop("samples")  # one reading per device
        return fields


@dataclass(frozen=True)
class DeviceSummary(Record):
    """One device over the run. A metric never read is ``None`` and ``unavailable`` says why."""

    kind: str
    index: int
    name: str
    samples: int
    mean_utilization_pct: float | None
    max_utilization_pct: float | None
    mean_power_w: float | None
    max_power_w: float | None
    energy_j: float | None
    energy_source: str | None  # "counter" (RAPL / NVML energy) or "power x time"
    max_temperature_c: float | None
    max_memory_used_bytes: int | None
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **super().to_dict()}


@dataclass(frozen=True)
class TelemetrySummary(Record):
    interval_s: float
    duration_s: float
    snapshots: int
    devices: tuple[DeviceSummary, ...]

    def device(self, device_id: str) -> DeviceSummary:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise UserError(
            f"no device {device_id!r} in this telemetry; have: {', '.join(d.id for d in self.devices)}"
        )

    @property
    def total_energy_j(self) -> float | None:
        """Energy of every device together; ``None`` unless every device's energy is known."""
        values = [d.energy_j for d in self.devices]
        return sum(values) if values and all(v is not None for v in values) else None  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        devices = fields.pop("devices")
        return {**fields, "total_energy_j": self.total_energy_j, "devices": devices}


@dataclass
class _Stat:
    total: float = 0.0
    count: int = 0
    peak: float | None = None

    def add(self, value: float | None) -> None:
        if value is not None:
            self.total += value
            self.count += 1
            self.peak = value if self.peak is None else max(self.peak, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class _Running:
    """Running statistics of one device, updated per sample (so history can stay bounded)."""

    def __init__(self, sample: DeviceSample) -> None:
        self.kind, self.index, self.name = sample.kind, sample.index, sample.name
        self.n = 0
        self.util = _Stat()
        self.power = _Stat()
        self.temp = _Stat()
        self.mem = _Stat()
        self.power_time_j = 0.0
        self.power_time_s = 0.0
        self.energy_j: float | None = None
        self.unavailable: dict[str, str] = {}

    def add(self, s: DeviceSample, dt_s: float) -> None:
        self.n += 1
        self.util.add(s.utilization_pct)
        self.power.add(s.power_w)
        self.temp.add(s.temperature_c)
        self.mem.add(s.memory_used_bytes)
        if s.power_w is not None:
            # power is an average over the interval before the read (RAPL delta, NVML ~1 s window)
            self.power_time_j += s.power_w * dt_s
            self.power_time_s += dt_s
        if s.energy_j is not None:
            self.energy_j = s.energy_j
        self.unavailable.update(s.unavailable)
        for metric in list(self.unavailable):  # a metric read at least once is not unavailable
            if metric in _FIELDS and getattr(s, metric) is not None:
                self.unavailable.pop(metric)

    def summary(self) -> DeviceSummary:
        energy, source = self.energy_j, "counter" if self.energy_j is not None else None
        if energy is None and self.power_time_s > 0:
            energy, source = self.power_time_j, "power x time"
        return DeviceSummary(
            kind=self.kind,
            index=self.index,
            name=self.name,
            samples=self.n,
            mean_utilization_pct=self.util.mean,
            max_utilization_pct=self.util.peak,
            # time-weighted, so an irregular last interval does not skew it
            mean_power_w=self.power_time_j / self.power_time_s if self.power_time_s > 0 else self.power.mean,
            max_power_w=self.power.peak,
            energy_j=energy,
            energy_source=source,
            max_temperature_c=self.temp.peak,
            max_memory_used_bytes=int(self.mem.peak) if self.mem.peak is not None else None,
            unavailable=dict(self.unavailable),
        )


_FIELDS = (
    "utilization_pct",
    "memory_used_bytes",
    "memory_total_bytes",
    "power_w",
    "energy_j",
    "temperature_c",
)


def open_sensors(providers: Sequence[DeviceProvider]) -> list[Sensor]:
    sensors: list[Sensor] = []
    try:
        for provider in providers:
            sensors.extend(provider.open_sensors())
    except BaseException:
        for sensor in sensors:
            sensor.close()
        raise
    return sensors


class TelemetrySampler:
    """Reads every device each ``interval_s`` seconds on a daemon thread.

    Use it as a context manager (or :meth:`start` / :meth:`stop`). It keeps the last ``history``
    snapshots, calls ``on_sample`` (from its thread) after each one, and takes a final snapshot
    on stop so a run shorter than one interval still has a reading.
    """

    def __init__(
        self,
        *,
        interval_s: float = 0.5,
        history: int = 3600,
        kinds: Sequence[str] | None = None,
        providers: Sequence[DeviceProvider] | None = None,
        on_sample: Callable[[TelemetrySnapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise UserError(f"the sampling interval must be > 0 s, not {interval_s}")
        if history < 1:
            raise UserError(f"the history must keep at least 1 snapshot, not {history}")
        if providers is None:
            from zhisuan.device.registry import select_providers

            providers = select_providers(kinds)
        self.interval_s = float(interval_s)
        self._providers = list(providers)
        self._on_sample = on_sample
        self._clock = clock
        self._history: deque[TelemetrySnapshot] = deque(maxlen=history)
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sensors: list[Sensor] = []
        self._t0 = self._last_t = 0.0
        self._count = 0
        self._error: BaseException | None = None

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> TelemetrySampler:
        if self._thread is not None:
            raise InternalError("TelemetrySampler.start() called twice")
        self._sensors = open_sensors(self._providers)
        self._t0 = self._last_t = self._clock()
        self._thread = threading.Thread(target=self._loop, name="zhisuan-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> TelemetrySummary:
        """Stop sampling (after one final snapshot), close the sensors, return the summary."""
        if self._thread is None:
            raise InternalError("TelemetrySampler.stop() before start()")
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            try:
                if self._error is None:
                    self.sample()
            finally:
                for sensor in self._sensors:
                    sensor.close()
        if self._error is not None:
            raise InternalError(f"the telemetry thread failed: {self._error!r}") from self._error
        return self.summary()

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the sampler was stopped meanwhile."""
        return self._stop.wait(seconds)

    # sampling ------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self.sample()
        except BaseException as exc:  # reported by stop(), never lost in the thread
            self._error = exc

    def sample(self) -> TelemetrySnapshot:
        """Read every sensor now and record the snapshot (the thread calls this each interval)."""
        samples = tuple(sensor.read() for sensor in self._sensors)
        now = self._clock()
        with self._lock:
            dt = now - self._last_t
            self._last_t = now
            snapshot = TelemetrySnapshot(time.time(), now - self._t0, samples)
            self._history.append(snapshot)
            self._count += 1
            for s in samples:
                self._running.setdefault(s.id, _Running(s)).add(s, dt)
        if self._on_sample is not None:
            self._on_sample(snapshot)
        return snapshot

    # results -------------------------------------------------------------------------------
    @property
    def latest(self) -> TelemetrySnapshot | None:
        with self._lock:
            return self._history[-1] if self._history else None

    def history(self) -> list[TelemetrySnapshot]:
        with self._lock:
            return list(self._history)

    def summary(self) -> TelemetrySummary:
        with self._lock:
            return TelemetrySummary(
                interval_s=self.interval_s,
                duration_s=self._last_t - self._t0,
                snapshots=self._count,
                devices=tuple(r.summary() for r in self._running.values()),
            )


def sample_once(
    *,
    interval_s: float = 0.5,
    kinds: Sequence[str] | None = None,
    providers: Sequence[DeviceProvider] | None = None,
) -> TelemetrySnapshot:
    """One snapshot of every device; rates (utilisation, power) are measured over ``interval_s``.

    >>> sample_once(interval_s=0.2).samples[0].kind
    'cpu'
    """
    if not interval_s > 0:
        raise UserError(f"the sampling interval must be > 0 s, not {interval_s}")
    if providers is None:
        from zhisuan.device.registry import select_providers

        providers = select_providers(kinds)
    t0 = time.monotonic()
    sensors = open_sensors(providers)
    try:
        time.sleep(interval_s)
        samples = tuple(sensor.read() for sensor in sensors)
    finally:
        for sensor in sensors:
            sensor.close()
    return TelemetrySnapshot(time.time(), time.monotonic() - t0, samples)
