"""One Runtime protocol over ONNX Runtime, OpenVINO, PyTorch, TensorRT and a null backend.

Backends are modules named ``backend_*.py`` in this package, each exposing ``BACKEND``; they are
discovered, and they import their heavy library only when asked for status or a model. Each
backend's own options are a frozen dataclass in its module (``OrtOptions``, ``OpenVinoOptions``,
``TorchOptions``, ``TensorRtOptions``, ``NullOptions``), named by ``BACKEND.options_type``.

>>> from zhisuan.runtime import backend_names
>>> "onnxruntime" in backend_names()
True
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache, partial
from pathlib import Path
from typing import Any

from zhisuan.device.registry import set_backend_source
from zhisuan.errors import UserError
from zhisuan.runtime.base import (
    RUNTIME_PRECISIONS,
    Backend,
    BackendOptions,
    BackendStatus,
    Precision,
    Runtime,
    RuntimeInfo,
    RuntimeOptions,
    TensorSpec,
    options_as,
)

__all__ = [
    "Backend",
    "BackendOptions",
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


_ORDER = {"onnxruntime": 0, "openvino": 1, "torch": 2, "tensorrt": 3, "null": 4}


def backend_names() -> list[str]:
    """Names of every backend zhisuan knows, installed or not."""
    return list(_backend_modules())


def get_backend(name: str) -> Backend:
    modules = _backend_modules()
    if name not in modules:
        raise UserError(f"unknown runtime {name!r}; choose one of: {', '.join(modules)}")
    return importlib.import_module(modules[name]).BACKEND


def backend_status(*, tolerate_errors: bool = False) -> list[BackendStatus]:
    """Status of every backend: available or not, version, devices, install hint.

    ``tolerate_errors``: a backend whose status check raises counts as unavailable, with the
    error as its reason, so one broken runtime cannot hide the others (or the devices).
    """
    if not tolerate_errors:
        return [get_backend(name).status() for name in backend_names()]
    statuses = []
    for name in backend_names():
        try:
            statuses.append(get_backend(name).status())
        except Exception as exc:  # any failure of a third-party import or probe
            statuses.append(BackendStatus(name, False, None, (), f"status check failed: {exc}"))
    return statuses


def load_runtime(
    model: str | Path | Any,
    runtime: str = "onnxruntime",
    *,
    device: str = "cpu",
    precision: Precision | str = Precision.FP32,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    options: BackendOptions | None = None,
    **backend_options: Any,
) -> Runtime:
    """Load ``model`` on ``runtime``; raises :class:`~zhisuan.errors.UserError` if it cannot.

    The backend's own options come as ``options`` (its dataclass, e.g. ``OrtOptions``) or as
    keywords (``graph_optimization_level="disable"``), or both (keywords win). An option the
    backend does not have, or another backend's options, are a ``UserError``, never ignored.

    >>> rt = load_runtime("model.onnx", "onnxruntime", intra_op_threads=2)  # doctest: +SKIP
    >>> rt.run({"x": x})["y"]  # doctest: +SKIP
    """
    if precision not in RUNTIME_PRECISIONS:
        choices = ", ".join(p.value for p in RUNTIME_PRECISIONS)
        raise UserError(f"unknown precision {precision!r}; choose one of: {choices}")
    precision = Precision(precision)
    backend = get_backend(runtime)
    run_options = RuntimeOptions(
        device=device,
        precision=precision,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        backend_options=_backend_options(backend, options, backend_options),
    )
    return backend.load(model, run_options)


def _backend_options(backend: Backend, given: BackendOptions | None, keywords: dict[str, Any]) -> BackendOptions:
    kind = backend.options_type
    base = options_as(given, kind)
    for name in keywords:
        if name in kind.option_names():
            continue
        owners = [other for other in backend_names() if name in get_backend(other).options_type.option_names()]
        if owners:
            raise UserError(f"{name!r} is an option of {' and '.join(owners)}, not of {backend.name}; "
                            f"{backend.name}'s options are: {', '.join(kind.option_names()) or 'none'}")
    if not keywords:
        return base
    return kind.from_keywords({**{name: getattr(base, name) for name in kind.option_names()}, **keywords})


# The device layer lists the runtimes that reach each device without importing this package:
# it asks whatever source is registered (zhisuan.device.registry.set_backend_source).
set_backend_source(partial(backend_status, tolerate_errors=True))
