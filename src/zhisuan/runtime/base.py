"""The one Runtime protocol every backend implements (Polygraphy-style runner).

A runtime loads one model, exposes its signature, runs a dict of numpy arrays, and says what
actually ran (provider, device, precision, threads). Backends live one per file in this package
and are discovered by name, never hand-registered in the CLI.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


class Precision(enum.StrEnum):
    """Precision a backend is asked to compute in. ``FP32`` is always the default."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, numpy dtype name, shape (``None`` or a string for dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)


@dataclass(frozen=True)
class RuntimeOptions:
    """What to ask a backend for. Every choice is explicit and recorded."""

    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "tensorrt", ...
    precision: Precision = Precision.FP32
    intra_op_threads: int | None = None  # None: the backend's default, recorded after load
    inter_op_threads: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeInfo:
    """What actually ran, read back from the backend after loading (not what was asked)."""

    runtime: str  # "onnxruntime", "openvino", "torch", "tensorrt"
    version: str
    device: str
    provider: str  # e.g. "CPUExecutionProvider", "CPU" (OpenVINO device), "torch-cpu"
    precision: str  # precision the backend reports it computes in, e.g. "f32", "bf16"
    intra_op_threads: int | None
    inter_op_threads: int | None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["details"] = dict(self.details)
        return d


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can be used here, and if not, why and how to install it."""

    name: str
    available: bool
    version: str | None
    devices: tuple[str, ...]
    reason: str | None = None
    install_hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["devices"] = list(self.devices)
        return d


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
