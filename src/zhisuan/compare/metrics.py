"""Numeric agreement between a reference and a candidate tensor (pure numpy, no runtime)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorAgreement:
    """How closely ``cand`` matches ``ref``. ``top1_agreement`` is None for non-float or 0-d data."""

    cosine: float
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    top1_agreement: float | None
    elements: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
