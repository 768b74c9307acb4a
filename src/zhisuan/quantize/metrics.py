"""Score a candidate model against the float model: output cosine, top-1 agreement or a zoo task metric.

Every evaluator returns the metric of a model file; the drop is relative to the float model's
value, in percent: ``(float - candidate) / float * 100`` (sign flipped for lower-is-better
metrics), so a budget of 1 means "within 1 % of the float model".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zhisuan.errors import UserError
from zhisuan.quantize.calibration import Feeds


class Evaluator(Protocol):
    name: str
    higher_is_better: bool

    def __call__(self, path: Path) -> float: ...


def session(path: Path | str, threads: int = 2) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX Runtime cannot load {Path(path).name}: {first[:300]}") from None


@dataclass
class OutputAgreement:
    """``cosine``: mean cosine of each output with the float model's; ``top1``: argmax agreement over
    the last axis (per position for sequence outputs), averaged over float outputs and batches."""

    float_path: Path
    feeds: Feeds
    kind: str  # "cosine" | "top1"
    threads: int = 2
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        self.name = self.kind
        sess = session(self.float_path, self.threads)
        self._names = [o.name for o in sess.get_outputs()]
        self._ref = [sess.run(self._names, f) for f in self.feeds]
        if self.kind == "top1" and self._score(self._ref) is None:
            raise UserError("--metric top1 needs a float output whose last axis has >= 2 classes")

    def _score(self, outs: list[list[np.ndarray]]) -> float | None:
        from zhisuan.compare.metrics import cosine_similarity, top1_agreement

        values = []
        for ref_batch, cand_batch in zip(self._ref, outs, strict=True):
            for ref, cand in zip(ref_batch, cand_batch, strict=True):
                ref, cand = np.asarray(ref), np.asarray(cand)
                if not np.issubdtype(ref.dtype, np.floating):
                    continue
                if self.kind == "cosine":
                    values.append(cosine_similarity(ref, cand))
                else:
                    agree = top1_agreement(ref, cand)
                    if agree is not None:
                        values.append(agree)
        return float(np.mean(values)) if values else None

    def __call__(self, path: Path) -> float:
        sess = session(path, self.threads)
        value = self._score([sess.run(self._names, f) for f in self.feeds])
        if value is None:
            raise UserError(f"the model has no float outputs to score with --metric {self.kind}")
        return value


@dataclass
class ZooMetric:
    """The zoo entry's task metric on its evaluation set (``zoo:NAME``)."""

    zoo_name: str
    threads: int = 2
    samples: int | None = None

    def __post_init__(self) -> None:
        from zhisuan import zoo

        entry = zoo.get(self.zoo_name)
        self.name = f"zoo:{self.zoo_name}:{entry.metric}"
        self.higher_is_better = entry.higher_is_better

    def __call__(self, path: Path) -> float:
        from zhisuan import zoo

        return float(zoo.evaluate(self.zoo_name, model=path, intra_op_threads=self.threads, samples=self.samples).value)


def drop_pct(reference: float, value: float, higher_is_better: bool = True) -> float:
    """Relative drop of ``value`` from ``reference`` in percent (negative: better than the reference)."""
    loss = reference - value if higher_is_better else value - reference
    scale = abs(reference) if reference else 1.0
    return 100.0 * loss / scale


def latency_ms(paths: dict[str, Path], feed: dict[str, np.ndarray], *, threads: int = 2, rounds: int = 3,
               runs: int = 5) -> dict[str, dict[str, float]]:
    """Median and spread of one batch's latency per model, the models interleaved round by round
    (the machine may be shared, so interleaving keeps a slow spell from favouring one model)."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    for sess in sessions.values():
        sess.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, sess in sessions.items():
            for _ in range(runs):
                start = time.perf_counter()
                sess.run(None, feed)
                times[key].append((time.perf_counter() - start) * 1000)
    return {
        k: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
            "p90_ms": float(np.percentile(v, 90)), "runs": len(v)}
        for k, v in times.items()
    }
