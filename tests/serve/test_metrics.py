"""Server metrics: names, labels, per-app registries, state read at scrape time, device telemetry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from zhisuan.device.telemetry import TelemetrySampler
from zhisuan.serve.metrics import ServeMetrics, VersionState


def _samples(metrics: ServeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_requests_failures_and_histograms() -> None:
    m = ServeMetrics()
    m.observe_request("m", "1", 200, 0.004, 0.001)
    m.observe_request("m", "1", 200, 0.020, 0.002)
    m.observe_request("m", "1", 429, 0.0001)
    m.observe_batch("m", "1", rows=6, compute_s=0.003)
    s = _samples(m)
    assert s[("zhisuan_serve_requests_total", (("code", "200"), ("model", "m"), ("version", "1")))] == 2
    assert s[("zhisuan_serve_requests_total", (("code", "429"), ("model", "m"), ("version", "1")))] == 1
    assert s[("zhisuan_serve_request_failures_total", (("code", "429"), ("model", "m"), ("version", "1")))] == 1
    assert ("zhisuan_serve_request_failures_total", (("code", "200"), ("model", "m"), ("version", "1"))) not in s
    assert s[("zhisuan_serve_request_duration_seconds_count", (("model", "m"), ("version", "1")))] == 3
    assert s[("zhisuan_serve_request_duration_seconds_bucket", (("le", "0.005"), ("model", "m"), ("version", "1")))] == 2
    assert s[("zhisuan_serve_queue_duration_seconds_count", (("model", "m"), ("version", "1")))] == 2
    assert s[("zhisuan_serve_batch_size_sum", (("model", "m"), ("version", "1")))] == 6
    assert s[("zhisuan_serve_batch_size_bucket", (("le", "4.0"), ("model", "m"), ("version", "1")))] == 0
    assert s[("zhisuan_serve_inference_duration_seconds_sum", (("model", "m"), ("version", "1")))] == 0.003


def test_state_is_read_at_scrape_time_and_registries_are_per_app() -> None:
    state = {"depth": 3}

    def versions() -> list[VersionState]:
        return [VersionState("m", "2", True, state["depth"], 1, {"replicas": 3, "alive": 2, "restarts": 4})]

    m = ServeMetrics(versions=versions, rollout_weights=lambda: {"m": {"1": 75.0, "2": 25.0}})
    s = _samples(m)
    assert s[("zhisuan_serve_queue_depth", (("model", "m"), ("version", "2")))] == 3
    assert s[("zhisuan_serve_batches_in_flight", (("model", "m"), ("version", "2")))] == 1
    assert s[("zhisuan_serve_model_ready", (("model", "m"), ("version", "2")))] == 1
    assert s[("zhisuan_serve_replicas", (("model", "m"), ("state", "desired"), ("version", "2")))] == 3
    assert s[("zhisuan_serve_replicas", (("model", "m"), ("state", "alive"), ("version", "2")))] == 2
    assert s[("zhisuan_serve_replica_restarts_total", (("model", "m"), ("version", "2")))] == 4
    assert s[("zhisuan_serve_rollout_weight", (("model", "m"), ("version", "1")))] == 0.75
    state["depth"] = 9
    assert _samples(m)[("zhisuan_serve_queue_depth", (("model", "m"), ("version", "2")))] == 9
    other = ServeMetrics()  # a second app in the same process: no duplicate-registration error, no sharing
    other.observe_request("x", "1", 200, 0.001)
    assert not any(name == "zhisuan_serve_requests_total" and dict(labels).get("model") == "x" for name, labels in _samples(m))


def test_device_telemetry_joins_the_exposition() -> None:
    with TelemetrySampler(interval_s=10, kinds=["null"]) as sampler:
        sampler.sample()
        m = ServeMetrics(sampler=sampler)
        names = {name for name, _ in _samples(m)}
    assert "zhisuan_device_power_watts" in names and "zhisuan_device_utilization_ratio" in names


def test_the_grafana_dashboard_uses_only_metrics_the_server_exposes() -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15 and dashboard["uid"] == "zhisuan-serve"
    with TelemetrySampler(interval_s=10, kinds=["null"]) as sampler:
        sampler.sample()
        m = ServeMetrics(
            versions=lambda: [VersionState("m", "1", True, 0, 0, {"replicas": 1, "alive": 1, "restarts": 0})],
            rollout_weights=lambda: {"m": {"1": 100.0}}, sampler=sampler,
        )
        m.observe_request("m", "1", 200, 0.01, 0.001)
        m.observe_request("m", "1", 500, 0.01)
        m.observe_batch("m", "1", 2, 0.005)
        m.auto_rollbacks.labels("m").inc()
        exposed = {name for name, _ in _samples(m)}
    from zhisuan.device.prometheus import ENERGY, GAUGES

    exposed |= set(GAUGES) | {ENERGY + "_total"}  # device sensors the null device lacks (temperature)
    used = {name for expr in exprs for name in re.findall(r"\b(zhisuan_[a-z_]+)", expr)}
    assert used - exposed == set()
    wanted = ("requests_total", "request_duration_seconds_bucket", "batch_size", "queue_depth", "replicas",
              "device_power_watts", "device_utilization_ratio")
    assert all(any(w in name for name in used) for w in wanted)
