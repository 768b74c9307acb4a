"""``clip``: bound values to ``min`` and/or ``max``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.ops.base import Sig, Step, TensorOp, number, register


@register
class Clip(TensorOp):
    name = "clip"
    optional = frozenset({"min", "max"})

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        where, params = step.where, step.params
        if "min" not in params and "max" not in params:
            raise UserError(f"{where}: give 'min' and/or 'max'")
        lo = number(params["min"], f"{where}: 'min'") if "min" in params else None
        hi = number(params["max"], f"{where}: 'max'") if "max" in params else None
        if lo is not None and hi is not None and lo > hi:
            raise UserError(f"{where}: 'min' {lo} is above 'max' {hi}")
        return {step.target: sig}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        return {step.target: np.clip(x, step.params.get("min"), step.params.get("max"))}
