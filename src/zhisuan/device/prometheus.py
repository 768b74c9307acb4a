"""Serve the sampler's latest snapshot as Prometheus metrics.

The exporter has its own ``CollectorRegistry`` holding one collector that reads
``sampler.latest`` at scrape time, so a scrape never triggers a hardware read. A sensor that
could not be read is absent from the exposition (never 0); ``zhisuan_device_sensor_unavailable_info``
carries the reason instead.

>>> from zhisuan.device.telemetry import TelemetrySampler
>>> with TelemetrySampler(interval_s=1.0) as sampler:  # doctest: +SKIP
...     with serve_metrics(sampler, port=9400) as server:
...         print(server.url)
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zhisuan.device.telemetry import TelemetrySampler, TelemetrySnapshot
from zhisuan.errors import UserError

LABELS = ("kind", "index", "name")

# name -> (help, sample field, scale to the base unit). Names follow Prometheus' base units.
GAUGES: dict[str, tuple[str, str, float]] = {
    "zhisuan_device_utilization_ratio": (
        "Device busy fraction over the last interval (0-1).",
        "utilization_pct",
        0.01,
    ),
    "zhisuan_device_memory_used_bytes": (
        "Device memory in use (host RAM for CPUs).",
        "memory_used_bytes",
        1.0,
    ),
    "zhisuan_device_memory_total_bytes": ("Device memory capacity.", "memory_total_bytes", 1.0),
    "zhisuan_device_power_watts": ("Power draw averaged over the last interval.", "power_w", 1.0),
    "zhisuan_device_temperature_celsius": ("Device temperature.", "temperature_c", 1.0),
}
CLOCK = "zhisuan_device_clock_hertz"
ENERGY = "zhisuan_device_energy_joules"  # a counter: exposed as zhisuan_device_energy_joules_total
UNAVAILABLE = "zhisuan_device_sensor_unavailable"  # an info metric: exposed with an _info suffix
TIMESTAMP = "zhisuan_device_sample_timestamp_seconds"


class TelemetryCollector:
    """A prometheus_client collector over ``sampler.latest`` (duck-typed: it only needs ``collect``)."""

    def __init__(self, sampler: TelemetrySampler) -> None:
        self._sampler = sampler

    def describe(self) -> list[Any]:
        return []  # no fixed descriptions: metrics come and go with the sensors

    def collect(self) -> Iterator[Any]:
        snapshot = self._sampler.latest
        if snapshot is not None:
            yield from families(snapshot)


def families(snapshot: TelemetrySnapshot) -> Iterator[Any]:
    """The metric families of one snapshot (pure: no I/O), one label set per device."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    gauges = {name: GaugeMetricFamily(name, help_, labels=LABELS) for name, (help_, _f, _s) in GAUGES.items()}
    clock = GaugeMetricFamily(CLOCK, "Current clock frequency per clock domain.", labels=(*LABELS, "clock"))
    energy = CounterMetricFamily(
        ENERGY, "Energy used since the exporter started (RAPL / NVML counter).", labels=LABELS
    )
    stamp = GaugeMetricFamily(TIMESTAMP, "Unix time of the device's latest sample.", labels=LABELS)
    missing = InfoMetricFamily(UNAVAILABLE, "A sensor that cannot be read here, and why.", labels=LABELS)
    for s in snapshot.samples:
        labels = [s.kind, str(s.index), s.name]
        for name, (_help, field, scale) in GAUGES.items():
            value = getattr(s, field)
            if value is not None:
                gauges[name].add_metric(labels, float(value) * scale)
        for domain, mhz in s.clocks_mhz.items():
            clock.add_metric([*labels, domain], float(mhz) * 1e6)
        if s.energy_j is not None:
            energy.add_metric(labels, float(s.energy_j))
        stamp.add_metric(labels, s.timestamp_s)
        for metric, reason in sorted(s.unavailable.items()):
            missing.add_metric(labels, {"metric": metric, "reason": reason})
    # a family without samples is left out entirely: an unreadable sensor is absent, not 0
    yield from (f for f in (*gauges.values(), clock, energy, stamp, missing) if f.samples)


@dataclass
class MetricsServer:
    """A running exporter; ``close()`` (or leaving the ``with`` block) stops it."""

    host: str
    port: int
    _server: Any
    _thread: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(sampler: TelemetrySampler, *, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one) from a daemon thread."""
    from prometheus_client import CollectorRegistry, start_http_server

    if not 0 <= port <= 65535:
        raise UserError(f"port {port} is out of range 0-65535")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TelemetryCollector(sampler))  # type: ignore[arg-type]
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} is in use on {host}; choose another with --prometheus PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise UserError(f"no permission to listen on port {port} (ports below 1024 need root)") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return MetricsServer(host, int(server.server_port), server, thread)
