"""Numeric agreement between a reference and a candidate tensor (pure numpy, no runtime)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from zhisuan.results import Record


@dataclass(frozen=True)
class TensorAgreement(Record):
    """How closely ``cand`` matches ``ref``. ``top1_agreement`` is None for non-float or 0-d data."""

    cosine: float
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    top1_agreement: float | None
    elements: int


def cosine_similarity(ref: np.ndarray, cand: np.ndarray) -> float:
    """Cosine of the flattened tensors in float64; 1.0 when both are all zeros."""
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(cand, dtype=np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Fraction of positions whose argmax over the last axis agrees (per position for sequences)."""
    if ref.ndim == 0 or ref.shape[-1] < 2 or not np.issubdtype(ref.dtype, np.floating):
        return None
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)))


def agreement(ref: np.ndarray, cand: np.ndarray, *, rel_floor: float = 1e-6) -> TensorAgreement:
    """Compare two tensors of the same shape. Relative error divides by ``max(|ref|, rel_floor)``."""
    ref = np.asarray(ref)
    cand = np.asarray(cand)
    if ref.shape != cand.shape:
        raise ValueError(f"shapes differ: reference {list(ref.shape)}, candidate {list(cand.shape)}")
    a = ref.astype(np.float64)
    b = cand.astype(np.float64)
    diff = np.abs(a - b)
    finite = np.isfinite(diff)
    if ref.size == 0:
        return TensorAgreement(1.0, 0.0, 0.0, 0.0, None, 0)
    max_abs = float(diff.max()) if finite.all() else float("inf")
    rel = diff / np.maximum(np.abs(a), rel_floor)
    return TensorAgreement(
        cosine=cosine_similarity(a, b),
        max_abs_error=max_abs,
        max_rel_error=float(rel.max()) if finite.all() else float("inf"),
        mean_abs_error=float(diff.mean()) if finite.all() else float("inf"),
        top1_agreement=top1_agreement(ref, cand),
        elements=int(ref.size),
    )


@dataclass(frozen=True)
class Tolerance(Record):
    """When a candidate counts as agreeing: every element within ``atol + rtol * |ref|``
    (``numpy.allclose`` semantics) and the cosine at least ``min_cosine``."""

    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.999


#: Elements per block of :meth:`AgreementAccumulator.add`: a block's temporaries stay in cache,
#: and its float32 sums (pairwise / BLAS) are added into float64 totals.
_BLOCK = 1 << 16
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


@functools.lru_cache(maxsize=16)
def _constant(size: int, value: float) -> np.ndarray:
    """A read-only float32 array of ``size`` copies of ``value`` (BLAS sums and array operands)."""
    array = np.full(size, value, dtype=np.float32)
    array.flags.writeable = False
    return array


class AgreementAccumulator:
    """:func:`agreement` over many tensor pairs (e.g. one per input sample) in O(1) memory.

    Also counts the elements outside ``tolerance``. Non-finite values that are equal on both
    sides (the same infinity, as attention masks produce) count as agreeing.

    float32 and float16 tensors are measured in float32, block by block (:data:`_BLOCK`
    elements): each block's sums are exact to float32 rounding of a short sum and are added into
    float64 totals, and the cosine is computed from the sum of squared differences, so ``1 -
    cosine`` keeps its precision when the tensors are nearly equal. A block with a non-finite
    value, or whose float32 sums would overflow, is measured in float64. Other dtypes are measured
    in float64.

    >>> acc = AgreementAccumulator(Tolerance(atol=0.1, rtol=0.0, min_cosine=0.9))
    >>> acc.add(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    >>> acc.violations, acc.within()
    (1, False)
    """

    def __init__(self, tolerance: Tolerance | None = None, *, top1: bool = True, check: bool = True) -> None:
        self.tolerance = tolerance or Tolerance()
        self._with_top1 = top1  # False: no top-1 (argmax over a feature map's last axis means nothing)
        self._check = check  # False: no count of elements outside tolerance (``violations`` stays 0)
        self._diff_sq = self._ref_sq = self._cand_sq = 0.0
        self._max_abs = self._max_rel = self._sum_abs = 0.0
        self._elements = 0
        self._top1_hits = 0
        self._top1_rows = 0
        self._top1_known = True
        self.violations = 0

    def add(self, ref: np.ndarray, cand: np.ndarray, *, rel_floor: float = 1e-6) -> None:
        ref = np.asarray(ref)
        cand = np.asarray(cand)
        if ref.shape != cand.shape:
            raise ValueError(f"shapes differ: reference {list(ref.shape)}, candidate {list(cand.shape)}")
        if ref.size == 0:
            return
        fast = ref.dtype in _FAST_DTYPES and cand.dtype in _FAST_DTYPES
        a_all, b_all = ref.reshape(-1), cand.reshape(-1)  # views of contiguous arrays: no copy
        for start in range(0, a_all.size, _BLOCK):
            a, b = a_all[start:start + _BLOCK], b_all[start:start + _BLOCK]
            if not (fast and self._add_fast(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False), rel_floor)):
                self._add_exact(a.astype(np.float64), b.astype(np.float64), rel_floor)
        self._elements += int(a_all.size)
        if not self._with_top1 or ref.ndim == 0 or ref.shape[-1] < 2 or not np.issubdtype(ref.dtype, np.floating):
            self._top1_known = False
        else:
            self._top1_hits += int(np.count_nonzero(np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)))
            self._top1_rows += int(ref.size // ref.shape[-1])

    def _add_fast(self, a: np.ndarray, b: np.ndarray, rel_floor: float) -> bool:
        """Measure one float32 block; False (nothing added) when it needs float64."""
        with np.errstate(all="ignore"):
            diff = np.subtract(a, b)
            np.abs(diff, out=diff)
            max_abs = float(diff.max())
            if not math.isfinite(max_abs):  # a non-finite value on either side, or an overflow
                return False
            scale = np.abs(a)
            ones, floor = _constant(a.size, 1.0), _constant(a.size, rel_floor)
            sums = (float(np.dot(diff, ones)), float(np.dot(diff, diff)), float(np.dot(a, a)), float(np.dot(b, b)))
            rel = np.maximum(scale, floor)  # an array operand: numpy's scalar path is ~6x slower here
            np.divide(diff, rel, out=rel)
            max_rel = float(rel.max())
            if not all(math.isfinite(v) for v in (*sums, max_rel)):
                return False
            atol, rtol = self.tolerance.atol, self.tolerance.rtol
            if self._check and max_abs > atol:  # else no element is outside atol + rtol * |ref|
                if rtol:
                    scale *= np.float32(rtol)
                    scale += np.float32(atol)
                    self.violations += int(np.count_nonzero(diff > scale))
                else:
                    self.violations += int(np.count_nonzero(diff > np.float32(atol)))
        self._sum_abs += sums[0]
        self._diff_sq += sums[1]
        self._ref_sq += sums[2]
        self._cand_sq += sums[3]
        self._max_abs = max(self._max_abs, max_abs)
        self._max_rel = max(self._max_rel, max_rel)
        return True

    def _add_exact(self, a: np.ndarray, b: np.ndarray, rel_floor: float) -> None:
        """Measure one block in float64, with non-finite values (equal ones agree)."""
        with np.errstate(invalid="ignore", over="ignore"):
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            diff = np.where(same, 0.0, np.abs(a - b))
            diff = np.where(np.isnan(diff), np.inf, diff)
            finite = np.isfinite(a) & np.isfinite(b)
            fa, fb = a[finite], b[finite]
            d = fa - fb
            self._diff_sq += float(np.dot(d, d))
            self._ref_sq += float(np.dot(fa, fa))
            self._cand_sq += float(np.dot(fb, fb))
            scale = np.abs(np.where(finite, a, 0.0))
            if self._check:
                bound = self.tolerance.atol + self.tolerance.rtol * scale
                self.violations += int(np.count_nonzero(diff > bound))
            self._max_abs = max(self._max_abs, float(diff.max()))
            self._max_rel = max(self._max_rel, float((diff / np.maximum(scale, rel_floor)).max()))
            self._sum_abs += float(diff.sum())

    def result(self) -> TensorAgreement:
        if self._elements == 0:
            return TensorAgreement(1.0, 0.0, 0.0, 0.0, None, 0)
        na, nb = math.sqrt(self._ref_sq), math.sqrt(self._cand_sq)
        if na == 0.0 and nb == 0.0:
            cosine = 1.0
        elif na == 0.0 or nb == 0.0:
            cosine = 0.0
        else:
            # 1 - cos = (|a - b|^2 - (|a| - |b|)^2) / (2 |a| |b|): no cancellation near cos = 1
            one_minus = (self._diff_sq - (na - nb) ** 2) / (2.0 * na * nb)
            cosine = float(min(max(1.0 - one_minus, -1.0), 1.0))
        top1 = self._top1_hits / self._top1_rows if self._top1_known and self._top1_rows else None
        return TensorAgreement(
            cosine=cosine,
            max_abs_error=self._max_abs,
            max_rel_error=self._max_rel,
            mean_abs_error=self._sum_abs / self._elements,
            top1_agreement=top1,
            elements=self._elements,
        )

    def within(self) -> bool:
        """True when no element is outside tolerance and the cosine is high enough."""
        return self.violations == 0 and self.result().cosine >= self.tolerance.min_cosine
