"""One Runtime protocol over ONNX Runtime, OpenVINO, PyTorch and TensorRT.

Backends are modules named ``backend_*.py`` in this package, each exposing ``BACKEND``; they are
discovered, and they import their heavy library only when asked for status or a model.

>>> from zhisuan.runtime import backend_names
>>> "onnxruntime" in backend_names()
True
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.runtime.base import (
    Backend,
    BackendStatus,
    Precision,
    Runtime,
    RuntimeInfo,
    RuntimeOptions,
    TensorSpec,
)

__all__ = [
    "Backend",
    "BackendStatus",
    "Precision",
    "Runtime",
    "RuntimeInfo",
    "RuntimeOptions",
    "TensorSpec",
    "backend_names",
    "backend_status",
    "get_backend",
    "load_runtime",
]

_PREFIX = "backend_"


@cache
def _backend_modules() -> dict[str, str]:
    found = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith(_PREFIX):
            found[mod.name[len(_PREFIX) :]] = f"{__name__}.{mod.name}"
    return dict(sorted(found.items(), key=lambda kv: _ORDER.get(kv[0], 99)))


_ORDER = {"onnxruntime": 0, "openvino": 1, "torch": 2, "tensorrt": 3}


def backend_names() -> list[str]:
    """Names of every backend zhisuan knows, installed or not."""
    return list(_backend_modules())


def get_backend(name: str) -> Backend:
    modules = _backend_modules()
    if name not in modules:
        raise UserError(f"unknown runtime {name!r}; choose one of: {', '.join(modules)}")
    return importlib.import_module(modules[name]).BACKEND


def backend_status() -> list[BackendStatus]:
    """Status of every backend: available or not, version, devices, install hint."""
    return [get_backend(name).status() for name in backend_names()]


def load_runtime(
    model: str | Path | Any,
    runtime: str = "onnxruntime",
    *,
    device: str = "cpu",
    precision: Precision | str = Precision.FP32,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    **extra: Any,
) -> Runtime:
    """Load ``model`` on ``runtime``; raises :class:`~zhisuan.errors.UserError` if it cannot.

    >>> rt = load_runtime("model.onnx", "onnxruntime", intra_op_threads=2)  # doctest: +SKIP
    >>> rt.run({"x": x})["y"]  # doctest: +SKIP
    """
    try:
        precision = Precision(precision)
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise UserError(f"unknown precision {precision!r}; choose one of: {choices}") from None
    options = RuntimeOptions(
        device=device,
        precision=precision,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        extra=extra,
    )
    return get_backend(runtime).load(model, options)
