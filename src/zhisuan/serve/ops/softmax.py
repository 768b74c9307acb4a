"""``softmax`` along ``axis`` (default: the last), in a float type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.serve.ops.base import (
    Sig,
    Step,
    TensorOp,
    as_float,
    at_least_one_axis,
    axis,
    float_result,
    register,
)


@register
class Softmax(TensorOp):
    name = "softmax"
    optional = frozenset({"axis"})

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        axis(step.params.get("axis", -1), at_least_one_axis(step, sig), f"{step.where}: 'axis'")
        return {step.target: Sig(float_result(sig.datatype, None), sig.shape)}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        y = as_float(x, step)
        along = step.params.get("axis", -1)
        e = np.exp(y - np.max(y, axis=along, keepdims=True))  # shifted by the max: no overflow
        return {step.target: e / np.sum(e, axis=along, keepdims=True)}
