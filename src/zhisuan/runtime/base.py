"""The one Runtime protocol every backend implements (Polygraphy-style runner).

A runtime loads one model, exposes its signature, runs a dict of numpy arrays, and says what
actually ran (provider, device, precision, threads). Backends live one per file in this package
and are discovered by name, never hand-registered in the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from zhisuan.errors import UserError
from zhisuan.precision import Precision
from zhisuan.results import Record

#: The dtype of a :class:`TensorSpec` whose type is not known (e.g. a plain ``torch.nn.Module``).
#: Such a spec carries no shape either: :func:`~zhisuan.runtime.feeds.check_feeds` checks only its name.
UNKNOWN_DTYPE = "unknown"


#: The precisions a backend can be asked to compute in (TF32 and FP8 are GEMM-only: no runtime takes them).
RUNTIME_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8)


@dataclass(frozen=True)
class TensorSpec(Record):
    """One input or output: name, numpy dtype name, shape (``None`` or a string for dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)


_Options = TypeVar("_Options", bound="BackendOptions")


@dataclass(frozen=True)
class BackendOptions:
    """Base of the options one backend takes beyond the shared ones (device, precision, threads).

    Each backend subclasses it with a frozen dataclass of its own fields (``OrtOptions``,
    ``OpenVinoOptions``, ...) and names it as its ``options_type``; a subclass checks its values
    in ``__post_init__``, so a bad value fails when the options are made, not at load time.
    """

    backend: ClassVar[str] = ""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_keywords(cls: type[_Options], keywords: Mapping[str, Any]) -> _Options:
        """The options from keyword arguments; an unknown keyword is a :class:`UserError`."""
        unknown = [name for name in keywords if name not in cls.option_names()]
        if unknown:
            takes = ", ".join(cls.option_names()) or "none"
            raise UserError(f"{cls.backend} has no option {', '.join(map(repr, unknown))}; its options are: {takes}")
        return cls(**keywords)


@dataclass(frozen=True)
class RuntimeOptions:
    """What to ask a backend for. Every choice is explicit and recorded."""

    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "tensorrt", ...
    precision: Precision = Precision.FP32
    intra_op_threads: int | None = None  # None: the backend's default, recorded after load
    inter_op_threads: int | None = None
    backend_options: BackendOptions | None = None  # None: the backend's defaults

    def backend_options_as(self, cls: type[_Options]) -> _Options:
        """``backend_options`` as ``cls``; see :func:`options_as`."""
        return options_as(self.backend_options, cls)


def options_as(given: BackendOptions | None, cls: type[_Options]) -> _Options:
    """``given`` as ``cls`` (its defaults when None); another backend's options are a
    :class:`UserError`, never ignored."""
    if given is None:
        return cls()
    if not isinstance(given, cls):
        raise UserError(f"{type(given).__name__} are {given.backend} options; {cls.backend} takes {cls.__name__}")
    return given


@dataclass(frozen=True)
class RuntimeInfo(Record):
    """What actually ran, read back from the backend after loading (not what was asked)."""

    runtime: str  # "onnxruntime", "openvino", "torch", "tensorrt", "null"
    version: str
    device: str
    provider: str  # e.g. "CPUExecutionProvider", "CPU" (OpenVINO device), "torch-cpu"
    precision: str  # precision the backend reports it computes in, e.g. "f32", "bf16"
    intra_op_threads: int | None
    inter_op_threads: int | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendStatus(Record):
    """Whether a backend can be used here, and if not, why and how to install it."""

    name: str
    available: bool
    version: str | None
    devices: tuple[str, ...]
    reason: str | None = None
    install_hint: str | None = None

    @classmethod
    def unavailable(cls, name: str, reason: str, install_hint: str | None) -> BackendStatus:
        return cls(name, False, None, (), reason, install_hint)


def import_backend(name: str, module: str, install_hint: str) -> Any:
    """Import a backend's library for its ``status()``: the module, or the :class:`BackendStatus`
    that says why it cannot be used (not installed, or its import failed)."""
    import importlib
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken package, or a stub left in sys.modules
        found = False
    if not found:
        return BackendStatus.unavailable(name, f"{module} is not installed", install_hint)
    try:
        return importlib.import_module(module)
    except Exception as exc:  # a broken install raises anything from OSError to RuntimeError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return BackendStatus.unavailable(name, f"import failed: {first}", install_hint)


@runtime_checkable
class Runtime(Protocol):
    """A loaded model on one backend. Use as a context manager or call :meth:`close`."""

    name: str

    @property
    def info(self) -> RuntimeInfo: ...

    def inputs(self) -> list[TensorSpec]: ...

    def outputs(self) -> list[TensorSpec]: ...

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Runtime: ...

    def __exit__(self, *exc: object) -> None: ...


class Backend(Protocol):
    """A backend module exposes ``BACKEND``: an object with this interface."""

    name: str
    install_hint: str
    options_type: type[BackendOptions]

    def status(self) -> BackendStatus: ...

    def load(self, model: str | Path | Any, options: RuntimeOptions) -> Runtime: ...


ONNX_TO_NUMPY: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch module with the names its ONNX export uses, so the torch backend is a drop-in reference.

    ``forward`` takes the inputs positionally in ``input_names`` order and returns a tensor or a
    tuple of tensors in ``output_names`` order.
    """

    module: Any  # torch.nn.Module; typed loosely so this file never imports torch
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_specs: tuple[TensorSpec, ...] = ()


class RunnerBase:
    """Plumbing every backend's runner shares: the signature accessors and the context manager.

    A subclass sets ``_info``, ``_inputs`` and ``_outputs`` when it loads, and implements
    ``run`` and ``close``.
    """

    name: str
    _info: RuntimeInfo
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def info(self) -> RuntimeInfo:
        return self._info

    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> RunnerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
