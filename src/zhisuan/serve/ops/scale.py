"""``scale``: ``x * scale + offset``, in a float type (an integer input becomes FP32, or ``dtype``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.ops.base import Sig, Step, TensorOp, as_float, asked_float, float_result, number, register


@register
class Scale(TensorOp):
    name = "scale"
    optional = frozenset({"scale", "offset", "dtype"})

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        where, params = step.where, step.params
        if "scale" not in params and "offset" not in params:
            raise UserError(f"{where}: give 'scale' and/or 'offset'")
        if number(params.get("scale", 1.0), f"{where}: 'scale'") == 0:
            raise UserError(f"{where}: 'scale' must not be 0")
        number(params.get("offset", 0.0), f"{where}: 'offset'")
        return {step.target: Sig(float_result(sig.datatype, asked_float(step)), sig.shape)}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        y = as_float(x, step)
        scale, offset = step.params.get("scale", 1.0), step.params.get("offset", 0.0)
        y = y * y.dtype.type(scale) if scale != 1.0 else y
        return {step.target: y + y.dtype.type(offset) if offset != 0.0 else y}
