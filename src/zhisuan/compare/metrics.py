"""Numeric agreement between a reference and a candidate tensor (pure numpy, no runtime)."""

from __future__ import annotations

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


class AgreementAccumulator:
    """:func:`agreement` over many tensor pairs (e.g. one per input sample) in O(1) memory.

    Also counts the elements outside ``tolerance``. Non-finite values that are equal on both
    sides (the same infinity, as attention masks produce) count as agreeing.

    >>> acc = AgreementAccumulator(Tolerance(atol=0.1, rtol=0.0, min_cosine=0.9))
    >>> acc.add(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    >>> acc.violations, acc.within()
    (1, False)
    """

    def __init__(self, tolerance: Tolerance | None = None) -> None:
        self.tolerance = tolerance or Tolerance()
        self._dot = self._ref_sq = self._cand_sq = 0.0
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
        a = ref.astype(np.float64).ravel()
        b = cand.astype(np.float64).ravel()
        with np.errstate(invalid="ignore", over="ignore"):
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            diff = np.where(same, 0.0, np.abs(a - b))
            diff = np.where(np.isnan(diff), np.inf, diff)
            finite = np.isfinite(a) & np.isfinite(b)
            fa, fb = a[finite], b[finite]
            self._dot += float(np.dot(fa, fb))
            self._ref_sq += float(np.dot(fa, fa))
            self._cand_sq += float(np.dot(fb, fb))
            bound = self.tolerance.atol + self.tolerance.rtol * np.abs(np.where(finite, a, 0.0))
            self.violations += int(np.count_nonzero(diff > bound))
            self._max_abs = max(self._max_abs, float(diff.max()))
            self._max_rel = max(self._max_rel, float((diff / np.maximum(np.abs(np.where(finite, a, 0.0)), rel_floor)).max()))
            self._sum_abs += float(diff.sum())
        self._elements += int(a.size)
        top1 = top1_agreement(ref, cand)
        if top1 is None:
            self._top1_known = False
        else:
            rows = int(ref.size // ref.shape[-1])
            self._top1_hits += round(top1 * rows)
            self._top1_rows += rows

    def result(self) -> TensorAgreement:
        if self._elements == 0:
            return TensorAgreement(1.0, 0.0, 0.0, 0.0, None, 0)
        na, nb = np.sqrt(self._ref_sq), np.sqrt(self._cand_sq)
        if na == 0.0 and nb == 0.0:
            cosine = 1.0
        elif na == 0.0 or nb == 0.0:
            cosine = 0.0
        else:
            cosine = float(np.clip(self._dot / (na * nb), -1.0, 1.0))
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
