"""Declarative pre- and post-processing: steps are data (JSON), never code, applied with numpy.

A package may declare steps that turn what a client sends into what the model takes
(``preprocess``) and what the model gives into what the client receives (``postprocess``).
Each step is a dict with an ``op`` and the tensor it reads (``input`` for preprocessing,
``output`` for postprocessing); ``as`` names the tensor it writes (default: the one it read, which
it replaces). Steps are validated when a package is made (:func:`validate_steps`) and when it is
loaded, so a typo fails at ``zhisuan pack`` time and not on the first request. Each op is a class
in :mod:`zhisuan.serve.ops` (one module per op); this module drives them.

Preprocessing ops: ``cast`` (``dtype``, optional ``from``: the datatype clients send), ``scale``
(``x * scale + offset``), ``normalize`` (``(x - mean) / std`` along ``axis``), ``transpose``
(``perm``), ``clip`` (``min``/``max``). Postprocessing ops: ``softmax`` (``axis``), ``topk``
(``k``, ``axis``; values to ``as``, int64 indices to ``indices_as``), ``argmax`` (``axis``),
``labels`` (integer class ids -> BYTES names, from ``labels`` or a ``labels_file`` in the
package), ``drop`` (``outputs``: remove tensors from the response). ``scale``, ``normalize``,
``clip`` and ``softmax`` are allowed on both sides.

>>> import numpy as np
>>> steps = validate_steps([{"op": "cast", "input": "x", "from": "uint8", "dtype": "float32"},
...                         {"op": "scale", "input": "x", "scale": 0.5, "offset": -1}], stage="preprocess")
>>> apply_steps(steps, {"x": np.array([[0, 4]], dtype=np.uint8)}, stage="preprocess")["x"]
array([[-1.,  1.]], dtype=float32)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import InternalError, UserError
from zhisuan.serve.datatypes import NUMPY_TO_V2, V2_TO_NUMPY, numpy_dtype, v2_datatype
from zhisuan.serve.ops import OPS, get_op
from zhisuan.serve.ops.base import SOURCE_KEY, Sig, Stage, Step, TensorOp
from zhisuan.serve.ops.labels import read_labels, read_labels_file

__all__ = [
    "NUMPY_TO_V2",
    "OPS",
    "V2_TO_NUMPY",
    "Sig",
    "Stage",
    "apply_steps",
    "forward_signature",
    "load_labels",
    "numpy_dtype",
    "parse_steps",
    "read_labels_file",
    "request_signature",
    "v2_datatype",
    "validate_steps",
    "with_default_sources",
]


def validate_steps(
    steps: Sequence[Mapping[str, Any]] | None,
    *,
    stage: Stage,
    signature: Mapping[str, Sig] | None = None,
    base: Path | None = None,
) -> tuple[dict[str, Any], ...]:
    """Check every step's form (and, with ``signature``, every tensor it reads); return plain dicts.

    For ``postprocess``, ``signature`` holds the model's outputs; for ``preprocess`` it holds the
    tensors the steps read, i.e. the request side (see :func:`request_signature`). ``base`` is the
    directory that ``labels_file`` is relative to.
    """
    if steps is None:
        return ()
    if not isinstance(steps, list | tuple):
        raise UserError(f"{stage} must be a JSON list of steps, got {type(steps).__name__}")
    checked: list[dict[str, Any]] = []
    for index, params in enumerate(steps):
        if not isinstance(params, Mapping):
            raise UserError(f"{stage} step {index + 1} must be an object like {{\"op\": ...}}, got {params!r}")
        step = Step(params, stage, index)
        get_op(step).check_form(step)
        checked.append(json.loads(json.dumps(dict(params))))  # plain JSON data, detached from the caller
    if signature is not None:
        forward_signature(checked, signature, stage=stage, base=base)
    return tuple(checked)


def forward_signature(
    steps: Sequence[Mapping[str, Any]], signature: Mapping[str, Sig], *, stage: Stage, base: Path | None = None
) -> dict[str, Sig]:
    """The tensors after ``steps`` run on tensors with ``signature``; raises if a step does not fit.

    A preprocessing step that writes under a new name (``as``) consumes the tensor it read, as
    :func:`apply_steps` does.
    """
    sigs = dict(signature)
    for index, params in enumerate(steps):
        step = Step(params, stage, index)
        get_op(step).forward(step, sigs, base=base)
    return sigs


def with_default_sources(
    steps: Sequence[Mapping[str, Any]], *, stage: Stage, signature: Mapping[str, Sig]
) -> list[dict[str, Any]]:
    """Fill in a step's missing ``input`` / ``output`` when only one tensor can be meant.

    ``signature`` is the model's inputs (preprocess) or outputs (postprocess). A preprocessing step
    may leave ``input`` out when the model takes one input and no step renames it; a
    postprocessing step may leave ``output`` out when exactly one tensor exists at that point.
    The filled-in name is written into the step, so the stored manifest is explicit.
    """
    key = SOURCE_KEY[stage]
    filled: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping) or key in step or step.get("op") == "drop":
            filled.append(step)  # type: ignore[arg-type]
            continue
        if stage == "preprocess":
            renames = any(isinstance(s, Mapping) and "as" in s for s in steps)
            names = list(signature) if not renames else []
        else:
            names = list(forward_signature(validate_steps(filled, stage=stage), signature, stage=stage))
        if len(names) != 1:
            raise UserError(
                f"{Step(step, stage, index).where}: say which tensor it "
                f"{'reads' if stage == 'preprocess' else 'takes'} "
                f"with {key!r} (there are several: {', '.join(names) or 'renamed ones'})"
            )
        filled.append({**step, key: names[0]})
    return filled


def request_signature(
    steps: Sequence[Mapping[str, Any]], model_inputs: Mapping[str, Sig]
) -> dict[str, Sig]:
    """What clients send, derived backwards from the model's inputs through the preprocessing steps.

    A ``cast`` says what it turns a tensor into; its ``from`` says what clients send (without it
    the request keeps the cast's target type). ``transpose`` is inverted. ``as`` renames: a step
    that reads ``a`` and writes ``b`` means clients send ``a``.
    """
    sigs = dict(model_inputs)
    for index in range(len(steps) - 1, -1, -1):
        step = Step(steps[index], "preprocess", index)
        source, target = step.source, step.target
        if target not in sigs:
            raise UserError(f"{step.where}: writes {target!r}, which the model does not take at this point "
                            f"(it takes: {', '.join(sigs)})")
        sig = sigs.pop(target)
        if source in sigs and source != target:
            raise UserError(f"{step.where}: reads {source!r}, which is also a model input; name the result differently")
        op = get_op(step)
        if not isinstance(op, TensorOp):  # every preprocessing op reads one tensor
            raise InternalError(f"{step.where}: {op.name} cannot run backwards")
        sigs[source] = op.request(step, sig)
    return sigs


def apply_steps(
    steps: Sequence[Mapping[str, Any]],
    tensors: Mapping[str, np.ndarray],
    *,
    stage: Stage,
    labels: Mapping[int, Sequence[str]] | None = None,
) -> dict[str, np.ndarray]:
    """Run validated ``steps`` on ``tensors`` (a new dict; the inputs are not modified).

    ``labels`` holds the label lists of ``labels`` steps by step index (read once at load time,
    see :func:`load_labels`); a step with an inline ``labels`` list needs none.
    """
    out = dict(tensors)
    loaded = labels or {}
    for index, params in enumerate(steps):
        step = Step(params, stage, index)
        get_op(step).run(step, out, labels=loaded.get(index))
    return out


def load_labels(steps: Sequence[Mapping[str, Any]], base: Path) -> dict[int, list[str]]:
    """The label lists of ``labels`` steps that name a ``labels_file`` (relative to ``base``)."""
    return {
        index: read_labels(Step(step, "postprocess", index), base)
        for index, step in enumerate(steps)
        if step.get("op") == "labels" and "labels_file" in step
    }


def parse_steps(text: str | None, *, what: str) -> list[dict[str, Any]]:
    """Steps from a JSON string, or from a file with ``@path`` (as the CLI takes them)."""
    if text is None or not text.strip():
        return []
    source = "the command line"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{what}: cannot read {path}: {exc}") from None
        source = str(path)
    try:
        value = json.loads(text)
    except RecursionError:  # json's decoder recurses once per nesting level
        raise UserError(f"{what}: the JSON in {source} nests too deeply") from None
    except ValueError as exc:
        raise UserError(f"{what}: not valid JSON in {source}: {exc}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise UserError(f"{what}: expected a JSON list of steps (or one step object) in {source}")
    return value
