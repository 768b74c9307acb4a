"""The null backend: an ONNX model's signature with no compute, like tinygrad's NULL device.

It reads the model's inputs and outputs and nothing else; :meth:`NullRunner.run` checks the feeds
as every backend does and returns zeros of each output's dtype and shape, so the layers above a
runtime (benchmarks, servers, comparisons, reports) can be tested without a library or hardware.
A dynamic output dim takes the size that the feeds give the input dim of the same name, else 1.

>>> from onnx import TensorProto, helper
>>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
>>> from zhisuan.runtime import load_runtime
>>> rt = load_runtime(helper.make_model(graph), "null")
>>> rt.run({"x": np.ones((3, 4), np.float32)})["y"].shape, rt.runs
((3, 4), 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zhisuan.errors import UserError
from zhisuan.runtime.base import (
    BackendOptions,
    BackendStatus,
    RunnerBase,
    RuntimeInfo,
    RuntimeOptions,
    TensorSpec,
)
from zhisuan.runtime.feeds import check_feeds
from zhisuan.runtime.onnx_signature import onnx_signature

#: Devices the null backend answers to: its own, and ``cpu`` (``load_runtime``'s default).
_DEVICES = ("null", "cpu")
#: The size of a dynamic dim that no input dim of the same name fixes.
UNTIED_DIM = 1


@dataclass(frozen=True)
class NullOptions(BackendOptions):
    """The null backend takes no options of its own."""

    backend: ClassVar[str] = "null"


class NullRunner(RunnerBase):
    """An ONNX model's signature; ``run`` returns zeros of the output shapes and counts the runs."""

    name = "null"

    def __init__(self, model: str | Path | bytes | Any, options: RuntimeOptions) -> None:
        from zhisuan import __version__

        options.backend_options_as(NullOptions)  # another backend's options are an error here too
        if options.device.lower() not in _DEVICES:
            raise UserError(f"the null backend has no device {options.device!r}; use 'null' (or 'cpu')")
        self._inputs, self._outputs = onnx_signature(model)
        self._output_names = [spec.name for spec in self._outputs]
        self._runs = 0
        self._info = RuntimeInfo(
            runtime=self.name,
            version=__version__,
            device="null",
            provider="null",
            precision="none (no compute)",
            intra_op_threads=options.intra_op_threads,
            inter_op_threads=options.inter_op_threads,
            details={"computes": False, "requested_precision": options.precision.value},
        )

    @property
    def runs(self) -> int:
        """How many :meth:`run` calls this runner served."""
        return self._runs

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        check_feeds(feeds, self._inputs)
        names = list(output_names) if output_names else self._output_names
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise UserError(f"unknown outputs {unknown}; the model gives {self._output_names}")
        sizes = _dim_sizes(feeds, self._inputs)
        specs = {spec.name: spec for spec in self._outputs}
        self._runs += 1
        return {name: _zeros(specs[name], sizes) for name in names}

    def close(self) -> None:
        """Nothing to release; the runner keeps its count."""


def _dim_sizes(feeds: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec]) -> dict[str, int]:
    """Named dynamic dim -> the size the feeds give it (the first input that has it wins)."""
    sizes: dict[str, int] = {}
    for spec in inputs:
        shape = np.shape(feeds[spec.name])
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and axis < len(shape):
                sizes.setdefault(dim, int(shape[axis]))
    return sizes


def _size(dim: int | str | None, sizes: Mapping[str, int]) -> int:
    if isinstance(dim, int) and dim >= 0:
        return dim
    if isinstance(dim, str):
        return sizes.get(dim, UNTIED_DIM)
    return UNTIED_DIM


def _zeros(spec: TensorSpec, sizes: Mapping[str, int]) -> np.ndarray:
    shape = tuple(_size(dim, sizes) for dim in spec.shape)
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:  # bfloat16, float8, an unknown type: numpy has none; the other backends give float32
        dtype = np.dtype(np.float32)
    return np.zeros(shape, dtype=dtype)


class _NullBackend:
    name = "null"
    install_hint = "nothing to install: the null backend is part of zhisuan"
    options_type = NullOptions

    def status(self) -> BackendStatus:
        from zhisuan import __version__

        return BackendStatus(self.name, True, __version__, ("null",), None, self.install_hint)

    def load(self, model: str | Path | Any, options: RuntimeOptions) -> NullRunner:
        return NullRunner(model, options)


BACKEND = _NullBackend()
