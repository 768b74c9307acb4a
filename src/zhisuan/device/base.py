"""The one protocol every device kind implements, and the result types they share.

A *provider* is one file per device kind (``cpu.py``, ``nvidia.py``, ``null.py``) exposing
``PROVIDER``. It discovers its devices (:meth:`DeviceProvider.discover`) and opens one
:class:`Sensor` per device for telemetry (:meth:`DeviceProvider.open_sensors`). Hardware access
(an NVML module, a sysfs root) is injected into the provider, so tests replace it with fakes.

A value that cannot be read is ``None`` and its name maps to a reason in ``unavailable``;
it is never reported as 0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from zhisuan.precision import Precision
from zhisuan.results import Record


class BackendStatusLike(Protocol):
    """What :func:`backends_reaching` reads of a runtime's ``BackendStatus`` (the device layer
    does not import ``zhisuan.runtime``: callers pass its statuses in)."""

    @property
    def name(self) -> str: ...

    @property
    def available(self) -> bool: ...

    @property
    def version(self) -> str | None: ...

    @property
    def devices(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class BackendReach(Record):
    """One runtime backend that can run on a device, as reported by ``zhisuan.runtime.backend_status``."""

    runtime: str  # "onnxruntime", "openvino", "torch", ...
    version: str | None
    device: str  # the backend's own name for the device: "cpu", "CPU", "cuda", "tensorrt", ...

    def __str__(self) -> str:
        return f"{self.runtime}:{self.device}"


@dataclass(frozen=True)
class DeviceInfo(Record):
    """What a device is: identity, memory, ISA features, precisions and the backends that reach it.

    ``details`` holds what only this kind has (CPU caches, GPU compute capability, ...).
    """

    kind: str  # "cpu", "cuda", "null"
    index: int  # index among devices of this kind (cuda:1 -> 1)
    name: str
    memory_bytes: int | None
    memory_type: str | None
    features: tuple[str, ...]
    precisions: tuple[Precision, ...]
    driver_version: str | None
    backends: tuple[BackendReach, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **super().to_dict()}


@dataclass(frozen=True)
class Discovery(Record):
    """What one provider found: its devices, or why it found none."""

    kind: str
    devices: tuple[DeviceInfo, ...]
    reason: str | None = None  # set when the provider could not look (no driver, no library)


@dataclass(frozen=True)
class DeviceSample(Record):
    """One telemetry reading of one device.

    Rates (``utilization_pct``, ``power_w``) are measured over the time since the sensor's
    previous read; ``energy_j`` counts from when the sensor was opened. ``clocks_mhz`` maps a
    clock domain ("sm", "mem" on GPUs, "cpu" on CPUs) to its current frequency.
    """

    kind: str
    index: int
    name: str
    timestamp_s: float  # time.time() of the read
    utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_w: float | None
    energy_j: float | None
    temperature_c: float | None
    clocks_mhz: Mapping[str, float] = field(default_factory=dict)
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **super().to_dict()}


@runtime_checkable
class Sensor(Protocol):
    """Reads one device's telemetry. Opened by a provider; :meth:`close` releases it."""

    kind: str
    index: int
    name: str

    def read(self) -> DeviceSample: ...

    def close(self) -> None: ...


class DeviceProvider(Protocol):
    """One device kind. ``default`` is False for kinds shown only when asked for (the NULL device)."""

    kind: str
    default: bool

    def discover(self) -> Discovery: ...

    def open_sensors(self) -> list[Sensor]: ...


class SampleBuilder:
    """Collects one sample's values and the reasons for those that could not be read.

    A metric left out of ``values`` is ``None`` in the sample; :meth:`missing` records why,
    so no sensor reports an unread value as 0.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}

    def missing(self, metric: str, reason: str) -> None:
        self.values[metric] = None
        self.unavailable[metric] = reason

    def build(self, kind: str, index: int, name: str, clocks_mhz: Mapping[str, float]) -> DeviceSample:
        v = self.values
        return DeviceSample(
            kind=kind,
            index=index,
            name=name,
            timestamp_s=time.time(),
            utilization_pct=v.get("utilization_pct"),
            memory_used_bytes=v.get("memory_used_bytes"),
            memory_total_bytes=v.get("memory_total_bytes"),
            power_w=v.get("power_w"),
            energy_j=v.get("energy_j"),
            temperature_c=v.get("temperature_c"),
            clocks_mhz=dict(clocks_mhz),
            unavailable=dict(self.unavailable),
        )


def backends_reaching(kind: str, index: int, statuses: Sequence[BackendStatusLike]) -> tuple[BackendReach, ...]:
    """The available backends (``BackendStatus`` objects) whose device list covers ``kind:index``.

    Backends name devices their own way: ONNX Runtime says "cpu", "cuda", "tensorrt";
    OpenVINO "CPU", "GPU.0" (an Intel GPU, not a CUDA one); torch "cpu", "cuda:0".
    """
    reach = []
    for status in statuses:
        if not status.available:
            continue
        for device in status.devices:
            if _covers(kind, index, device):
                reach.append(BackendReach(status.name, status.version, device))
    return tuple(reach)


def _covers(kind: str, index: int, device: str) -> bool:
    base, _, suffix = device.lower().partition(":")
    if kind == "cpu":
        return base == "cpu"
    if kind == "cuda":
        if base in ("cuda", "tensorrt"):
            return not suffix or suffix == str(index)
        return False
    return base == kind
