"""The Prometheus exporter on an ephemeral port, read back over HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zhisuan.device.null import NullProvider
from zhisuan.device.prometheus import serve_metrics
from zhisuan.device.telemetry import TelemetrySampler
from zhisuan.errors import UserError


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _labels(index: int, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted({"kind": "null", "index": str(index), "name": f"NULL device {index}", **extra}.items())
    )


def test_metrics_are_served_and_a_missing_sensor_is_absent() -> None:
    sampler = TelemetrySampler(interval_s=3600, providers=[NullProvider(count=2, power_w=42.5)]).start()
    try:
        with serve_metrics(sampler, port=0) as server:
            assert server.port > 0 and server.url.endswith("/metrics")
            before = _scrape(server.url)
            assert not [k for k in before if k[0].startswith("zhisuan_")]  # nothing sampled yet
            sampler.sample()
            metrics = _scrape(server.url)
    finally:
        sampler.stop()
    for i in (0, 1):
        assert metrics[("zhisuan_device_power_watts", _labels(i))] == 42.5
        assert metrics[("zhisuan_device_utilization_ratio", _labels(i))] == 0.5
        assert metrics[("zhisuan_device_memory_used_bytes", _labels(i))] == 2**29
        assert metrics[("zhisuan_device_memory_total_bytes", _labels(i))] == 2**30
        assert metrics[("zhisuan_device_clock_hertz", _labels(i, clock="core"))] == 1e9
        assert metrics[("zhisuan_device_energy_joules_total", _labels(i))] >= 0
        reason = _labels(i, metric="temperature_c", reason="the NULL device has no such sensor")
        assert metrics[("zhisuan_device_sensor_unavailable_info", reason)] == 1.0
    names = {name for name, _ in metrics}
    assert "zhisuan_device_temperature_celsius" not in names  # absent, not 0
    assert "process_cpu_seconds_total" not in names  # its own registry, not the global one


def test_port_in_use_is_a_user_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sampler = TelemetrySampler(interval_s=3600, kinds=["null"])
        with pytest.raises(UserError, match=f"port {port} is in use"):
            serve_metrics(sampler, port=port)
    with pytest.raises(UserError, match="out of range"):
        serve_metrics(sampler, port=70000)
