"""``cast``: change a tensor's datatype (``dtype``); ``from`` says what clients send before it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.serve.datatypes import numpy_dtype
from zhisuan.serve.ops.base import Sig, Step, TensorOp, datatype, register


@register
class Cast(TensorOp):
    name = "cast"
    required = frozenset({"dtype"})
    optional = frozenset({"from"})
    numeric = False

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        produced = {step.target: Sig(datatype(step.params["dtype"], f"{step.where}: 'dtype'"), sig.shape)}
        if "from" in step.params:
            datatype(step.params["from"], f"{step.where}: 'from'")
        return produced

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        return {step.target: x.astype(numpy_dtype(datatype(step.params["dtype"], "dtype")), copy=False)}

    def request(self, step: Step, sig: Sig) -> Sig:
        if "from" not in step.params:
            return sig  # without ``from``, clients send what the cast makes
        return Sig(datatype(step.params["from"], f"{step.where}: 'from'"), sig.shape)
