"""``normalize``: ``(x - mean) / std`` along ``axis`` (one value, or one per channel)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.ops.base import (
    Sig,
    Step,
    TensorOp,
    as_float,
    asked_float,
    at_least_one_axis,
    axis,
    float_result,
    number,
    register,
)


@register
class Normalize(TensorOp):
    name = "normalize"
    required = frozenset({"mean", "std"})
    optional = frozenset({"axis", "dtype"})

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        where, params = step.where, step.params
        rank = at_least_one_axis(step, sig)
        along = axis(params.get("axis", 1 if rank > 1 else 0), rank, f"{where}: 'axis'")
        mean, std = params["mean"], params["std"]
        for key, values in (("mean", mean), ("std", std)):
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}: '{key}' must be a non-empty list of numbers")
            for v in values:
                number(v, f"{where}: '{key}' entry")
        if len(mean) != len(std):
            raise UserError(f"{where}: 'mean' has {len(mean)} values but 'std' has {len(std)}")
        if any(v == 0 for v in std):
            raise UserError(f"{where}: 'std' must not contain 0")
        dim = sig.shape[along]
        if dim >= 0 and len(mean) not in (1, dim):
            raise UserError(
                f"{where}: axis {along} of {step.source!r} has {dim} channels but mean/std have {len(mean)} values"
            )
        return {step.target: Sig(float_result(sig.datatype, asked_float(step)), sig.shape)}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        y = as_float(x, step)
        along = step.params.get("axis", 1 if x.ndim > 1 else 0) % x.ndim
        shape = [1] * x.ndim
        shape[along] = -1
        mean = np.asarray(step.params["mean"], dtype=y.dtype).reshape(shape)
        std = np.asarray(step.params["std"], dtype=y.dtype).reshape(shape)
        return {step.target: (y - mean) / std}
