"""``argmax``: the int64 index of the largest value along ``axis`` (default: the last), which it removes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.serve.datatypes import Datatype
from zhisuan.serve.ops.base import Sig, Step, TensorOp, at_least_one_axis, axis, register


@register
class ArgMax(TensorOp):
    name = "argmax"
    stages = frozenset({"postprocess"})
    optional = frozenset({"axis"})

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        along = axis(step.params.get("axis", -1), at_least_one_axis(step, sig), f"{step.where}: 'axis'")
        return {step.target: Sig(Datatype.INT64, tuple(d for i, d in enumerate(sig.shape) if i != along))}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        return {step.target: np.argmax(x, axis=step.params.get("axis", -1)).astype(np.int64)}
