"""Declarative pre- and post-processing: steps are data (JSON), never code, applied with numpy.

A package may declare steps that turn what a client sends into what the model takes
(``preprocess``) and what the model gives into what the client receives (``postprocess``).
Each step is a dict with an ``op`` and the tensor it reads (``input`` for preprocessing,
``output`` for postprocessing); ``as`` names the tensor it writes (default: the one it read, which
it replaces). Steps are validated when a package is made (:func:`validate_steps`) and when it is
loaded, so a typo fails at ``zhisuan pack`` time and not on the first request.

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhisuan.errors import UserError

Stage = Literal["preprocess", "postprocess"]

#: numpy dtype name <-> Open Inference Protocol v2 datatype.
NUMPY_TO_V2: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
    "object": "BYTES",
    "bytes": "BYTES",
}
V2_TO_NUMPY: dict[str, str] = {v2: np_name for np_name, v2 in NUMPY_TO_V2.items() if np_name != "bytes"}

_FLOAT_TYPES = ("FP16", "FP32", "FP64", "BF16")
_INT_TYPES = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
_NUMERIC_TYPES = (*_FLOAT_TYPES, *_INT_TYPES, "BOOL")


def v2_datatype(dtype: str | np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype (or numpy dtype name); a v2 name passes through.

    >>> v2_datatype("float32"), v2_datatype(np.dtype("int64")), v2_datatype("FP16")
    ('FP32', 'INT64', 'FP16')
    """
    if isinstance(dtype, str):
        if dtype in V2_TO_NUMPY:
            return dtype
        if dtype == "bfloat16":
            return "BF16"
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise UserError(f"unknown datatype {dtype!r}; use e.g. float32, int64, uint8 (or FP32, INT64, UINT8)") from None
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    if dtype.name not in NUMPY_TO_V2:
        raise UserError(f"the datatype {dtype.name!r} has no Open Inference Protocol v2 equivalent")
    return NUMPY_TO_V2[dtype.name]


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype (``BYTES`` -> ``object``) or of a numpy dtype name."""
    v2 = v2_datatype(datatype)
    if v2 == "BF16":
        raise UserError("BF16 tensors have no numpy dtype; declare them FP32 and cast in the model")
    return np.dtype(V2_TO_NUMPY[v2])


@dataclass(frozen=True)
class Sig:
    """A tensor signature as processing sees it: v2 datatype and shape (-1 for a dynamic dim)."""

    datatype: str
    shape: tuple[int, ...]


# --- the ops -------------------------------------------------------------------------------------
# Each op: allowed keys (besides "op", the source key and "as"), required keys, a checker that
# returns the signature(s) it produces, and a numpy function.

_SOURCE_KEY: dict[Stage, str] = {"preprocess": "input", "postprocess": "output"}
_OPS: dict[str, tuple[frozenset[str], frozenset[str], frozenset[Stage]]] = {
    # op: (optional keys, required keys, stages)
    "cast": (frozenset({"from"}), frozenset({"dtype"}), frozenset({"preprocess", "postprocess"})),
    "scale": (frozenset({"scale", "offset", "dtype"}), frozenset(), frozenset({"preprocess", "postprocess"})),
    "normalize": (frozenset({"axis", "dtype"}), frozenset({"mean", "std"}), frozenset({"preprocess", "postprocess"})),
    "transpose": (frozenset(), frozenset({"perm"}), frozenset({"preprocess", "postprocess"})),
    "clip": (frozenset({"min", "max"}), frozenset(), frozenset({"preprocess", "postprocess"})),
    "softmax": (frozenset({"axis"}), frozenset(), frozenset({"preprocess", "postprocess"})),
    "topk": (frozenset({"axis", "indices_as"}), frozenset({"k"}), frozenset({"postprocess"})),
    "argmax": (frozenset({"axis"}), frozenset(), frozenset({"postprocess"})),
    "labels": (frozenset({"labels", "labels_file"}), frozenset(), frozenset({"postprocess"})),
    "drop": (frozenset(), frozenset({"outputs"}), frozenset({"postprocess"})),
}

OPS: tuple[str, ...] = tuple(_OPS)


def _where(stage: Stage, index: int, step: Mapping[str, Any]) -> str:
    return f"{stage} step {index + 1} ({step.get('op', '?')})"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what} must be an integer, got {value!r}")
    return value


def _float_dtype(value: Any, what: str) -> str:
    datatype = _datatype(value, what)
    if datatype not in _FLOAT_TYPES or datatype == "BF16":
        raise UserError(f"{what} must be a float type (float16, float32, float64), got {value!r}")
    return datatype


def _datatype(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{what} must be a datatype name such as 'float32' or 'FP32', got {value!r}")
    try:
        return v2_datatype(value)
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None


def _axis(value: Any, rank: int, what: str) -> int:
    axis = _int(value, what)
    if not -rank <= axis < rank:
        raise UserError(f"{what} {axis} is out of range for a rank-{rank} tensor")
    return axis % rank


def _float_result(datatype: str, asked: str | None) -> str:
    """Arithmetic keeps a float input's type and turns an integer input into FP32 (or ``dtype``)."""
    if asked is not None:
        return asked
    return datatype if datatype in _FLOAT_TYPES else "FP32"


def _read_labels(step: Mapping[str, Any], base: Path | None, where: str) -> list[str]:
    if ("labels" in step) == ("labels_file" in step):
        raise UserError(f"{where}: give exactly one of 'labels' (a list) or 'labels_file'")
    if "labels" in step:
        labels = step["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise UserError(f"{where}: 'labels' must be a non-empty list of strings")
        return labels
    name = step["labels_file"]
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


def _check_step(
    step: Mapping[str, Any], sigs: dict[str, Sig], stage: Stage, index: int, base: Path | None
) -> dict[str, Sig]:
    """Validate one step against the signatures it reads; return the signatures after it."""
    where = _where(stage, index, step)
    op = step["op"]
    out = dict(sigs)
    if op == "drop":
        names = step["outputs"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}: 'outputs' must be a non-empty list of tensor names")
        for name in names:
            if name not in out:
                raise UserError(f"{where}: no tensor {name!r} to drop (there are: {', '.join(out)})")
            del out[name]
        if not out:
            raise UserError(f"{where}: dropping {names} leaves no output")
        return out
    source = step[_SOURCE_KEY[stage]]
    if not isinstance(source, str) or source not in sigs:
        raise UserError(f"{where}: no tensor {source!r} at this point (there are: {', '.join(sigs)})")
    target = step.get("as", source)
    if not isinstance(target, str) or not target:
        raise UserError(f"{where}: 'as' must be a tensor name")
    sig = sigs[source]
    rank = len(sig.shape)
    if op not in ("cast", "labels", "transpose") and sig.datatype not in _NUMERIC_TYPES:
        raise UserError(f"{where}: {op} needs a numeric tensor; {source!r} is {sig.datatype}")
    if op == "cast":
        out[target] = Sig(_datatype(step["dtype"], f"{where}: 'dtype'"), sig.shape)
        if "from" in step:
            _datatype(step["from"], f"{where}: 'from'")
    elif op == "scale":
        if "scale" not in step and "offset" not in step:
            raise UserError(f"{where}: give 'scale' and/or 'offset'")
        if _number(step.get("scale", 1.0), f"{where}: 'scale'") == 0:
            raise UserError(f"{where}: 'scale' must not be 0")
        _number(step.get("offset", 0.0), f"{where}: 'offset'")
        asked = _float_dtype(step["dtype"], f"{where}: 'dtype'") if "dtype" in step else None
        out[target] = Sig(_float_result(sig.datatype, asked), sig.shape)
    elif op == "normalize":
        if rank == 0:
            raise UserError(f"{where}: normalize needs a tensor with at least one axis")
        axis = _axis(step.get("axis", 1 if rank > 1 else 0), rank, f"{where}: 'axis'")
        mean, std = step["mean"], step["std"]
        for key, values in (("mean", mean), ("std", std)):
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}: '{key}' must be a non-empty list of numbers")
            for v in values:
                _number(v, f"{where}: '{key}' entry")
        if len(mean) != len(std):
            raise UserError(f"{where}: 'mean' has {len(mean)} values but 'std' has {len(std)}")
        if any(v == 0 for v in std):
            raise UserError(f"{where}: 'std' must not contain 0")
        dim = sig.shape[axis]
        if dim >= 0 and len(mean) not in (1, dim):
            raise UserError(f"{where}: axis {axis} of {source!r} has {dim} channels but mean/std have {len(mean)} values")
        asked = _float_dtype(step["dtype"], f"{where}: 'dtype'") if "dtype" in step else None
        out[target] = Sig(_float_result(sig.datatype, asked), sig.shape)
    elif op == "transpose":
        perm = step["perm"]
        if not isinstance(perm, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in perm) \
                or sorted(perm) != list(range(rank)):
            raise UserError(f"{where}: 'perm' must be a permutation of 0..{rank - 1} for {source!r} (rank {rank})")
        out[target] = Sig(sig.datatype, tuple(sig.shape[p] for p in perm))
    elif op == "clip":
        if "min" not in step and "max" not in step:
            raise UserError(f"{where}: give 'min' and/or 'max'")
        lo = _number(step["min"], f"{where}: 'min'") if "min" in step else None
        hi = _number(step["max"], f"{where}: 'max'") if "max" in step else None
        if lo is not None and hi is not None and lo > hi:
            raise UserError(f"{where}: 'min' {lo} is above 'max' {hi}")
        out[target] = sig
    elif op == "softmax":
        if rank == 0:
            raise UserError(f"{where}: softmax needs a tensor with at least one axis")
        _axis(step.get("axis", -1), rank, f"{where}: 'axis'")
        out[target] = Sig(_float_result(sig.datatype, None), sig.shape)
    elif op == "topk":
        if rank == 0:
            raise UserError(f"{where}: topk needs a tensor with at least one axis")
        axis = _axis(step.get("axis", -1), rank, f"{where}: 'axis'")
        k = _int(step["k"], f"{where}: 'k'")
        dim = sig.shape[axis]
        if k < 1 or (dim >= 0 and k > dim):
            raise UserError(f"{where}: 'k' must be in 1..{dim if dim >= 0 else 'the axis size'}, got {k}")
        indices = step.get("indices_as", f"{target}_indices")
        if not isinstance(indices, str) or not indices or indices == target:
            raise UserError(f"{where}: 'indices_as' must be a tensor name other than {target!r}")
        shape = tuple(k if i == axis else d for i, d in enumerate(sig.shape))
        out[target] = Sig(sig.datatype, shape)
        out[indices] = Sig("INT64", shape)
    elif op == "argmax":
        if rank == 0:
            raise UserError(f"{where}: argmax needs a tensor with at least one axis")
        axis = _axis(step.get("axis", -1), rank, f"{where}: 'axis'")
        out[target] = Sig("INT64", tuple(d for i, d in enumerate(sig.shape) if i != axis))
    elif op == "labels":
        if sig.datatype not in _INT_TYPES:
            raise UserError(f"{where}: labels maps integer class ids; {source!r} is {sig.datatype} "
                            "(use argmax or topk first)")
        _read_labels(step, base, where)
        out[target] = Sig("BYTES", sig.shape)
    return out


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
    source_key = _SOURCE_KEY[stage]
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise UserError(f"{stage} step {index + 1} must be an object like {{\"op\": ...}}, got {step!r}")
        where = _where(stage, index, step)
        op = step.get("op")
        if op not in _OPS:
            raise UserError(f"{where}: unknown op {op!r}; known: {', '.join(OPS)}")
        optional, required, stages = _OPS[op]
        if stage not in stages:
            raise UserError(f"{where}: {op} is a {'/'.join(sorted(stages))} op, not a {stage} op")
        keys = set(step) - {"op"}
        if op != "drop":
            required = required | {source_key}
            optional = optional | {"as"}
        missing = sorted(required - keys)
        unknown = sorted(keys - required - optional)
        if missing:
            raise UserError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise UserError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; {op} takes {allowed}")
        checked.append(json.loads(json.dumps(dict(step))))  # plain JSON data, detached from the caller
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
    for index, step in enumerate(steps):
        sigs = _check_step(step, sigs, stage, index, base)
        if stage == "preprocess" and step.get("as", step["input"]) != step["input"]:
            sigs.pop(step["input"], None)
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
    key = _SOURCE_KEY[stage]
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
                f"{_where(stage, index, step)}: say which tensor it {'reads' if stage == 'preprocess' else 'takes'} "
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
        step = steps[index]
        where = _where("preprocess", index, step)
        source = step["input"]
        target = step.get("as", source)
        if target not in sigs:
            raise UserError(f"{where}: writes {target!r}, which the model does not take at this point "
                            f"(it takes: {', '.join(sigs)})")
        sig = sigs.pop(target)
        if source in sigs and source != target:
            raise UserError(f"{where}: reads {source!r}, which is also a model input; name the result differently")
        op = step["op"]
        if op == "cast":
            sig = Sig(_datatype(step["from"], f"{where}: 'from'") if "from" in step else sig.datatype, sig.shape)
        elif op == "transpose":
            perm = step["perm"]
            if len(perm) != len(sig.shape) or sorted(perm) != list(range(len(sig.shape))):
                raise UserError(f"{where}: 'perm' {perm} does not fit the rank-{len(sig.shape)} tensor {target!r}")
            inverse = [0] * len(perm)
            for i, p in enumerate(perm):
                inverse[p] = i
            sig = Sig(sig.datatype, tuple(sig.shape[inverse[i]] for i in range(len(perm))))
        sigs[source] = sig
    return sigs


# --- applying ------------------------------------------------------------------------------------


def _as_float(x: np.ndarray, datatype: str) -> np.ndarray:
    dtype = numpy_dtype(datatype)
    return x if x.dtype == dtype else x.astype(dtype)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


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
    source_key = _SOURCE_KEY[stage]
    for index, step in enumerate(steps):
        op = step["op"]
        if op == "drop":
            for name in step["outputs"]:
                out.pop(name, None)
            continue
        source = step[source_key]
        if source not in out:
            raise UserError(f"{_where(stage, index, step)}: no tensor {source!r} (got: {', '.join(out)})")
        target = step.get("as", source)
        x = np.asarray(out[source])
        try:
            if op == "cast":
                out[target] = x.astype(numpy_dtype(_datatype(step["dtype"], "dtype")), copy=False)
            elif op == "scale":
                datatype = _float_result(v2_datatype(x.dtype), step.get("dtype") and v2_datatype(step["dtype"]))
                y = _as_float(x, datatype)
                scale, offset = step.get("scale", 1.0), step.get("offset", 0.0)
                y = y * y.dtype.type(scale) if scale != 1.0 else y
                out[target] = y + y.dtype.type(offset) if offset != 0.0 else y
            elif op == "normalize":
                datatype = _float_result(v2_datatype(x.dtype), step.get("dtype") and v2_datatype(step["dtype"]))
                y = _as_float(x, datatype)
                axis = step.get("axis", 1 if x.ndim > 1 else 0) % x.ndim
                shape = [1] * x.ndim
                shape[axis] = -1
                mean = np.asarray(step["mean"], dtype=y.dtype).reshape(shape)
                std = np.asarray(step["std"], dtype=y.dtype).reshape(shape)
                out[target] = (y - mean) / std
            elif op == "transpose":
                out[target] = np.ascontiguousarray(np.transpose(x, step["perm"]))
            elif op == "clip":
                out[target] = np.clip(x, step.get("min"), step.get("max"))
            elif op == "softmax":
                y = _as_float(x, _float_result(v2_datatype(x.dtype), None))
                out[target] = _softmax(y, step.get("axis", -1))
            elif op == "topk":
                axis = step.get("axis", -1) % x.ndim
                k = step["k"]
                # argpartition then a stable sort of the k winners: O(n) instead of a full sort
                part = np.argpartition(-x, k - 1, axis=axis) if k < x.shape[axis] else np.argsort(-x, axis=axis)
                part = np.take(part, np.arange(k), axis=axis)
                values = np.take_along_axis(x, part, axis=axis)
                order = np.argsort(-values, axis=axis, kind="stable")
                indices = np.take_along_axis(part, order, axis=axis).astype(np.int64)
                out[target] = np.take_along_axis(values, order, axis=axis)
                out[step.get("indices_as", f"{target}_indices")] = indices
            elif op == "argmax":
                out[target] = np.argmax(x, axis=step.get("axis", -1)).astype(np.int64)
            elif op == "labels":
                names = step.get("labels") or (labels or {}).get(index)
                if names is None:
                    raise UserError(f"{_where(stage, index, step)}: labels were not loaded")
                table = np.array([n.encode("utf-8") for n in names], dtype=object)
                ids = x.astype(np.int64, copy=False)
                bad = (ids < 0) | (ids >= len(table))
                if bad.any():
                    raise UserError(f"{_where(stage, index, step)}: class id {int(ids[bad].flat[0])} "
                                    f"is outside the {len(table)} labels")
                out[target] = table[ids]
        except UserError:
            raise
        except (ValueError, TypeError, IndexError, np.exceptions.AxisError) as exc:
            raise UserError(f"{_where(stage, index, step)} failed on {source!r} {list(x.shape)} {x.dtype}: {exc}") from None
        if target != source and stage == "preprocess":
            out.pop(source, None)  # the request tensor was renamed into a model input
    return out


def load_labels(steps: Sequence[Mapping[str, Any]], base: Path) -> dict[int, list[str]]:
    """The label lists of ``labels`` steps that name a ``labels_file`` (relative to ``base``)."""
    return {
        index: _read_labels(step, base, _where("postprocess", index, step))
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
    except ValueError as exc:
        raise UserError(f"{what}: not valid JSON in {source}: {exc}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise UserError(f"{what}: expected a JSON list of steps (or one step object) in {source}")
    return value
