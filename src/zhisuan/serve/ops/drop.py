"""``drop``: remove tensors (``outputs``) from the response."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.ops.base import Op, Sig, Step, register


@register
class Drop(Op):
    name = "drop"
    stages = frozenset({"postprocess"})
    required = frozenset({"outputs"})

    def forward(self, step: Step, sigs: dict[str, Sig], *, base: Path | None) -> None:
        where, names = step.where, step.params["outputs"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}: 'outputs' must be a non-empty list of tensor names")
        for name in names:
            if name not in sigs:
                raise UserError(f"{where}: no tensor {name!r} to drop (there are: {', '.join(sigs)})")
            del sigs[name]
        if not sigs:
            raise UserError(f"{where}: dropping {names} leaves no output")

    def run(self, step: Step, tensors: dict[str, np.ndarray], *, labels: Sequence[str] | None) -> None:
        for name in step.params["outputs"]:
            tensors.pop(name, None)
