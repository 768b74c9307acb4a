"""Prometheus metrics of the inference server, in a registry of its own (one per app).

Request metrics are counted as requests finish; the state of queues, replicas, rollouts and
devices is read at scrape time by collectors, so a scrape never waits on the model and the hot
path only increments a few cached counters.

Names (all prefixed ``zhisuan_serve_`` except the device telemetry of
:mod:`zhisuan.device.prometheus`, ``zhisuan_device_*``):

- ``requests_total{model,version,code}`` and ``request_failures_total{model,version,code}``
- ``request_duration_seconds{model,version}``: arrival to response (histogram)
- ``queue_duration_seconds{model,version}``: waiting for a batch (histogram)
- ``inference_duration_seconds{model,version}``: one batch's model run (histogram)
- ``batch_size{model,version}``: rows per executed batch (histogram)
- ``queue_depth{model,version}``, ``batches_in_flight{model,version}``, ``model_ready{model,version}``
- ``replicas{model,version,state="desired"|"alive"}``, ``replica_restarts_total{model,version}``
- ``rollout_weight{model,version}`` (share 0-1), ``rollout_auto_rollbacks_total{model}``
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zhisuan.device.telemetry import TelemetrySampler

__all__ = ["CONTENT_TYPE", "ServeMetrics", "VersionState"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "zhisuan_serve_"
#: Label value for requests that name no loaded model: user-chosen names never become label
#: values, so a client cannot blow up the number of time series.
UNKNOWN = "_unknown"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class VersionState:
    """What the state collector reports about one loaded model version at scrape time."""

    model: str
    version: str
    ready: bool
    queue_depth: int
    batches_in_flight: int
    executor: dict[str, Any] = field(default_factory=dict)  # Executor.state()


class ServeMetrics:
    """Every metric of one server. ``render()`` gives the exposition text for ``/metrics``."""

    def __init__(
        self,
        *,
        versions: Callable[[], Sequence[VersionState]] = lambda: (),
        rollout_weights: Callable[[], dict[str, dict[str, float]]] = dict,
        sampler: TelemetrySampler | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        labels = ("model", "version")
        self.requests = Counter(
            PREFIX + "requests", "Inference requests by model, version and HTTP status.",
            (*labels, "code"), registry=self.registry,
        )
        self.failures = Counter(
            PREFIX + "request_failures", "Inference requests that ended with a 4xx or 5xx status.",
            (*labels, "code"), registry=self.registry,
        )
        self.latency = Histogram(
            PREFIX + "request_duration_seconds", "Time from request arrival to response.",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_time = Histogram(
            PREFIX + "queue_duration_seconds", "Time a request waited in the queue for its batch.",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.compute_time = Histogram(
            PREFIX + "inference_duration_seconds", "Time one batch spent in the model (executor).",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size", "Rows per executed batch.", labels, buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.auto_rollbacks = Counter(
            PREFIX + "rollout_auto_rollbacks", "Automatic rollbacks of a canary.", ("model",), registry=self.registry,
        )
        self.registry.register(_StateCollector(versions, rollout_weights))  # type: ignore[arg-type]
        if sampler is not None:
            from zhisuan.device.prometheus import TelemetryCollector

            self.registry.register(TelemetryCollector(sampler))  # type: ignore[arg-type]
        self._children: dict[tuple[str, str], _Children] = {}

    def _for(self, model: str, version: str) -> _Children:
        key = (model, version)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Children(
                self.latency.labels(model, version),
                self.queue_time.labels(model, version),
                self.compute_time.labels(model, version),
                self.batch_size.labels(model, version),
            )
        return children

    def observe_request(
        self, model: str, version: str, code: int, latency_s: float, queue_s: float | None = None
    ) -> None:
        """Count one finished request (any status)."""
        self.requests.labels(model, version, str(code)).inc()
        if code >= 400:
            self.failures.labels(model, version, str(code)).inc()
        children = self._for(model, version)
        children.latency.observe(latency_s)
        if queue_s is not None:
            children.queue.observe(queue_s)

    def observe_batch(self, model: str, version: str, rows: int, compute_s: float) -> None:
        children = self._for(model, version)
        children.batch.observe(rows)
        children.compute.observe(compute_s)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass(frozen=True)
class _Children:
    latency: Any
    queue: Any
    compute: Any
    batch: Any


class _StateCollector:
    """Queue depth, readiness, replicas and rollout weights, read when Prometheus scrapes."""

    def __init__(
        self,
        versions: Callable[[], Sequence[VersionState]],
        rollout_weights: Callable[[], dict[str, dict[str, float]]],
    ) -> None:
        self._versions = versions
        self._weights = rollout_weights

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ("model", "version")
        depth = GaugeMetricFamily(PREFIX + "queue_depth", "Requests waiting for a batch.", labels=labels)
        flight = GaugeMetricFamily(PREFIX + "batches_in_flight", "Batches running in the model now.", labels=labels)
        ready = GaugeMetricFamily(PREFIX + "model_ready", "1 when the model version takes requests.", labels=labels)
        replicas = GaugeMetricFamily(
            PREFIX + "replicas", "Replicas of a model version: desired and alive.", labels=(*labels, "state")
        )
        restarts = CounterMetricFamily(
            PREFIX + "replica_restarts", "Replicas restarted after they died.", labels=labels
        )
        for s in self._versions():
            key = [s.model, s.version]
            depth.add_metric(key, s.queue_depth)
            flight.add_metric(key, s.batches_in_flight)
            ready.add_metric(key, 1.0 if s.ready else 0.0)
            if "replicas" in s.executor:
                replicas.add_metric([*key, "desired"], float(s.executor["replicas"]))
            if "alive" in s.executor:
                replicas.add_metric([*key, "alive"], float(s.executor["alive"]))
            if "stuck" in s.executor:  # a batch ran past --timeout-s; being replaced
                replicas.add_metric([*key, "stuck"], float(s.executor["stuck"]))
            if "restarts" in s.executor:
                restarts.add_metric(key, float(s.executor["restarts"]))
        weight = GaugeMetricFamily(
            PREFIX + "rollout_weight", "Share of unversioned traffic routed to a version (0-1).", labels=labels
        )
        for model, weights in self._weights().items():
            total = sum(weights.values())
            for version, w in weights.items():
                weight.add_metric([model, version], w / total if total > 0 else 0.0)
        yield from (depth, flight, ready, replicas, restarts, weight)
