"""Compare a reference and a candidate model output by output and, with ``layerwise``, layer by layer.

REF and CAND may be different files (a quantized or optimized copy), different runtimes or
different precisions of one file. Per output: cosine similarity, max absolute / relative error,
mean absolute error, top-1 agreement, and whether it is within tolerance.

Layerwise, each CAND tensor that holds the value of a REF tensor (see :mod:`.pairing`) is
measured three ways, on the same inputs:

* **total** error: CAND's value vs REF's, both models run end to end;
* **own** error: CAND's layer fed with REF's values of its inputs (a "teacher-forced" copy of
  CAND where every paired tensor's consumers read the REF value) vs REF's value;
* **carried** error: how much the layer's output moves when it is fed CAND's inputs instead of
  REF's (teacher-forced vs end to end) — the error it inherits from earlier layers.

Since ``total = own + carried`` (as vectors), a layer with a large total but small own error is
a victim, not a culprit. The **first divergent node** is the earliest CAND layer whose own error
is outside tolerance.

>>> from zhisuan.compare import CompareConfig, compare_models
>>> result = compare_models("model.onnx", "model-int8.onnx", CompareConfig(layerwise=True))  # doctest: +SKIP
>>> result.within_tolerance, result.first_divergence.node  # doctest: +SKIP
(False, '/encoder/layer.0/attention/self/query/MatMul_quant')
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.compare.layerwise import run_layerwise
from zhisuan.compare.metrics import AgreementAccumulator
from zhisuan.compare.results import CompareConfig, CompareResult, Measurement, ModelSide, OutputResult
from zhisuan.compare.sides import add_checked, finish_timings, load_side, pair_outputs, run_outputs
from zhisuan.errors import UsageError, UserError

__all__ = ["compare_models"]


def compare_models(
    ref: str | Path,
    cand: str | Path,
    config: CompareConfig | None = None,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> CompareResult:
    """Run REF and CAND on the same inputs and measure how closely CAND agrees. Never prints.

    ``ref`` and ``cand`` are ONNX files or zoo model names. ``feeds`` overrides the inputs that
    ``config.data`` / ``config.random`` would give. Raises :class:`~zhisuan.errors.UserError`
    for anything the user can fix (missing file, unknown runtime, inputs that do not fit).
    """
    from zhisuan.graph import load_model
    from zhisuan.inputs import resolve_model, sample_inputs

    config = config or CompareConfig()
    _check_config(config)
    started = time.perf_counter()
    ref_path, cand_path = resolve_model(ref), resolve_model(cand)
    ref_model, cand_model = load_model(ref_path), load_model(cand_path)
    if feeds is None:
        feeds = sample_inputs(ref_path, data=config.data, random=config.random, seed=config.seed)
    feeds = [dict(f) for f in feeds]
    if not feeds:
        raise UserError("no inputs to compare on")
    _check_inputs(ref_model, cand_model)
    timings = {"inputs": time.perf_counter() - started}
    if config.layerwise:
        return run_layerwise(ref_path, cand_path, ref_model, cand_model, feeds, config, started, timings)

    t0 = time.perf_counter()
    ref_rt = load_side(ref_path, config, "ref")
    cand_rt = load_side(cand_path, config, "cand")
    output_pairs = pair_outputs(ref_model, cand_model)
    accs = {c: AgreementAccumulator(config.tolerance) for c in output_pairs}
    timings["load"] = time.perf_counter() - t0
    run_t = metrics_t = 0.0
    with ref_rt, cand_rt:
        for feed in feeds:
            t0 = time.perf_counter()
            want, got = run_outputs(ref_rt, cand_rt, feed, output_pairs)
            t1 = time.perf_counter()
            for c, r in output_pairs.items():
                add_checked(accs[c], want[r], got[c], c)
            metrics_t += time.perf_counter() - t1
            run_t += t1 - t0
        sides = ModelSide(str(ref_path), ref_rt.info.to_dict()), ModelSide(str(cand_path), cand_rt.info.to_dict())
        closing = time.perf_counter()
    timings["close"] = time.perf_counter() - closing
    outputs = tuple(OutputResult(c, r, Measurement.of(accs[c])) for c, r in output_pairs.items())
    return CompareResult(
        ref=sides[0],
        cand=sides[1],
        config=config,
        samples=len(feeds),
        outputs=outputs,
        within_tolerance=all(o.measurement.within_tolerance for o in outputs),
        timings_s=finish_timings({**timings, "run": run_t, "metrics": metrics_t}, started),
    )


def _check_config(config: CompareConfig) -> None:
    if not (config.atol >= 0 and config.rtol >= 0):
        raise UsageError(f"--atol and --rtol must be >= 0, got {config.atol} and {config.rtol}")
    if not -1.0 <= config.min_cosine <= 1.0:
        raise UsageError(f"--min-cosine must be between -1 and 1, got {config.min_cosine}")
    for name, value in (("--threads", config.threads), ("--random", config.random)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")


def _check_inputs(ref_model: Any, cand_model: Any) -> None:
    def names(model: Any) -> list[str]:
        inits = {i.name for i in model.graph.initializer}
        return [v.name for v in model.graph.input if v.name not in inits]

    ref_in, cand_in = names(ref_model), names(cand_model)
    if set(ref_in) != set(cand_in):
        raise UserError(f"REF and CAND take different inputs: REF {ref_in}, CAND {cand_in}")
