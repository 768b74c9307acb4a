"""ONNX Runtime backend: CPU EP always; CUDA and TensorRT EPs when the installed build has them."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime.base import (
    ONNX_TO_NUMPY,
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

INSTALL_HINT = "pip install onnxruntime  (or onnxruntime-gpu for CUDA/TensorRT)"


class GraphLevel(StrEnum):
    """ONNX Runtime's graph optimization levels, by the names zhisuan takes."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


#: :class:`GraphLevel` -> its ``onnxruntime.GraphOptimizationLevel`` member
_ORT_LEVELS = {
    GraphLevel.DISABLE: "ORT_DISABLE_ALL",
    GraphLevel.BASIC: "ORT_ENABLE_BASIC",
    GraphLevel.EXTENDED: "ORT_ENABLE_EXTENDED",
    GraphLevel.ALL: "ORT_ENABLE_ALL",
}


def parse_graph_level(level: str) -> GraphLevel:
    """``level`` as a :class:`GraphLevel`; another name is a :class:`UserError` listing the levels."""
    if level not in tuple(GraphLevel):
        raise UserError(f"unknown graph_optimization_level {level!r}; choose one of: {', '.join(GraphLevel)}")
    return GraphLevel(level)


@dataclass(frozen=True)
class OrtOptions(BackendOptions):
    """ONNX Runtime's own options; pass as ``load_runtime(..., options=OrtOptions(...))`` or as
    keywords (``load_runtime(path, graph_optimization_level="disable")``).

    >>> OrtOptions(graph_optimization_level="disable", session_config={"session.intra_op.allow_spinning": 0})
    ... # doctest: +NORMALIZE_WHITESPACE
    OrtOptions(graph_optimization_level=<GraphLevel.DISABLE: 'disable'>,
               session_config={'session.intra_op.allow_spinning': '0'},
               enable_profiling=False, profile_file_prefix=None, optimized_model_path=None, expose_outputs=(),
               log_severity_level=3)
    """

    backend: ClassVar[str] = "onnxruntime"

    #: ``disable``, ``basic``, ``extended`` or ``all``; None keeps ORT's default (``all``).
    graph_optimization_level: GraphLevel | None = None
    #: Session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}`` for servers that
    #: share cores between sessions (spinning worker threads then steal the other session's time).
    session_config: Mapping[str, str] = field(default_factory=dict)
    #: ORT's own per-node profile; the session's ``end_profiling()`` returns the trace file.
    enable_profiling: bool = False
    profile_file_prefix: str | None = None
    #: Where ORT writes the graph it optimized, when the session is made (``.ort`` suffix: ORT format).
    optimized_model_path: str | Path | None = None
    #: Intermediate tensors to add as graph outputs, so that ``run`` can return them.
    expose_outputs: tuple[str, ...] = ()
    #: ORT's log level: 3 shows errors only; 4 (fatal only) for a failure made on purpose.
    log_severity_level: int = 3

    def __post_init__(self) -> None:
        if self.graph_optimization_level is not None:
            object.__setattr__(self, "graph_optimization_level", parse_graph_level(self.graph_optimization_level))
        object.__setattr__(self, "session_config",
                           {str(k): str(v) for k, v in dict(self.session_config or {}).items()})
        object.__setattr__(self, "expose_outputs", tuple(self.expose_outputs))

# zhisuan device name -> ONNX Runtime execution provider
_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}


def provider_chain(
    kind: str, index: int, precision: Precision, available: list[str], *, cache_dir: Path | None = None
) -> list[str | tuple[str, dict[str, Any]]]:
    """The ``providers=`` list for an ``InferenceSession``: the asked EP first, then fallbacks.

    CUDA gets its ``device_id``; TensorRT gets ``device_id``, ``trt_fp16_enable`` for fp16 and an
    engine cache under zhisuan's cache directory, with CUDA behind it for the layers TensorRT
    cannot take. CPU always comes last. Raises :class:`BackendUnavailableError` when the asked EP
    is not in ``available``, and :class:`UserError` for a precision the EP cannot be asked for.

    >>> provider_chain("cpu", 0, Precision.FP32, ["CPUExecutionProvider"])
    ['CPUExecutionProvider']
    >>> provider_chain("cuda", 1, Precision.FP32, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    [('CUDAExecutionProvider', {'device_id': 1}), 'CPUExecutionProvider']
    """
    if kind not in _PROVIDERS:
        raise UserError(f"onnxruntime has no device {kind!r}; use one of: {', '.join(_PROVIDERS)}")
    provider = _PROVIDERS[kind]
    if provider not in available:
        raise BackendUnavailableError(
            f"onnxruntime {provider}", f"this onnxruntime build offers only {', '.join(available)}", INSTALL_HINT
        )
    if precision is not Precision.FP32 and not (provider == "TensorrtExecutionProvider" and precision is Precision.FP16):
        # ORT runs the precision the graph is stored in; only the TensorRT EP can lower it itself.
        raise UserError(
            f"onnxruntime runs the precision stored in the model; convert it to {precision.value} "
            "first (zhisuan quantize) and load it with precision fp32"
            + (" (or use device 'tensorrt' with precision fp16)" if precision is Precision.FP16 else "")
        )
    chain: list[str | tuple[str, dict[str, Any]]] = []
    if provider == "TensorrtExecutionProvider":
        engines = cache_dir if cache_dir is not None else _cache_dir("onnxruntime-trt")
        chain.append((provider, {
            "device_id": index,
            "trt_fp16_enable": precision is Precision.FP16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engines),
        }))
        if "CUDAExecutionProvider" in available:
            chain.append(("CUDAExecutionProvider", {"device_id": index}))
    elif provider == "OpenVINOExecutionProvider":
        chain.append(provider)  # its device_type option names OpenVINO devices, not indices
    elif provider != "CPUExecutionProvider":
        chain.append((provider, {"device_id": index}))
    chain.append("CPUExecutionProvider")
    return chain


def _cache_dir(name: str) -> Path:
    from zhisuan._io import cache_dir

    return cache_dir(name)


def _device_kind(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    try:
        return kind.lower(), int(index) if index else 0
    except ValueError:
        raise UserError(f"bad device {device!r}; expected e.g. 'cpu', 'cuda', 'cuda:1'") from None


class OnnxRuntimeRunner(RunnerBase):
    """A model loaded in an ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, options: RuntimeOptions) -> None:
        import onnxruntime as ort

        own = options.backend_options_as(OrtOptions)
        kind, index = _device_kind(options.device)
        providers = provider_chain(kind, index, options.precision, list(ort.get_available_providers()))
        provider = _PROVIDERS[kind]
        sess_options = ort.SessionOptions()
        if options.intra_op_threads is not None:
            sess_options.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads is not None:
            sess_options.inter_op_num_threads = options.inter_op_threads
        if own.graph_optimization_level is not None:
            sess_options.graph_optimization_level = getattr(
                ort.GraphOptimizationLevel, _ORT_LEVELS[own.graph_optimization_level]
            )
        if own.enable_profiling:
            sess_options.enable_profiling = True
            if own.profile_file_prefix:
                sess_options.profile_file_prefix = str(own.profile_file_prefix)
        if own.optimized_model_path is not None:
            sess_options.optimized_model_filepath = str(own.optimized_model_path)
        session_config = dict(own.session_config)
        for key, value in session_config.items():
            try:
                sess_options.add_session_config_entry(key, value)
            except Exception as exc:  # ORT raises its own Fail type for a malformed entry
                raise UserError(f"onnxruntime refused session config {key}={value}: {exc}") from None
        sess_options.log_severity_level = own.log_severity_level
        source = model if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise UserError(f"model file not found: {model}")
        try:
            self._session = ort.InferenceSession(source, sess_options=sess_options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"onnxruntime could not load {'the model' if isinstance(model, bytes) else model}: {message}") from None
        used = self._session.get_providers()
        self._info = RuntimeInfo(
            runtime=self.name,
            version=ort.__version__,
            device=options.device if used[0] != "CPUExecutionProvider" else "cpu",
            provider=used[0],
            precision="fp16 allowed (TensorRT EP picks per layer)"
            if options.precision is Precision.FP16 else "as stored in the model",
            intra_op_threads=options.intra_op_threads if options.intra_op_threads is not None else _default_threads(),
            inter_op_threads=options.inter_op_threads,
            details={"providers": used, "requested_provider": provider,
                     **({"session_config": session_config} if session_config else {})},
        )
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [spec.name for spec in self._outputs]
        if provider != used[0]:
            raise BackendUnavailableError(
                f"onnxruntime {provider}", f"the session fell back to {used[0]}", INSTALL_HINT
            )

    @property
    def session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (for profiling and advanced use)."""
        return self._session

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        check_feeds(feeds, self._inputs)
        names = list(output_names) if output_names else self._output_names
        try:
            values = self._session.run(names, feeds if isinstance(feeds, dict) else dict(feeds))
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"onnxruntime failed to run the model: {message}") from None
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


def idle_pool_config(threads: int | None) -> dict[str, str]:
    """Session config entries that make ORT's intra-op threads sleep instead of spin while idle,
    when ``threads`` (None: ORT's default, a thread per core) take every CPU the process may use;
    ``{}`` otherwise. Pass as ``load_runtime(..., session_config=...)``.

    Spinning (ORT's default) wins a little in back-to-back runs, but a spinning pool on every core
    starves the other threads of the process — LoadGen's issue/completion threads, a server's HTTP
    loop and batcher — in the gaps between runs (measured on 2 cores: efficientnet-lite0 Server p99
    40-55 ms spinning vs 19-22 ms not; minilm-l6 batch of 8 served in 143 ms vs 81 ms).
    """
    from zhisuan.device.cpu import usable_cpus

    if threads is None or threads >= usable_cpus():
        return {"session.intra_op.allow_spinning": "0"}
    return {}


def _default_threads() -> int | None:
    # ORT's default intra-op pool uses one thread per physical core.
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count()
    except ImportError:
        return os.cpu_count()


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or None) for d in (arg.shape or ()))
    return TensorSpec(arg.name, ONNX_TO_NUMPY.get(arg.type, arg.type), shape)


def _exposing(model: str | Path | bytes | Any, names: Sequence[str]) -> bytes:
    """``model`` serialized with the tensors ``names`` added as graph outputs (type left to ORT)."""
    import onnx

    if isinstance(model, bytes | str | Path):
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise UserError(f"model file not found: {model}")
        try:
            proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
        except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
            raise UserError(f"onnxruntime could not load {'the model' if isinstance(model, bytes) else model}: "
                            f"{exc}") from None
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # the caller's model stays as it was
    present = {value.name for value in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    return proto.SerializeToString()


class _OnnxRuntimeBackend:
    name = "onnxruntime"
    install_hint = INSTALL_HINT
    options_type = OrtOptions

    def status(self) -> BackendStatus:
        ort = import_backend(self.name, "onnxruntime", INSTALL_HINT)
        if isinstance(ort, BackendStatus):
            return ort
        providers = ort.get_available_providers()
        reverse = {v: k for k, v in _PROVIDERS.items()}
        devices = tuple(reverse.get(p, p) for p in providers)
        return BackendStatus(self.name, True, ort.__version__, devices, None, INSTALL_HINT)

    def load(self, model: str | Path | Any, options: RuntimeOptions) -> OnnxRuntimeRunner:
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailableError(self.name, "onnxruntime is not installed", INSTALL_HINT)
        if not isinstance(model, str | Path | bytes) and not hasattr(model, "SerializeToString"):
            raise UserError(f"onnxruntime loads an ONNX file path, bytes or ModelProto, not {type(model).__name__}")
        exposed = options.backend_options_as(OrtOptions).expose_outputs
        if exposed:
            model = _exposing(model, exposed)
        elif hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        return OnnxRuntimeRunner(model, options)


BACKEND = _OnnxRuntimeBackend()
