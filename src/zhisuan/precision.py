"""The one vocabulary of numeric precisions: what a device computes natively, what a runtime is
asked for, what the GEMM benchmark and the peak model measure.

It sits below both ``device`` and ``runtime`` so each can name a precision without importing the
other; :mod:`zhisuan.runtime.base` re-exports :class:`Precision`. Members are listed in display
order, and being a ``StrEnum`` each compares equal to (and JSON-encodes as) its string.

>>> Precision("bf16") == "bf16", Precision.INT8.is_integer
(True, True)
>>> sort_precisions({"int8", "fp32", "bf16"})
(<Precision.FP32: 'fp32'>, <Precision.BF16: 'bf16'>, <Precision.INT8: 'int8'>)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["Precision", "sort_precisions"]


class Precision(enum.StrEnum):
    """A numeric precision. ``FP32`` is every runtime's default."""

    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"

    @property
    def is_integer(self) -> bool:
        """Integer arithmetic, counted in OP/s rather than FLOP/s."""
        return self.value.startswith("int")


def sort_precisions(precisions: Iterable[str]) -> tuple[Precision, ...]:
    """``precisions`` as members in display order; names that are not a precision are dropped."""
    given = set(precisions)
    return tuple(p for p in Precision if p in given)
