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


class Runner:
    """One model on one backend: ``run(feed)`` gives every output, in the model's output order."""

    def __init__(self, path: Path | str, threads: int = 2, backend: str = "onnxruntime") -> None:
        self.backend = backend
        if backend == "onnxruntime":
            self._sess = session(path, threads)
            self.output_names = [o.name for o in self._sess.get_outputs()]
            self._runtime = None
        else:
            from zhisuan.runtime import load_runtime

            # fp32 hint: OpenVINO would run the float parts in bf16 on avx512_bf16 CPUs otherwise;
            # the QuantizeLinear/DequantizeLinear pairs still run as its int8 kernels.
            self._runtime = load_runtime(path, backend, intra_op_threads=threads)
            self.output_names = [o.name for o in self._runtime.outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._runtime is None:
            return self._sess.run(self.output_names, feed)
        out = self._runtime.run(feed, self.output_names)
        return [out[name] for name in self.output_names]

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


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
    backend: str = "onnxruntime"
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        self.name = self.kind
        runner = Runner(self.float_path, self.threads, self.backend)
        self._ref = [runner.run(f) for f in self.feeds]
        runner.close()
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
        runner = Runner(path, self.threads, self.backend)
        value = self._score([runner.run(f) for f in self.feeds])
        runner.close()
        if value is None:
            raise UserError(f"the model has no float outputs to score with --metric {self.kind}")
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


#: Pause before each model's turn: lets the previous session's spinning worker threads park (on a
#: 5 ms model, medians of one file in two sessions differed by 40 % without it, 3 % with 50 ms).
_SETTLE_S = 0.05


def latency_ms(paths: dict[str, Path], feed: dict[str, np.ndarray], *, threads: int = 2, rounds: int = 3,
               runs: int = 5, backend: str = "onnxruntime") -> dict[str, dict[str, float]]:
    """Median and spread of one batch's latency per model over ``rounds x runs`` runs.

    The models take turns round by round (the machine may be shared, so a slow spell hits every
    model), and each turn starts with a short pause and one untimed run: ONNX Runtime's worker
    threads keep spinning for a while after a run, so the first runs after switching sessions
    compete with the previous session's threads (interleaving run by run made every session but
    the first up to 2x slower here).
    """
    runners = {k: Runner(p, threads, backend) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, runner in runners.items():
            time.sleep(_SETTLE_S)
            runner.run(feed)
            for _ in range(runs):
                start = time.perf_counter()
                runner.run(feed)
                times[key].append((time.perf_counter() - start) * 1000)
    for runner in runners.values():
        runner.close()
    return {
        k: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
            "p90_ms": float(np.percentile(v, 90)), "runs": len(v)}
        for k, v in times.items()
    }
