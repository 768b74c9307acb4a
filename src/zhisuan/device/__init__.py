"""Devices (DEV-1..DEV-3): discover CPUs and GPUs, sample their telemetry, export it.

Each device kind is one module here exposing ``PROVIDER`` (``cpu``, ``nvidia`` -> "cuda",
``null``), discovered at first use. Nothing here imports torch, onnxruntime, openvino or
pynvml until asked for devices.

>>> from zhisuan.device import TelemetrySampler, list_devices
>>> list_devices(backends=False).devices[0].id
'cpu:0'
>>> with TelemetrySampler(interval_s=0.5) as sampler:  # doctest: +SKIP
...     run_the_workload()
>>> sampler.summary().devices[0].energy_j  # doctest: +SKIP
"""

from __future__ import annotations

from zhisuan.device.base import (
    BackendReach,
    DeviceInfo,
    DeviceProvider,
    DeviceSample,
    Discovery,
    Sensor,
)
from zhisuan.device.registry import (
    DeviceList,
    device_kinds,
    find_device,
    list_devices,
    select_providers,
)
from zhisuan.device.telemetry import (
    DeviceSummary,
    TelemetrySampler,
    TelemetrySnapshot,
    TelemetrySummary,
    sample_once,
)

__all__ = [
    "BackendReach",
    "DeviceInfo",
    "DeviceList",
    "DeviceProvider",
    "DeviceSample",
    "DeviceSummary",
    "Discovery",
    "Sensor",
    "TelemetrySampler",
    "TelemetrySnapshot",
    "TelemetrySummary",
    "device_kinds",
    "find_device",
    "list_devices",
    "sample_once",
    "select_providers",
]
