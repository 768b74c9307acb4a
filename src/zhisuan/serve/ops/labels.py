"""``labels``: integer class ids -> BYTES names, from an inline ``labels`` list or a ``labels_file``.

A ``labels_file`` is relative to the package and read once when the package loads
(:func:`zhisuan.serve.processing.load_labels`), not per request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.datatypes import INT_TYPES, Datatype
from zhisuan.serve.ops.base import Sig, Step, TensorOp, register


@register
class Labels(TensorOp):
    name = "labels"
    stages = frozenset({"postprocess"})
    optional = frozenset({"labels", "labels_file"})
    numeric = False

    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        if sig.datatype not in INT_TYPES:
            raise UserError(f"{step.where}: labels maps integer class ids; {step.source!r} is {sig.datatype} "
                            "(use argmax or topk first)")
        read_labels(step, base)
        return {step.target: Sig(Datatype.BYTES, sig.shape)}

    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        names = step.params.get("labels") or labels
        if names is None:
            raise UserError(f"{step.where}: labels were not loaded")
        table = np.array([n.encode("utf-8") for n in names], dtype=object)
        ids = x.astype(np.int64, copy=False)
        bad = (ids < 0) | (ids >= len(table))
        if bad.any():
            raise UserError(f"{step.where}: class id {int(ids[bad].flat[0])} is outside the {len(table)} labels")
        return {step.target: table[ids]}


def read_labels(step: Step, base: Path | None) -> list[str]:
    """The step's labels: its inline list, or its ``labels_file`` read relative to ``base``."""
    where, params = step.where, step.params
    if ("labels" in params) == ("labels_file" in params):
        raise UserError(f"{where}: give exactly one of 'labels' (a list) or 'labels_file'")
    if "labels" in params:
        labels = params["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise UserError(f"{where}: 'labels' must be a non-empty list of strings")
        return labels
    name = params["labels_file"]
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: 'labels_file' must be a file name")
    path = Path(name) if base is None else base / name
    if base is not None and (Path(name).is_absolute() or ".." in Path(name).parts):
        raise UserError(f"{where}: 'labels_file' must be a relative path inside the package, got {name!r}")
    return read_labels_file(path, where)


def read_labels_file(path: Path, where: str = "labels") -> list[str]:
    """One label per line (UTF-8), or a JSON list of strings (``.json``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read labels file {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            labels = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{where}: {path} is not valid JSON: {exc}") from None
        if isinstance(labels, dict) and isinstance(labels.get("names"), list):
            labels = labels["names"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise UserError(f"{where}: {path} must hold a JSON list of strings")
    else:
        labels = text.splitlines()
    if not labels:
        raise UserError(f"{where}: labels file {path} is empty")
    return labels
