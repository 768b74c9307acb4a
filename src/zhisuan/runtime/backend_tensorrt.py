"""TensorRT backend (TensorRT 10 Python API): build an engine from ONNX, cache it, run it on a GPU.

Only an ONNX model is accepted. Engines are built here and cached under
``<cache>/tensorrt/<key>.engine`` with a sha256 manifest that is verified before every
deserialization; an engine file from elsewhere is never loaded. The key covers the ONNX bytes,
the TensorRT version, the GPU, the precision flags and the shape profile, so a change to any of
them builds a fresh engine. Buffers are torch CUDA tensors (torch is a zhisuan dependency), which
avoids a pycuda/cuda-python dependency.

Precision: ``fp16``/``bf16`` set the builder flag, which *allows* TensorRT to pick that
precision per layer; ``int8`` needs a QDQ model (``zhisuan quantize``): TensorRT 10 runs explicit
quantization and has deprecated calibration. :attr:`RuntimeInfo.precision` records the flags.

Dynamic axes need an optimization profile: ``shape_profile={"x": ((1, 3, 224, 224), opt, max)}``.
Without one, a model whose only dynamic axis is the first gets ``(1, opt_batch=1, max_batch=16)``.

>>> from zhisuan.runtime import load_runtime
>>> rt = load_runtime("model.onnx", "tensorrt", precision="fp16", max_batch=32)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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

INSTALL_HINT = "pip install tensorrt (needs an NVIDIA GPU)"
_WORKSPACE_BYTES = 1 << 30
_DEFAULT_MAX_BATCH = 16

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class TensorRtOptions(BackendOptions):
    """How TensorRT builds the engine.

    >>> TensorRtOptions(max_batch=32)
    TensorRtOptions(shape_profile=None, max_batch=32, engine_cache=True)
    """

    backend: ClassVar[str] = "tensorrt"

    #: ``{input: (min_shape, opt_shape, max_shape)}`` for dynamic inputs; see :func:`shape_profile`.
    shape_profile: Mapping[str, Sequence[Sequence[int]]] | None = None
    #: The largest batch of the default profile, for a model whose only dynamic axis is the first.
    max_batch: int = _DEFAULT_MAX_BATCH
    #: Reuse (and store) engines under ``<cache>/tensorrt``; False builds a fresh one every time.
    engine_cache: bool = True

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "max_batch", int(self.max_batch))
        except (TypeError, ValueError):
            raise UserError(f"max_batch must be an integer, got {self.max_batch!r}") from None
        if self.max_batch < 1:
            raise UserError(f"max_batch must be at least 1, got {self.max_batch}")
        object.__setattr__(self, "engine_cache", bool(self.engine_cache))


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ValueError, ImportError):  # a module in sys.modules without a spec, a broken parent
        return False


def _cuda_reason() -> str | None:
    """Why no CUDA GPU can be used here, or None when one can."""
    if not _importable("torch"):
        return "torch (used for GPU buffers) is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def _device_index(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind.lower() not in ("tensorrt", "cuda", "gpu"):
        raise UserError(f"tensorrt runs on an NVIDIA GPU; use device 'tensorrt', 'cuda' or 'cuda:N', not {device!r}")
    try:
        return int(index) if index else 0
    except ValueError:
        raise UserError(f"bad device {device!r}; expected e.g. 'cuda:1'") from None


def shape_profile(
    inputs: Sequence[TensorSpec], *, given: Mapping[str, Sequence[Sequence[int]]] | None = None,
    max_batch: int = _DEFAULT_MAX_BATCH,
) -> Profile:
    """The (min, opt, max) shape of every dynamic input, from ``given`` or a batch-only default.

    >>> shape_profile([TensorSpec("x", "float32", ("batch", 3))], max_batch=8)
    {'x': ((1, 3), (1, 3), (8, 3))}
    """
    given = dict(given or {})
    profile: Profile = {}
    for spec in inputs:
        dynamic = [axis for axis, d in enumerate(spec.shape) if not (isinstance(d, int) and d >= 0)]
        if spec.name in given:
            shapes = tuple(tuple(int(v) for v in s) for s in given[spec.name])
            if len(shapes) != 3 or any(len(s) != len(spec.shape) for s in shapes):
                raise UserError(
                    f"shape_profile[{spec.name!r}] must be (min, opt, max) shapes of rank {len(spec.shape)}"
                )
            profile[spec.name] = shapes  # type: ignore[assignment]
        elif dynamic == [0]:
            rest = tuple(int(d) for d in spec.shape[1:])  # type: ignore[arg-type]
            profile[spec.name] = ((1, *rest), (1, *rest), (max_batch, *rest))
        elif dynamic:
            raise UserError(
                f"input {spec.name!r} has dynamic axes {dynamic} besides the batch; give "
                f"shape_profile={{{spec.name!r}: (min_shape, opt_shape, max_shape)}}"
            )
    return profile


def engine_key(onnx_bytes: bytes, *, trt_version: str, gpu: str, precision: Precision, profile: Profile) -> str:
    """sha256 naming one engine: anything that changes the engine changes the key."""
    digest = hashlib.sha256(onnx_bytes)
    meta = {"trt": trt_version, "gpu": gpu, "precision": precision.value, "profile": profile}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


class TensorRtRunner(RunnerBase):
    """A TensorRT engine with one execution context, fed and read through torch CUDA tensors."""

    name = "tensorrt"

    def __init__(self, onnx_bytes: bytes, options: RuntimeOptions) -> None:
        import tensorrt as trt
        import torch

        if options.intra_op_threads is not None or options.inter_op_threads is not None:
            raise UserError("tensorrt runs on the GPU: intra_op_threads / inter_op_threads do not apply")
        if options.precision not in (Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8):
            raise UserError(f"tensorrt has no precision {options.precision.value}")
        index = _device_index(options.device)
        if index >= torch.cuda.device_count():
            raise BackendUnavailableError("tensorrt", f"cuda:{index} asked, but torch sees {torch.cuda.device_count()} GPU(s)")
        self._device = torch.device("cuda", index)
        torch.cuda.set_device(self._device)
        self._logger = trt.Logger(trt.Logger.WARNING)

        own = options.backend_options_as(TensorRtOptions)
        inputs, outputs = onnx_signature(onnx_bytes)
        profile = shape_profile(inputs, given=own.shape_profile, max_batch=own.max_batch)
        gpu = f"{torch.cuda.get_device_name(index)} sm{''.join(map(str, torch.cuda.get_device_capability(index)))}"
        key = engine_key(onnx_bytes, trt_version=trt.__version__, gpu=gpu, precision=options.precision, profile=profile)
        engine_bytes, cached = self._engine(trt, onnx_bytes, options.precision, profile, key, own.engine_cache)

        runtime = trt.Runtime(self._logger)
        # Engines can carry plugin host code; TensorRT refuses to run it unless this is True.
        runtime.engine_host_code_allowed = False
        self._engine_obj = runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine_obj is None:
            raise UserError("tensorrt could not deserialize the engine it built; see the TensorRT log above")
        self._context = self._engine_obj.create_execution_context()
        self._trt = trt

        names = [self._engine_obj.get_tensor_name(i) for i in range(self._engine_obj.num_io_tensors)]
        mode = self._engine_obj.get_tensor_mode
        self._input_names = [n for n in names if mode(n) == trt.TensorIOMode.INPUT]
        self._output_names = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]
        specs = {s.name: s for s in (*inputs, *outputs)}
        self._inputs = [specs[n] for n in self._input_names if n in specs]
        self._outputs = [specs[n] for n in self._output_names if n in specs]

        self._info = RuntimeInfo(
            runtime=self.name,
            version=trt.__version__,
            device=str(self._device),
            provider="TensorRT",
            precision=_precision_label(options.precision),
            intra_op_threads=None,
            inter_op_threads=None,
            details={
                "gpu": gpu,
                "engine_key": key,
                "engine_from_cache": cached,
                "shape_profile": {k: [list(s) for s in v] for k, v in profile.items()},
            },
        )

    def _engine(
        self, trt: Any, onnx_bytes: bytes, precision: Precision, profile: Profile, key: str, use_cache: bool
    ) -> tuple[bytes, bool]:
        from zhisuan._io import atomic_write_bytes, atomic_write_json, cache_dir, verify_sha256

        if use_cache:
            folder = cache_dir("tensorrt")
            engine_path, manifest_path = folder / f"{key}.engine", folder / f"{key}.json"
            if engine_path.is_file() and manifest_path.is_file():
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                verify_sha256(engine_path, manifest["sha256"])
                return engine_path.read_bytes(), True
        engine_bytes = self._build(trt, onnx_bytes, precision, profile)
        if use_cache:
            atomic_write_bytes(engine_path, engine_bytes)
            atomic_write_json(manifest_path, {
                "sha256": hashlib.sha256(engine_bytes).hexdigest(),
                "tensorrt": trt.__version__,
                "precision": precision.value,
            })
        return engine_bytes, False

    def _build(self, trt: Any, onnx_bytes: bytes, precision: Precision, profile: Profile) -> bytes:
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            raise UserError(f"tensorrt could not parse the ONNX model: {'; '.join(errors) or 'unknown error'}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
        flag = {Precision.FP16: "FP16", Precision.BF16: "BF16", Precision.INT8: "INT8"}.get(precision)
        if flag is not None:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if profile:
            opt_profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in profile.items():
                opt_profile.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(opt_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError("tensorrt could not build an engine for this model; see the TensorRT log above")
        return bytes(serialized)

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        import torch

        check_feeds(feeds, self._inputs)
        names = list(output_names) if output_names else list(self._output_names)
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise UserError(f"unknown outputs {unknown}; the model gives {self._output_names}")
        keep = []  # device tensors must outlive execute_async_v3
        for name in self._input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self._device)
            if not self._context.set_input_shape(name, tuple(tensor.shape)):
                raise UserError(f"input {name!r} shape {list(tensor.shape)} is outside the engine's shape profile")
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        results = {}
        for name in self._output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UserError(f"output {name!r} has a data-dependent shape {shape}, which this backend does not run")
            dtype = _torch_dtype(self._trt, self._engine_obj.get_tensor_dtype(name))
            out = torch.empty(shape, dtype=dtype, device=self._device)
            self._context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream = torch.cuda.current_stream(self._device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise UserError("tensorrt failed to run the model; see the TensorRT log above")
        stream.synchronize()
        return {n: _numpy(results[n]) for n in names}

    def close(self) -> None:
        self._context = None
        self._engine_obj = None


def _precision_label(precision: Precision) -> str:
    if precision is Precision.FP32:
        return "fp32"
    return f"{precision.value} allowed (TensorRT picks per layer)"


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
        "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
    }
    for name, torch_dtype in table.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return torch_dtype
    raise UserError(f"tensorrt output dtype {dtype} has no torch equivalent")


def _numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.cpu().numpy()


class _TensorRtBackend:
    name = "tensorrt"
    install_hint = INSTALL_HINT
    options_type = TensorRtOptions

    def status(self) -> BackendStatus:
        trt = import_backend(self.name, "tensorrt", INSTALL_HINT)
        if isinstance(trt, BackendStatus):
            return trt
        version = getattr(trt, "__version__", None)
        reason = _cuda_reason()
        if reason is not None:
            return BackendStatus(self.name, False, version, (), reason, INSTALL_HINT)
        import torch

        devices = tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
        return BackendStatus(self.name, True, version, devices, None, INSTALL_HINT)

    def load(self, model: str | Path | Any, options: RuntimeOptions) -> TensorRtRunner:
        if not _importable("tensorrt"):
            raise BackendUnavailableError(self.name, "tensorrt is not installed", INSTALL_HINT)
        try:
            import tensorrt  # noqa: F401
        except Exception as exc:
            raise BackendUnavailableError(self.name, f"import failed: {exc}", INSTALL_HINT) from None
        reason = _cuda_reason()
        if reason is not None:
            raise BackendUnavailableError(self.name, reason, INSTALL_HINT)
        return TensorRtRunner(_onnx_bytes(model), options)


def _onnx_bytes(model: str | Path | Any) -> bytes:
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    if isinstance(model, bytes):
        return model
    if not isinstance(model, str | Path):
        raise UserError(f"tensorrt builds from an ONNX file path or bytes, not {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix.lower() != ".onnx":
        raise UserError(
            f"tensorrt builds engines from ONNX (.onnx), not {path.name}; "
            "engines from elsewhere are never deserialized"
        )
    return path.read_bytes()


BACKEND = _TensorRtBackend()
