"""The NULL device: a fake accelerator with fixed, known telemetry, so the whole stack (sampler,
summary, exporter, CLI) can be tested without hardware, as tinygrad's NULL device does.

It is never listed unless asked for: ``zhisuan device list --kind null``, or
``list_devices(kinds=["null"])``. Its power is constant, so its energy is exactly power x time,
and the metrics named in ``missing`` are unavailable with a reason.

>>> from zhisuan.device.null import NullProvider
>>> sensor = NullProvider(power_w=50.0).open_sensors()[0]
>>> sensor.read().power_w
50.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zhisuan.device.base import DeviceInfo, DeviceSample, Discovery, SampleBuilder
from zhisuan.precision import Precision

MISSING_REASON = "the NULL device has no such sensor"


@dataclass(frozen=True)
class NullProvider:
    kind: str = "null"
    default: bool = False
    count: int = 1
    memory_bytes: int = 1 << 30
    utilization_pct: float = 50.0
    power_w: float = 100.0
    temperature_c: float = 40.0
    clock_mhz: float = 1000.0
    missing: tuple[str, ...] = ("temperature_c",)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def discover(self) -> Discovery:
        devices = tuple(
            DeviceInfo(
                kind=self.kind,
                index=i,
                name=f"NULL device {i}",
                memory_bytes=self.memory_bytes,
                memory_type="none",
                features=("null",),
                precisions=tuple(Precision),
                driver_version="null",
                details={"note": "a fake device for tests; its telemetry is fixed"},
            )
            for i in range(self.count)
        )
        return Discovery(self.kind, devices)

    def open_sensors(self) -> list[NullSensor]:
        return [NullSensor(self, i) for i in range(self.count)]


class NullSensor:
    kind = "null"

    def __init__(self, provider: NullProvider, index: int) -> None:
        self._p = provider
        self.index = index
        self.name = f"NULL device {index}"
        self._t0 = provider.clock()

    def read(self) -> DeviceSample:
        p = self._p
        b = SampleBuilder()
        b.values.update(
            utilization_pct=p.utilization_pct,
            memory_used_bytes=p.memory_bytes // 2,
            memory_total_bytes=p.memory_bytes,
            power_w=p.power_w,
            energy_j=p.power_w * (p.clock() - self._t0),
            temperature_c=p.temperature_c,
        )
        clocks = {"core": p.clock_mhz}
        for metric in p.missing:
            if metric.startswith("clocks_mhz."):
                clocks.pop(metric.split(".", 1)[1], None)
                b.unavailable[metric] = MISSING_REASON
            else:
                b.missing(metric, MISSING_REASON)
        return b.build(self.kind, self.index, self.name, clocks)

    def close(self) -> None:
        pass


PROVIDER = NullProvider()
