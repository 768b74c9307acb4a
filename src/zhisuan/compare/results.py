"""What a comparison is asked (:class:`CompareConfig`) and what it finds (:class:`CompareResult`).

Shared by the output comparison in :mod:`.core` and the layer-by-layer one in :mod:`.layerwise`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zhisuan.compare.metrics import AgreementAccumulator, TensorAgreement, Tolerance
from zhisuan.results import Record

__all__ = [
    "CompareConfig",
    "CompareResult",
    "Divergence",
    "LayerResult",
    "Measurement",
    "ModelSide",
    "OutputResult",
]


@dataclass(frozen=True)
class CompareConfig(Record):
    """What to compare and how strictly. Tolerance: ``|cand - ref| <= atol + rtol * |ref|`` for
    every element, and cosine >= ``min_cosine``."""

    ref_runtime: str = "onnxruntime"
    cand_runtime: str = "onnxruntime"
    ref_precision: str = "fp32"
    cand_precision: str = "fp32"
    ref_device: str = "cpu"
    cand_device: str = "cpu"
    data: str | None = None  # .npz file or directory of them
    random: int | None = None  # number of seeded random input batches (default 1)
    seed: int = 0
    layerwise: bool = False
    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.999
    threads: int | None = None  # intra-op threads for every runtime (None: the runtime's default)

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.atol, self.rtol, self.min_cosine)


@dataclass(frozen=True)
class Measurement(Record):
    """Agreement of one tensor over every input sample, and whether it is within tolerance."""

    metrics: TensorAgreement
    violations: int  # elements outside atol + rtol * |ref|
    within_tolerance: bool

    @classmethod
    def of(cls, acc: AgreementAccumulator) -> Measurement:
        return cls(acc.result(), acc.violations, acc.within())

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        metrics = fields.pop("metrics")
        return {**metrics, **fields}  # the metrics inline, beside the verdict


@dataclass(frozen=True)
class OutputResult(Record):
    name: str  # CAND output
    ref_name: str
    measurement: Measurement

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        measurement = fields.pop("measurement")
        return {**fields, **measurement}


@dataclass(frozen=True)
class LayerResult(Record):
    """One CAND layer: the nodes that compute ``output`` from tensors paired with REF."""

    node: str  # the layer's main CAND node (not its quantize/dequantize plumbing)
    op_type: str
    output: str  # CAND tensor
    ref_tensor: str  # the REF tensor it is paired with
    segment: tuple[str, ...]  # every CAND node of the layer, in graph order
    own: Measurement  # fed REF's inputs
    total: Measurement  # end to end
    carried: TensorAgreement  # teacher-forced vs end-to-end CAND value

    @property
    def diverges(self) -> bool:
        return not self.own.within_tolerance

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        measured = {key: fields.pop(key) for key in ("own", "total", "carried")}
        return {**fields, "diverges": self.diverges, **measured}


@dataclass(frozen=True)
class Divergence(Record):
    """The earliest CAND layer whose own error is outside tolerance."""

    node: str
    op_type: str
    output: str
    ref_tensor: str
    layer_index: int
    own: Measurement
    total: Measurement


@dataclass(frozen=True)
class ModelSide(Record):
    model: str
    runtime: Mapping[str, Any]  # RuntimeInfo.to_dict() of what actually ran


@dataclass(frozen=True)
class CompareResult(Record):
    ref: ModelSide
    cand: ModelSide
    config: CompareConfig
    samples: int
    outputs: tuple[OutputResult, ...]
    within_tolerance: bool  # every compared output within tolerance (the CI gate)
    layers: tuple[LayerResult, ...] = ()
    first_divergence: Divergence | None = None
    pairing: Mapping[str, Any] | None = None  # layerwise only: method, counts, unpaired tensors
    layers_note: str = ""  # layerwise only: how the layer figures were obtained (they are diagnosis)
    timings_s: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # the verdict first; the layer-by-layer part after the outputs
        fields = super().to_dict()
        verdict = fields.pop("within_tolerance")
        layers, first = fields.pop("layers"), fields.pop("first_divergence")
        note = fields.pop("layers_note")
        tail = {key: fields.pop(key) for key in ("pairing", "timings_s")}
        return {"within_tolerance": verdict, **fields, "layerwise": self.config.layerwise,
                "first_divergence": first, "layers_note": note, "layers": layers, **tail}
