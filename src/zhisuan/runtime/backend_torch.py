"""PyTorch backend: the reference that every other backend is compared against.

It runs an in-memory module, never a file: ``torch.load`` of a full module and
``torch.export.load`` of a ``.pt2`` archive both unpickle, and unpickling a file can run any code
it carries (SPEC EV-10: no code runs from a model file). Build the module in Python (the zoo
does), load trusted weights with ``torch.load(weights_only=True)``, and pass it here as a
:class:`~zhisuan.runtime.base.TorchModel`.

Threads: ``torch.set_num_threads`` is global to the process, so ``intra_op_threads`` is applied
around each :meth:`TorchRunner.run` and the previous value restored afterwards; two runners with
different thread counts do not disturb each other. ``inter_op_threads`` can be set only once per
process, before any inter-op work (a PyTorch rule); asking for another value later is a UserError.

>>> import torch
>>> from zhisuan.runtime import load_runtime
>>> from zhisuan.runtime.base import TorchModel
>>> model = TorchModel(torch.nn.Linear(4, 3), input_names=("x",), output_names=("y",))
>>> rt = load_runtime(model, "torch", intra_op_threads=1)
>>> rt.run({"x": np.ones((2, 4), np.float32)})["y"].shape
(2, 3)
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime.base import (
    UNKNOWN_DTYPE,
    BackendOptions,
    BackendStatus,
    Precision,
    RunnerBase,
    RuntimeInfo,
    RuntimeOptions,
    TensorSpec,
    TorchModel,
    import_backend,
)
from zhisuan.runtime.feeds import check_feeds

INSTALL_HINT = "pip install torch"

_FILE_REFUSED = (
    "the torch backend runs an in-memory module, never a file: torch.load and torch.export.load "
    "unpickle, and unpickling a model file can run any code it carries. Build the module in Python, "
    "load trusted weights with torch.load(weights_only=True), and pass a TorchModel"
)


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """What a plain ``torch.nn.Module`` needs to stand in for its ONNX export: the names (and
    optionally the specs) of its inputs and outputs. A :class:`TorchModel` carries them itself.

    >>> TorchOptions(input_names=["x"], output_names=["y"])
    TorchOptions(input_names=('x',), output_names=('y',), input_specs=())
    """

    backend: ClassVar[str] = "torch"

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    input_specs: tuple[TensorSpec, ...] = ()

    def __post_init__(self) -> None:
        for name in ("input_names", "output_names", "input_specs"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))


def _dtype(precision: Precision) -> Any:
    import torch

    table = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
    if precision not in table:
        raise UserError(
            f"the torch backend runs fp32, bf16 or fp16; for {precision.value} quantize the model "
            "(zhisuan quantize) and run it on onnxruntime or openvino"
        )
    return table[precision]


def _torch_device(device: str) -> Any:
    import torch

    kind, _, index = device.partition(":")
    kind = kind.lower()
    if kind == "cpu" and not index:
        return torch.device("cpu")
    if kind != "cuda":
        raise UserError(f"the torch backend has no device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    try:
        number = int(index) if index else 0
    except ValueError:
        raise UserError(f"bad device {device!r}; expected e.g. 'cuda', 'cuda:1'") from None
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "torch cuda", "torch.cuda.is_available() is False (no NVIDIA GPU or a CPU-only torch build)",
            "install a CUDA build of torch from https://pytorch.org",
        )
    if number >= torch.cuda.device_count():
        raise BackendUnavailableError("torch cuda", f"{device} asked, but torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", number)


class TorchRunner(RunnerBase):
    """A ``torch.nn.Module`` in eval mode, run under ``torch.inference_mode()``."""

    name = "torch"

    def __init__(self, model: TorchModel, options: RuntimeOptions) -> None:
        import torch

        self._dtype = _dtype(options.precision)
        self._device = _torch_device(options.device)
        if options.intra_op_threads is not None and options.intra_op_threads < 1:
            raise UserError(f"intra_op_threads must be at least 1, got {options.intra_op_threads}")
        self._threads = options.intra_op_threads
        inter_op = _set_interop_threads(options.inter_op_threads)

        module = model.module
        if self._dtype != torch.float32 or self._device.type != "cpu":
            # Module.to() works in place: cast a copy, so the caller's fp32 module stays a valid
            # reference for the comparison this backend exists for.
            module = copy.deepcopy(module).to(device=self._device, dtype=self._dtype)
        module.eval()
        self._module = module
        self._model = model

        self._inputs = list(model.input_specs) or [TensorSpec(n, UNKNOWN_DTYPE, ()) for n in model.input_names]
        if [s.name for s in self._inputs] != list(model.input_names):
            raise UserError(
                f"input_specs {[s.name for s in self._inputs]} do not match input_names {list(model.input_names)}"
            )
        self._outputs = [TensorSpec(n, UNKNOWN_DTYPE, ()) for n in model.output_names]
        with self._thread_scope():
            threads = torch.get_num_threads()
        self._info = RuntimeInfo(
            runtime=self.name,
            version=torch.__version__,
            device=str(self._device),
            provider=f"torch-{self._device.type}",
            precision=str(self._dtype).removeprefix("torch."),
            intra_op_threads=threads,
            inter_op_threads=inter_op,
            details={
                "module": type(model.module).__name__,
                "intra_op_threads_scope": "set around each run, then restored"
                if self._threads is not None else "process default",
                "outputs_returned_as": "float32" if self._dtype != torch.float32 else "as computed",
                "cuda": torch.version.cuda,
            },
        )

    @contextlib.contextmanager
    def _thread_scope(self) -> Iterator[None]:
        import torch

        before = torch.get_num_threads()
        if self._threads is None or self._threads == before:
            yield
            return
        torch.set_num_threads(self._threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @property
    def module(self) -> Any:
        """The module that runs (a cast copy when precision or device differ from fp32/cpu)."""
        return self._module

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        import torch

        check_feeds(feeds, self._inputs)
        all_names = list(self._model.output_names)
        names = list(output_names) if output_names else all_names
        unknown = [n for n in names if n not in all_names]
        if unknown:
            raise UserError(f"unknown outputs {unknown}; the model gives {all_names}")
        args = [self._tensor(feeds[name]) for name in self._model.input_names]
        with self._thread_scope(), torch.inference_mode():
            try:
                result = self._module(*args)
            except Exception as exc:  # a shape or dtype the module cannot take
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"torch failed to run the model: {message}") from None
            values = self._by_name(result, all_names)
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
        return {n: self._numpy(values[n]) for n in names}

    def _tensor(self, array: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_floating_point() and self._dtype != torch.float32:
            tensor = tensor.to(self._dtype)  # the module was cast; its float inputs must follow
        return tensor.to(self._device)

    @staticmethod
    def _by_name(result: Any, names: list[str]) -> dict[str, Any]:
        if isinstance(result, Mapping):
            missing = [n for n in names if n not in result]
            if missing:
                raise UserError(f"the module returned keys {list(result)}, not the output_names {missing}")
            return {n: result[n] for n in names}
        values = list(result) if isinstance(result, tuple | list) else [result]
        if len(values) != len(names):
            raise UserError(f"the module returned {len(values)} output(s) but output_names lists {len(names)}: {names}")
        return dict(zip(names, values, strict=True))

    @staticmethod
    def _numpy(value: Any) -> np.ndarray:
        import torch

        if not isinstance(value, torch.Tensor):
            raise UserError(f"the module returned a {type(value).__name__}, not a tensor")
        value = value.detach()
        # numpy has no bfloat16; fp16/bf16 results come back as float32 so that any two
        # backends' results compare with the same code.
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.cpu().numpy()

    def close(self) -> None:
        self._module = None


def _set_interop_threads(requested: int | None) -> int:
    import torch

    current = torch.get_num_interop_threads()
    if requested is None or requested == current:
        return current
    if requested < 1:
        raise UserError(f"inter_op_threads must be at least 1, got {requested}")
    try:
        torch.set_num_interop_threads(requested)
    except RuntimeError:
        raise UserError(
            f"torch sets inter-op threads once per process, before any inter-op work; it is already {current}"
        ) from None
    return torch.get_num_interop_threads()


def _as_torch_model(model: Any, own: TorchOptions) -> TorchModel:
    import torch

    if isinstance(model, TorchModel):
        if own != TorchOptions():
            raise UserError("a TorchModel carries its own input and output names; pass no TorchOptions with it")
        return model
    if isinstance(model, str | Path | bytes):
        raise UserError(f"refusing to load {model!r}: {_FILE_REFUSED}" if not isinstance(model, bytes)
                        else f"refusing to load model bytes: {_FILE_REFUSED}")
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"the torch backend runs a TorchModel or torch.nn.Module, not {type(model).__name__}")
    if not own.input_names or not own.output_names:
        raise UserError(
            "a plain torch.nn.Module needs input_names=[...] and output_names=[...] "
            "(the names its ONNX export uses), or pass a TorchModel"
        )
    return TorchModel(model, own.input_names, own.output_names, own.input_specs)


class _TorchBackend:
    name = "torch"
    install_hint = INSTALL_HINT
    options_type = TorchOptions

    def status(self) -> BackendStatus:
        torch = import_backend(self.name, "torch", INSTALL_HINT)
        if isinstance(torch, BackendStatus):
            return torch
        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return BackendStatus(self.name, True, torch.__version__, tuple(devices), None, INSTALL_HINT)

    def load(self, model: str | Path | Any, options: RuntimeOptions) -> TorchRunner:
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailableError(self.name, "torch is not installed", INSTALL_HINT)
        return TorchRunner(_as_torch_model(model, options.backend_options_as(TorchOptions)), options)


BACKEND = _TorchBackend()
