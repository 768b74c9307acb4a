"""``transpose``: permute the axes (``perm``); the result is C-contiguous, as runtimes want it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.ops.base import Sig, Step, TensorOp, register


@register
class Transpose(TensorOp):
    name = "transpose"
    required = frozenset({"perm"})
    numeric = False

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        perm, rank = step.params["perm"], len(sig.shape)
        if not isinstance(perm, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in perm) \
                or sorted(perm) != list(range(rank)):
            raise UserError(
                f"{step.where}: 'perm' must be a permutation of 0..{rank - 1} for {step.source!r} (rank {rank})"
            )
        return {step.target: Sig(sig.datatype, tuple(sig.shape[p] for p in perm))}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        return {step.target: np.ascontiguousarray(np.transpose(x, step.params["perm"]))}

    def request(self, step: Step, sig: Sig) -> Sig:
        perm = step.params["perm"]
        if len(perm) != len(sig.shape) or sorted(perm) != list(range(len(sig.shape))):
            raise UserError(
                f"{step.where}: 'perm' {perm} does not fit the rank-{len(sig.shape)} tensor {step.target!r}"
            )
        inverse = [0] * len(perm)
        for i, p in enumerate(perm):
            inverse[p] = i
        return Sig(sig.datatype, tuple(sig.shape[inverse[i]] for i in range(len(perm))))
