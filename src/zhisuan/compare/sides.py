"""Loading and feeding the two sides of a comparison: each model on its runtime, their common
outputs, inputs cast to what CAND takes, and one measurement step that reports a shape mismatch as
the user's error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.compare.metrics import AgreementAccumulator
from zhisuan.compare.results import CompareConfig
from zhisuan.errors import UserError


def pair_outputs(ref_model: Any, cand_model: Any) -> dict[str, str]:
    """CAND output -> REF output, by name (graph outputs are the models' shared interface)."""
    ref_out = [v.name for v in ref_model.graph.output]
    cand_out = [v.name for v in cand_model.graph.output]
    common = {name: name for name in cand_out if name in ref_out}
    if not common:
        raise UserError(f"REF and CAND share no output names: REF {ref_out}, CAND {cand_out}")
    return common


def load_side(source: Path | bytes, config: CompareConfig, side: str) -> Any:
    """Load an ONNX file or serialized model on the runtime, device and precision of ``side``."""
    from zhisuan.runtime import load_runtime

    return load_runtime(
        source,
        getattr(config, f"{side}_runtime"),
        device=getattr(config, f"{side}_device"),
        precision=getattr(config, f"{side}_precision"),
        intra_op_threads=config.threads,
    )


def cast_feeds(feed: Mapping[str, np.ndarray], specs: Sequence[Any]) -> dict[str, np.ndarray]:
    """``feed`` with floating inputs cast to the dtype a model takes (e.g. an fp16 candidate)."""
    out = dict(feed)
    for spec in specs:
        value = out.get(spec.name)
        if value is None:
            continue
        try:
            want = np.dtype(spec.dtype)
        except TypeError:
            continue
        if value.dtype != want and np.issubdtype(value.dtype, np.floating) and np.issubdtype(want, np.floating):
            out[spec.name] = value.astype(want)
    return out


def run_outputs(
    ref_rt: Any, cand_rt: Any, feed: Mapping[str, np.ndarray], output_pairs: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """REF's and CAND's values of the paired graph outputs for one input, on unmodified sessions.

    The one way outputs are computed, by a plain and by a layerwise comparison alike: the verdict
    never depends on ``--layerwise``.
    """
    want = ref_rt.run(feed, list(output_pairs.values()))
    got = cand_rt.run(cast_feeds(feed, cand_rt.inputs()), list(output_pairs))
    return want, got


def finish_timings(phases: Mapping[str, float], started: float) -> dict[str, float]:
    """``phases`` plus ``other`` (the wall time no phase measured) and ``total`` (since ``started``):
    the phases and ``other`` add up to ``total``."""
    total = time.perf_counter() - started
    return {**phases, "other": max(total - sum(phases.values()), 0.0), "total": total}


def add_checked(acc: AgreementAccumulator, ref: np.ndarray, cand: np.ndarray, name: str) -> None:
    try:
        acc.add(ref, cand)
    except ValueError as exc:
        raise UserError(f"cannot compare {name!r}: {exc}") from None
