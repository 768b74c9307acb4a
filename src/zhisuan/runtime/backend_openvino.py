"""OpenVINO backend: an ONNX file or OpenVINO IR (``.xml`` + ``.bin``) on CPU, GPU, NPU, AUTO...

Precision is always set explicitly: on CPUs with avx512_bf16 or AMX, OpenVINO runs an f32 model
in bf16 unless ``INFERENCE_PRECISION_HINT`` says otherwise (on a 256-wide MatMul the error against
float64 rose from 3e-5 to 1.4e-1 here; see ``benchmarks/openvino_precision_hint.py``). What the compiled model reports (precision, threads, streams, optimal
number of requests) is read back into :class:`~zhisuan.runtime.base.RuntimeInfo`.

>>> from zhisuan.runtime import load_runtime
>>> rt = load_runtime("model.onnx", "openvino", intra_op_threads=2)  # doctest: +SKIP
>>> rt.info.precision, rt.info.intra_op_threads  # doctest: +SKIP
('f32', 2)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime.base import (
    BackendOptions,
    BackendStatus,
    Precision,
    RunnerBase,
    RuntimeInfo,
    RuntimeOptions,
    TensorSpec,
    import_backend,
)
from zhisuan.runtime.feeds import check_feeds
from zhisuan.runtime.onnx_signature import onnx_signature

INSTALL_HINT = "pip install openvino"

# zhisuan precision -> OpenVINO INFERENCE_PRECISION_HINT
_PRECISION_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16"}
_PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
# Devices that are not hardware but dispatch to it; core.available_devices does not list them.
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_SUFFIXES = (".onnx", ".xml")


@dataclass(frozen=True)
class OpenVinoOptions(BackendOptions):
    """OpenVINO's own options (the precision hint comes from ``precision``, always set).

    >>> OpenVinoOptions(performance_hint="throughput", num_streams="2")
    OpenVinoOptions(performance_hint='THROUGHPUT', num_streams=2)
    """

    backend: ClassVar[str] = "openvino"

    #: ``PERFORMANCE_HINT``: LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT (any case).
    performance_hint: str = "LATENCY"
    #: ``NUM_STREAMS`` for parallel requests; None leaves it to the performance hint.
    num_streams: int | None = None
    #: ``PERF_COUNT``: per-node timings in the infer request's ``profiling_info`` (zhisuan profile).
    perf_count: bool = False

    def __post_init__(self) -> None:
        hint = str(self.performance_hint).upper()
        if hint not in _PERFORMANCE_HINTS:
            raise UserError(f"unknown performance_hint {hint!r}; choose one of: {', '.join(_PERFORMANCE_HINTS)}")
        object.__setattr__(self, "performance_hint", hint)
        if self.num_streams is not None:
            try:
                object.__setattr__(self, "num_streams", int(self.num_streams))
            except (TypeError, ValueError):
                raise UserError(f"num_streams must be an integer, got {self.num_streams!r}") from None


def openvino_device(device: str) -> str:
    """The OpenVINO device for a zhisuan device name.

    ``cpu`` -> ``CPU``, ``gpu`` -> ``GPU``, ``gpu:1`` -> ``GPU.1``, ``npu`` -> ``NPU``, and
    ``openvino:<NAME>`` passes ``<NAME>`` through unchanged (``openvino:AUTO``, ``openvino:GPU.1``).

    >>> openvino_device("gpu:1"), openvino_device("openvino:HETERO:GPU,CPU")
    ('GPU.1', 'HETERO:GPU,CPU')
    """
    prefix, sep, rest = device.partition(":")
    if prefix.lower() == "openvino" and sep:
        if not rest:
            raise UserError(f"bad device {device!r}; expected e.g. 'openvino:GPU'")
        return rest
    if prefix.lower() == "cpu":
        return "CPU"  # OpenVINO has one CPU device; "cpu:0" means the same
    if prefix.lower() in ("gpu", "npu"):
        return prefix.upper() + (f".{rest}" if rest else "")
    raise UserError(
        f"openvino has no device {device!r}; use 'cpu', 'gpu', 'gpu:N', 'npu' or 'openvino:<OpenVINO device>'"
    )


def _one_line(exc: BaseException) -> str:
    # OpenVINO messages are stacks of "Exception from src/...:NN:" lines; the last line says why.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1]


def _type_name(value: Any) -> str:
    # Element types come back as openvino.Type; hints as enums or strings depending on the version.
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    return str(getattr(value, "name", value))


class OpenVinoRunner(RunnerBase):
    """A model compiled by ``openvino.Core`` with one synchronous ``InferRequest``."""

    name = "openvino"

    def __init__(self, model: str | Path | bytes, options: RuntimeOptions) -> None:
        import openvino as ov

        if options.precision not in _PRECISION_HINTS:
            raise UserError(
                f"openvino runs int8 only from a quantized model; quantize it first (zhisuan quantize) "
                f"and load it with precision fp32 (asked: {options.precision.value})"
            )
        if options.inter_op_threads is not None:
            raise UserError(
                "openvino has no inter-op thread pool; use intra_op_threads, or num_streams for parallel requests"
            )
        own = options.backend_options_as(OpenVinoOptions)
        hint = own.performance_hint
        device = openvino_device(options.device)
        core = ov.Core()
        self._check_device(core, device)

        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[options.precision],
            "PERFORMANCE_HINT": hint,
        }
        if options.intra_op_threads is not None:
            if options.intra_op_threads < 1:
                raise UserError(f"intra_op_threads must be at least 1, got {options.intra_op_threads}")
            config["INFERENCE_NUM_THREADS"] = options.intra_op_threads
        if own.num_streams is not None:
            config["NUM_STREAMS"] = own.num_streams
        if own.perf_count:
            config["PERF_COUNT"] = True

        ov_model, onnx_specs = _read_model(core, model)
        try:
            self._compiled = core.compile_model(ov_model, device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError for every failure
            raise UserError(f"openvino could not compile the model for {device}: {_one_line(exc)}") from None
        self._request = self._compiled.create_infer_request()

        # Key every port by its ONNX tensor name and spec, so results match ONNX Runtime's. A port
        # can carry several names (OpenVINO merges tensors); prefer the one the ONNX graph uses.
        self._inputs = [_port_spec(p, onnx_specs) for p in self._compiled.inputs]
        self._outputs = [_port_spec(p, onnx_specs) for p in self._compiled.outputs]
        self._output_ports = {spec.name: port for spec, port in zip(self._outputs, self._compiled.outputs, strict=True)}

        prop = self._property
        precision = prop("INFERENCE_PRECISION_HINT")
        threads = prop("INFERENCE_NUM_THREADS")
        self._info = RuntimeInfo(
            runtime=self.name,
            version=ov.get_version(),
            device=options.device,
            provider=device,
            precision=_type_name(precision) if precision is not None else "unknown",
            intra_op_threads=int(threads) if threads is not None else None,
            inter_op_threads=None,
            details={
                "requested_precision": config["INFERENCE_PRECISION_HINT"],
                "performance_hint": _type_name(prop("PERFORMANCE_HINT") or hint),
                "optimal_number_of_infer_requests": prop("OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
                "num_streams": _plain(prop("NUM_STREAMS")),
                "execution_devices": _plain(prop("EXECUTION_DEVICES")),
                "full_device_name": _device_name(core, device),
            },
        )

    @staticmethod
    def _check_device(core: Any, device: str) -> None:
        if device.split(":")[0].split(".")[0] in _VIRTUAL_DEVICES:
            return
        available = list(core.available_devices)
        base = device.split(".")[0]
        if device not in available and not (device == base and any(d.split(".")[0] == base for d in available)):
            raise BackendUnavailableError(
                f"openvino {device}",
                f"OpenVINO sees only {', '.join(available) or 'no devices'}; "
                f"the {base} plugin needs its device and driver",
            )

    def _property(self, key: str) -> Any:
        try:
            return self._compiled.get_property(key)
        except Exception:  # not every device supports every property (e.g. threads on GPU)
            return None

    @property
    def compiled_model(self) -> Any:
        """The underlying ``openvino.CompiledModel`` (for async requests and profiling)."""
        return self._compiled

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        check_feeds(feeds, self._inputs)
        names = list(output_names) if output_names else list(self._output_ports)
        unknown = [n for n in names if n not in self._output_ports]
        if unknown:
            raise UserError(f"unknown outputs {unknown}; the model gives {list(self._output_ports)}")
        # np.asarray(order="C"), not ascontiguousarray: that turns a 0-d scalar input into shape [1]
        by_index = {i: np.asarray(feeds[spec.name], order="C") for i, spec in enumerate(self._inputs)}
        try:
            # share_outputs=False copies results out of the request, so they survive the next run.
            results = self._request.infer(by_index, share_inputs=False, share_outputs=False)
        except Exception as exc:
            raise UserError(f"openvino failed to run the model: {_one_line(exc)}") from None
        return {n: results[self._output_ports[n]] for n in names}

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _read_model(core: Any, model: str | Path | bytes) -> tuple[Any, dict[str, TensorSpec]]:
    """The ``openvino.Model`` and the ONNX graph's own input/output specs by name (empty for IR)."""
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        if path.suffix.lower() not in _SUFFIXES:
            raise UserError(f"openvino loads an ONNX file (.onnx) or OpenVINO IR (.xml), not {path.name}")
    specs: dict[str, TensorSpec] = {}
    if isinstance(model, bytes) or Path(model).suffix.lower() == ".onnx":
        inputs, outputs = onnx_signature(model)
        specs = {spec.name: spec for spec in (*inputs, *outputs)}
    try:
        return core.read_model(model if isinstance(model, bytes) else str(model)), specs
    except Exception as exc:
        raise UserError(f"openvino could not load {'the model' if isinstance(model, bytes) else model}: "
                        f"{_one_line(exc)}") from None


def _port_spec(port: Any, onnx_specs: Mapping[str, TensorSpec]) -> TensorSpec:
    partial = port.get_partial_shape()
    # A dynamic rank has no TensorSpec form; such models (IR only) are rare, shown as rank 0.
    shape = tuple(d.get_length() if d.is_static else None for d in partial) if partial.rank.is_static else ()
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except Exception:  # e.g. bf16, string: no numpy equivalent
        dtype = port.get_element_type().get_type_name()
    preferred = sorted(n for n in port.get_names() if n in onnx_specs)
    if not preferred:
        return TensorSpec(port.get_any_name(), dtype, shape)
    onnx_spec = onnx_specs[preferred[0]]
    if onnx_spec.dtype == dtype and len(onnx_spec.shape) == len(shape):
        return onnx_spec  # same tensor, with the ONNX dim names that OpenVINO drops
    return TensorSpec(onnx_spec.name, dtype, shape)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, int | float | str | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _device_name(core: Any, device: str) -> str | None:
    try:
        return str(core.get_property(device, "FULL_DEVICE_NAME"))
    except Exception:  # virtual devices (AUTO, HETERO) have no single name
        return None


class _OpenVinoBackend:
    name = "openvino"
    install_hint = INSTALL_HINT
    options_type = OpenVinoOptions

    def status(self) -> BackendStatus:
        ov = import_backend(self.name, "openvino", INSTALL_HINT)
        if isinstance(ov, BackendStatus):
            return ov
        try:
            devices = tuple(ov.Core().available_devices)
        except Exception as exc:  # OpenVINO raises RuntimeError when its plugins cannot load
            return BackendStatus.unavailable(self.name, f"no device: {_one_line(exc)}", INSTALL_HINT)
        return BackendStatus(self.name, True, ov.get_version(), devices, None, INSTALL_HINT)

    def load(self, model: str | Path | Any, options: RuntimeOptions) -> OpenVinoRunner:
        if importlib.util.find_spec("openvino") is None:
            raise BackendUnavailableError(self.name, "openvino is not installed", INSTALL_HINT)
        if hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        if not isinstance(model, str | Path | bytes):
            raise UserError(f"openvino loads an ONNX or IR file path or ONNX bytes, not {type(model).__name__}")
        return OpenVinoRunner(model, options)


BACKEND = _OpenVinoBackend()
