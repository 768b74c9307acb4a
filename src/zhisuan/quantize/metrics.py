"""Score a candidate model against the float model: output cosine, top-1 agreement or a zoo task metric.

Every evaluator returns the metric of a model file; the drop is relative to the float model's
value, in percent: ``(float - candidate) / float * 100`` (sign flipped for lower-is-better
metrics), so a budget of 1 means "within 1 % of the float model".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from zhisuan.errors import UserError
from zhisuan.quantize.calibration import Feeds
from zhisuan.quantize.config import MetricKind
from zhisuan.results import Record

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime


class Evaluator(Protocol):
    name: str
    higher_is_better: bool

    def __call__(self, path: Path) -> float: ...


def scoring_runtime(path: Path | str, threads: int = 2, backend: str = "onnxruntime") -> Runtime:
    """``path`` on ``backend`` with ``threads`` intra-op threads, as every score and timing here runs it."""
    from zhisuan.runtime import load_runtime

    if backend == "onnxruntime":
        # One inter-op thread, as these scores and latencies have always been measured; "all" is
        # ORT's default level, stated so that a change of default cannot move the figures.
        return load_runtime(path, backend, intra_op_threads=threads, inter_op_threads=1,
                            graph_optimization_level="all")
    # fp32 hint (load_runtime's default precision): OpenVINO would run the float parts in bf16 on
    # avx512_bf16 CPUs otherwise; the QuantizeLinear/DequantizeLinear pairs still run as its int8 kernels.
    return load_runtime(path, backend, intra_op_threads=threads)


def _outputs(runtime: Runtime, feeds: Feeds) -> list[list[np.ndarray]]:
    """Every output of every batch, in the model's output order."""
    return [list(runtime.run(feed).values()) for feed in feeds]


@dataclass
class OutputAgreement:
    """``cosine``: mean cosine of each output with the float model's; ``top1``: argmax agreement over
    the last axis (per position for sequence outputs), averaged over float outputs and batches."""

    float_path: Path
    feeds: Feeds
    kind: MetricKind  # COSINE or TOP1
    threads: int = 2
    backend: str = "onnxruntime"
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        self.name = self.kind.value
        with scoring_runtime(self.float_path, self.threads, self.backend) as runtime:
            self._ref = _outputs(runtime, self.feeds)
        if self.kind is MetricKind.TOP1 and self._score(self._ref) is None:
            raise UserError("--metric top1 needs a float output whose last axis has >= 2 classes")

    def _score(self, outs: list[list[np.ndarray]]) -> float | None:
        from zhisuan.compare.metrics import cosine_similarity, top1_agreement

        values = []
        for ref_batch, cand_batch in zip(self._ref, outs, strict=True):
            for ref, cand in zip(ref_batch, cand_batch, strict=True):
                ref, cand = np.asarray(ref), np.asarray(cand)
                if not np.issubdtype(ref.dtype, np.floating):
                    continue
                if self.kind is MetricKind.COSINE:
                    values.append(cosine_similarity(ref, cand))
                else:
                    agree = top1_agreement(ref, cand)
                    if agree is not None:
                        values.append(agree)
        return float(np.mean(values)) if values else None

    def __call__(self, path: Path) -> float:
        with scoring_runtime(path, self.threads, self.backend) as runtime:
            value = self._score(_outputs(runtime, self.feeds))
        if value is None:
            raise UserError(f"the model has no float outputs to score with --metric {self.name}")
        return value


@dataclass
class ZooMetric:
    """The zoo entry's task metric on its evaluation set (``zoo:NAME``)."""

    zoo_name: str
    threads: int = 2
    samples: int | None = None
    backend: str = "onnxruntime"

    def __post_init__(self) -> None:
        from zhisuan import zoo

        entry = zoo.get(self.zoo_name)
        self.name = f"zoo:{self.zoo_name}:{entry.metric}"
        self.higher_is_better = entry.higher_is_better

    def __call__(self, path: Path) -> float:
        from zhisuan import zoo

        return float(zoo.evaluate(self.zoo_name, model=path, runtime=self.backend, intra_op_threads=self.threads,
                                  samples=self.samples).value)


def drop_pct(reference: float, value: float, higher_is_better: bool = True) -> float:
    """Relative drop of ``value`` from ``reference`` in percent (negative: better than the reference)."""
    loss = reference - value if higher_is_better else value - reference
    scale = abs(reference) if reference else 1.0
    return 100.0 * loss / scale


@dataclass(frozen=True)
class Timing(Record):
    """One model's latency on one batch over every timed run."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


@dataclass(frozen=True)
class LatencyComparison(Record):
    """The float model's latency against the written model's on ``backend``, one ``batch`` (input ->
    shape) with ``threads`` intra-op threads. ``speedup``: float median / quantized median."""

    float_: Timing
    quantized: Timing
    speedup: float
    threads: int
    backend: str
    batch: dict[str, list[int]]

    @classmethod
    def of(cls, float_: Timing, quantized: Timing, *, threads: int, backend: str,
           feed: dict[str, np.ndarray]) -> LatencyComparison:
        return cls(float_, quantized, float_.median_ms / quantized.median_ms, threads, backend,
                   {k: list(v.shape) for k, v in feed.items()})

    def to_dict(self) -> dict[str, Any]:
        return {("float" if k == "float_" else k): v for k, v in super().to_dict().items()}


#: Pause before each model's turn: lets the previous session's spinning worker threads park (on a
#: 5 ms model, medians of one file in two sessions differed by 40 % without it, 3 % with 50 ms).
_SETTLE_S = 0.05


def latency_ms(paths: dict[str, Path], feed: dict[str, np.ndarray], *, threads: int = 2, rounds: int = 3,
               runs: int = 5, backend: str = "onnxruntime") -> dict[str, Timing]:
    """Median and spread of one batch's latency per model over ``rounds x runs`` runs.

    The models take turns round by round (the machine may be shared, so a slow spell hits every
    model), and each turn starts with a short pause and one untimed run: ONNX Runtime's worker
    threads keep spinning for a while after a run, so the first runs after switching sessions
    compete with the previous session's threads (interleaving run by run made every session but
    the first up to 2x slower here).
    """
    runtimes = {k: scoring_runtime(p, threads, backend) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, runtime in runtimes.items():
            time.sleep(_SETTLE_S)
            runtime.run(feed)
            for _ in range(runs):
                start = time.perf_counter()
                runtime.run(feed)
                times[key].append((time.perf_counter() - start) * 1000)
    for runtime in runtimes.values():
        runtime.close()
    return {
        k: Timing(float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90)), len(v))
        for k, v in times.items()
    }
