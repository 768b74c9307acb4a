"""What the user asks for: the precision mode, calibration, the metric and its budget.

Choices are validated here, before any model is touched, so a bad combination is one clear
:class:`~zhisuan.errors.UserError` (e.g. ``Distribution`` calibration, which ONNX Runtime
accepts for INT8 without a word although it is meant for FP8: cosine 0.77 on a small CNN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from zhisuan.errors import UserError
from zhisuan.results import Record


class Mode(StrEnum):
    AUTO = "auto"  # the fastest of static INT8, dynamic INT8 and float that meets the metric budget
    INT8 = "int8"  # static: calibrated activations, QDQ format
    INT8_DYNAMIC = "int8-dynamic"  # weights int8, activations quantized at run time (MatMul/Gemm)
    FP16 = "fp16"
    BF16 = "bf16"


class Method(StrEnum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


#: Calibration methods that exist in ONNX Runtime but are meant for other number formats.
REFUSED_METHODS = {
    "distribution": "Distribution calibration is meant for FP8 (float8e4m3fn) quantization; "
    "ONNX Runtime accepts it for INT8 without a warning and the result is poor. "
    "Use minmax, percentile or entropy",
}

#: Layers of INT8 static mode: the compute operators. Chain operators between them (Relu/Clip, Add,
#: pooling, Pad, ...) are quantized too, but only inside integer islands, decided per node from the
#: graph (:mod:`zhisuan.quantize.policy`); Softmax, LayerNormalization and the ops around them stay float.
DEFAULT_STATIC_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")
DEFAULT_DYNAMIC_OPS = ("MatMul", "Gemm")

#: Backends the quantized model is scored, timed and chosen on. The model is QDQ either way:
#: OpenVINO reads QuantizeLinear/DequantizeLinear as FakeQuantize and runs its own int8 kernels.
Backend = Literal["onnxruntime", "openvino"]
BACKENDS: tuple[Backend, ...] = ("onnxruntime", "openvino")


class MetricKind(StrEnum):
    COSINE = "cosine"  # mean cosine of every output with the float model's
    TOP1 = "top1"  # argmax agreement over the last axis
    ZOO = "zoo"  # a zoo entry's task metric on its evaluation set


@dataclass(frozen=True)
class Metric:
    """What a candidate is scored by, parsed once from ``cosine``, ``top1`` or ``zoo:NAME``.

    >>> Metric.parse("zoo:ppocr-cls").zoo_name, str(Metric.parse("top1"))
    ('ppocr-cls', 'top1')
    """

    kind: MetricKind
    zoo_name: str | None = None  # set exactly when kind is ZOO

    @classmethod
    def parse(cls, text: str | Metric) -> Metric:
        if isinstance(text, Metric):
            return text
        if text.startswith("zoo:") and len(text) > 4:
            return cls(MetricKind.ZOO, text[4:])
        if text in (MetricKind.COSINE, MetricKind.TOP1):
            return cls(MetricKind(text))
        raise UserError(f"unknown metric {text!r}; use cosine, top1 or zoo:NAME")

    def __str__(self) -> str:
        return f"zoo:{self.zoo_name}" if self.kind is MetricKind.ZOO else self.kind.value

    @property
    def compares_outputs(self) -> bool:
        """Scored against the float model's outputs on the metric inputs (not a zoo task metric)."""
        return self.kind is not MetricKind.ZOO

    @property
    def default_budget_pct(self) -> float:
        """Tolerated drop (percent of the float value) when ``--mode auto`` is given no ``--max-drop``:
        1 % of a task metric or of top-1 agreement, 2 % of the output cosine (cosine 0.98 of the float
        model's outputs, which int8 CNNs reach with unchanged top-1/top-5, see docs/quantize.md)."""
        return 2.0 if self.kind is MetricKind.COSINE else 1.0


@dataclass(frozen=True)
class QuantizeConfig(Record):
    """Options of :func:`zhisuan.quantize.quantize_model`.

    ``mode``: ``auto`` (default: the fastest of static INT8, dynamic INT8 and the float model that
    meets the budget, see :func:`zhisuan.quantize.policy.choose`), ``int8``, ``int8-dynamic``,
    ``fp16``, ``bf16``. ``metric`` (a :class:`Metric`, given as its text): ``cosine`` (mean cosine
    of every output with the float model's), ``top1`` (argmax agreement over the last axis, per
    position for sequences) or ``zoo:NAME`` (the zoo entry's task metric). ``max_drop_pct``: tolerated drop of that metric, relative to the float
    model, in percent; with it the budgeted search runs (``auto`` has a default budget, see
    :attr:`budget_pct`). ``per_channel`` None: per channel. ``op_types``: quantize exactly the nodes of
    these types instead of the integer-island policy. ``backend``: where candidates are scored and
    timed (``onnxruntime`` or ``openvino``; the file is QDQ either way).
    """

    mode: Mode = Mode.AUTO
    method: Method = Method.MINMAX
    per_channel: bool | None = None
    metric: Metric = Metric(MetricKind.COSINE)  # or its text: "top1", "zoo:NAME"
    max_drop_pct: float | None = None
    time_budget_s: float = 600.0
    sensitivity: bool = False
    op_types: tuple[str, ...] | None = None
    nodes_to_exclude: tuple[str, ...] = ()
    percentile: float = 99.999
    backend: Backend = "onnxruntime"
    intra_op_threads: int = 2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: 7-bit weights; None: on for ONNX Runtime on x86 CPUs without VNNI (see :attr:`weights_7bit`).
    reduce_range: bool | None = None
    #: Static INT8 only: keep the QuantizeLinear/DequantizeLinear pair ORT's quantizer puts on graph
    #: outputs. Off by default: it clips every output to its calibration range (a Gemm head's worst
    #: error on held-out rows x2.6 that of the float output, tests/quantize/test_outputs_and_exclusions.py),
    #: and the outputs are float anyway.
    quantize_outputs: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise UserError(f"unknown mode {self.mode!r}; choose one of: {', '.join(m.value for m in Mode)}") from None
        method = str(self.method).lower()
        if method in REFUSED_METHODS:
            raise UserError(REFUSED_METHODS[method])
        try:
            object.__setattr__(self, "method", Method(method))
        except ValueError:
            raise UserError(
                f"unknown calibration method {self.method!r}; choose one of: {', '.join(m.value for m in Method)}"
            ) from None
        object.__setattr__(self, "metric", Metric.parse(self.metric))
        if self.max_drop_pct is not None and not 0 <= self.max_drop_pct <= 100:
            raise UserError(f"--max-drop must be a percentage in 0..100, got {self.max_drop_pct}")
        if self.time_budget_s < 0:
            raise UserError(f"--time-budget must be >= 0 seconds, got {self.time_budget_s}")
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.intra_op_threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.intra_op_threads}")
        if not 90.0 < self.percentile < 100.0:
            raise UserError(f"percentile must be in (90, 100), got {self.percentile}")
        if self.mode in (Mode.FP16, Mode.BF16) and (self.max_drop_pct is not None or self.sensitivity):
            raise UserError(f"--max-drop and sensitivity analysis apply to int8 modes, not {self.mode.value}")

    @property
    def static(self) -> bool:
        """Static INT8 is built (alone, or as the first candidate of ``auto``)."""
        return self.mode in (Mode.INT8, Mode.AUTO)

    @property
    def int8(self) -> bool:
        return self.mode in (Mode.INT8, Mode.INT8_DYNAMIC, Mode.AUTO)

    @property
    def budget_pct(self) -> float | None:
        """The metric budget: ``max_drop_pct``, or in ``auto`` mode the metric's default."""
        if self.max_drop_pct is not None or self.mode is not Mode.AUTO:
            return self.max_drop_pct
        return self.metric.default_budget_pct

    @property
    def weights_7bit(self) -> bool:
        """Whether INT8 weights are quantized to 7 bits (``reduce_range``).

        ONNX Runtime's u8 x s8 kernels saturate 16-bit partial sums on x86 CPUs without VNNI
        (:func:`zhisuan.device.cpu.u8s8_saturates`): measured here on an AVX2-only EPYC, static
        efficientnet-lite0 fell to 0.80 top-5 with 8-bit weights. OpenVINO runs its own kernels.
        """
        if self.reduce_range is not None:
            return self.reduce_range
        if self.backend != "onnxruntime":
            return False
        from zhisuan.device.cpu import host_u8s8_saturates

        return host_u8s8_saturates()

    def quantized_ops(self) -> tuple[str, ...]:
        if self.op_types:
            return tuple(self.op_types)
        return DEFAULT_STATIC_OPS if self.static else DEFAULT_DYNAMIC_OPS

    def to_dict(self) -> dict[str, Any]:
        # the metric as given, the op types and the weight bits as they apply to this run
        return {**super().to_dict(), "metric": str(self.metric), "op_types": list(self.quantized_ops()),
                "reduce_range": self.weights_7bit}
