"""Model inputs ("feeds"): generate them from a signature, load them from ``.npz``, check them.

Every backend checks feeds with :func:`check_feeds` before running, so a wrong name, dtype or
rank gives the same one-line :class:`~zhisuan.errors.UserError` on ONNX Runtime, OpenVINO and
PyTorch alike.

>>> from zhisuan.runtime.base import TensorSpec
>>> specs = [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("x", "float32", (None, 4))]
>>> feeds = random_feeds(specs, batch=2, dim_values={"seq": 8})
>>> {k: (v.shape, v.dtype.name) for k, v in feeds.items()}
{'ids': ((2, 8), 'int64'), 'x': ((2, 4), 'float32')}
>>> check_feeds(feeds, specs)
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from zhisuan.errors import UserError
from zhisuan.runtime.base import UNKNOWN_DTYPE, TensorSpec

__all__ = [
    "DEFAULT_DYNAMIC_DIM",
    "INT_HIGH",
    "UNKNOWN_DTYPE",
    "check_feeds",
    "load_feeds",
    "random_feeds",
    "resolve_shape",
]

#: Size given to a dynamic axis that is not the first one and is not named in ``dim_values``.
#: 16 is long enough for a sequence axis to exercise real work and small enough to stay fast.
DEFAULT_DYNAMIC_DIM = 16

#: Integer inputs are drawn from ``[0, INT_HIGH)``: valid token ids / class indices for any
#: realistic vocabulary, and non-negative so that they are safe as Gather indices.
INT_HIGH = 100


def _is_fixed(dim: int | str | None) -> bool:
    return isinstance(dim, int) and dim >= 0


def resolve_shape(
    spec: TensorSpec, *, batch: int = 1, dim_values: Mapping[str, int] | None = None
) -> tuple[int, ...]:
    """Concrete shape for ``spec``: fixed dims as they are; a dynamic dim named in ``dim_values``
    takes that value; otherwise the first axis is ``batch`` and any other is
    :data:`DEFAULT_DYNAMIC_DIM`.
    """
    dim_values = dim_values or {}
    shape = []
    for axis, dim in enumerate(spec.shape):
        if _is_fixed(dim):
            shape.append(int(dim))  # type: ignore[arg-type]
        elif isinstance(dim, str) and dim in dim_values:
            shape.append(int(dim_values[dim]))
        else:
            shape.append(batch if axis == 0 else DEFAULT_DYNAMIC_DIM)
    return tuple(shape)


def random_feeds(
    specs: Sequence[TensorSpec],
    *,
    batch: int = 1,
    seed: int = 0,
    dim_values: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs that match ``specs``, reproducible from ``seed``.

    Floats are standard normal, integers uniform in ``[0, INT_HIGH)``, bools fair coins.
    Inputs whose names follow transformer conventions get valid values instead of noise:
    ``*mask*`` is all ones (attend everywhere), ``token_type_ids``/``segment_ids`` all zeros and
    ``position_ids`` counts 0, 1, 2, ... along the last axis.
    Dynamic axes follow :func:`resolve_shape`; a named axis gets one size everywhere it appears,
    so e.g. ``input_ids`` and ``attention_mask`` sharing ``"seq"`` always agree.
    """
    if batch < 1:
        raise UserError(f"batch must be at least 1, got {batch}")
    values = dict(dim_values or {})
    bad = {k: v for k, v in values.items() if int(v) < 1}
    if bad:
        raise UserError(f"dimension sizes must be at least 1, got {bad}")
    # Give every named dynamic dim one size, decided where it first appears.
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and dim not in values:
                values[dim] = batch if axis == 0 else DEFAULT_DYNAMIC_DIM
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = resolve_shape(spec, batch=batch, dim_values=values)
        feeds[spec.name] = _random_array(spec, shape, rng)
    return feeds


def _random_array(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        raise UserError(
            f"cannot generate input {spec.name!r}: its dtype {spec.dtype!r} is not a numpy dtype; "
            "give the inputs in an .npz file instead"
        ) from None
    name = spec.name.lower()
    numeric = dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if numeric and "mask" in name:
        return np.ones(shape, dtype=dtype)
    if numeric and ("token_type" in name or "segment_id" in name):
        return np.zeros(shape, dtype=dtype)
    if numeric and "position_id" in name and len(shape) >= 1 and dtype != np.bool_:
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, INT_HIGH, size=shape, dtype=dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    raise UserError(
        f"cannot generate input {spec.name!r} of dtype {spec.dtype}; give the inputs in an .npz file instead"
    )


def _fits(value: object, spec: TensorSpec) -> bool:
    if not isinstance(value, np.ndarray) or spec.dtype == UNKNOWN_DTYPE:
        return False
    shape = value.shape
    if value.dtype.name != spec.dtype or len(shape) != len(spec.shape):
        return False
    return all(not _is_fixed(want) or got == want for got, want in zip(shape, spec.shape, strict=True))


def check_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Raise one :class:`UserError` line listing every way ``feeds`` do not fit ``specs``.

    Checked: missing and unknown names, dtype (exact; no silent casts), rank and fixed dims.
    """
    if len(feeds) == len(specs) and all(_fits(feeds.get(spec.name), spec) for spec in specs):
        return  # the common case, checked cheaply: this runs on every inference call
    expected = {spec.name: spec for spec in specs}
    problems = []
    missing = [name for name in expected if name not in feeds]
    unknown = [name for name in feeds if name not in expected]
    if missing:
        problems.append(f"missing {missing}")
    if unknown:
        problems.append(f"unknown {unknown}")
    for name, value in feeds.items():
        spec = expected.get(name)
        if spec is None or spec.dtype == UNKNOWN_DTYPE:
            continue
        array = np.asarray(value)
        if array.dtype.name != spec.dtype:
            problems.append(f"{name!r} is {array.dtype.name}, the model takes {spec.dtype}")
            continue
        if array.ndim != len(spec.shape):
            problems.append(f"{name!r} has rank {array.ndim} {list(array.shape)}, the model takes rank "
                            f"{len(spec.shape)} {list(spec.shape)}")
            continue
        wrong = [
            axis for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True))
            if _is_fixed(want) and got != want
        ]
        if wrong:
            problems.append(f"{name!r} has shape {list(array.shape)}, the model takes {list(spec.shape)}")
    if problems:
        takes = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in specs)
        raise UserError(f"inputs do not match the model: {'; '.join(problems)} (the model takes {takes})")


def load_feeds(path: str | Path, *, specs: Sequence[TensorSpec] | None = None) -> list[dict[str, np.ndarray]]:
    """Inputs from one ``.npz`` file or a directory of them (sorted by name), one dict per file.

    Arrays are read with ``allow_pickle=False``: an object array could run code when unpickled,
    so a file holding one is refused. With ``specs``, every dict is checked by :func:`check_feeds`.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise UserError(f"no .npz files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"input file or directory not found: {path}")
    feeds = [_load_npz(f) for f in files]
    if specs is not None:
        for f, feed in zip(files, feeds, strict=True):
            try:
                check_feeds(feed, specs)
            except UserError as exc:
                raise UserError(f"{f}: {exc}") from None
    return feeds


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UserError(f"{path} is a single array, not an .npz of named inputs; save them with np.savez")
        with archive:
            return {name: archive[name] for name in archive.files}
    except UserError:
        raise
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise UserError(
                f"{path} holds an object array, which could run code when unpickled; "
                "zhisuan never unpickles input files: save plain numeric arrays"
            ) from None
        if "pickled" in str(exc):  # numpy reads a file that is neither .npz nor .npy as a pickle
            raise UserError(
                f"cannot read inputs from {path}: it is not an .npz archive (zhisuan never unpickles input files)"
            ) from None
        raise UserError(f"cannot read inputs from {path}: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"cannot read inputs from {path}: {exc}") from None
