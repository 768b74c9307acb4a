"""``topk``: the ``k`` largest values along ``axis`` (to ``as``) and their int64 indices (to ``indices_as``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.datatypes import Datatype
from zhisuan.serve.ops.base import Sig, Step, TensorOp, at_least_one_axis, axis, integer, register


@register
class TopK(TensorOp):
    name = "topk"
    stages = frozenset({"postprocess"})
    required = frozenset({"k"})
    optional = frozenset({"axis", "indices_as"})

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        where, target = step.where, step.target
        along = axis(step.params.get("axis", -1), at_least_one_axis(step, sig), f"{where}: 'axis'")
        k = integer(step.params["k"], f"{where}: 'k'")
        dim = sig.shape[along]
        if k < 1 or (dim >= 0 and k > dim):
            raise UserError(f"{where}: 'k' must be in 1..{dim if dim >= 0 else 'the axis size'}, got {k}")
        indices = _indices_name(step)
        if not isinstance(indices, str) or not indices or indices == target:
            raise UserError(f"{where}: 'indices_as' must be a tensor name other than {target!r}")
        shape = tuple(k if i == along else d for i, d in enumerate(sig.shape))
        return {target: Sig(sig.datatype, shape), indices: Sig(Datatype.INT64, shape)}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        along = step.params.get("axis", -1) % x.ndim
        k = step.params["k"]
        # argpartition then a stable sort of the k winners: O(n) instead of a full sort
        part = np.argpartition(-x, k - 1, axis=along) if k < x.shape[along] else np.argsort(-x, axis=along)
        part = np.take(part, np.arange(k), axis=along)
        values = np.take_along_axis(x, part, axis=along)
        order = np.argsort(-values, axis=along, kind="stable")
        indices = np.take_along_axis(part, order, axis=along).astype(np.int64)
        return {step.target: np.take_along_axis(values, order, axis=along), _indices_name(step): indices}


def _indices_name(step: Step) -> str:
    return step.params.get("indices_as", f"{step.target}_indices")
