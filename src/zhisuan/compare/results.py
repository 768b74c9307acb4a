"""What a comparison is asked (:class:`CompareConfig`) and what it finds (:class:`CompareResult`).

Shared by the output comparison in :mod:`.core` and the layer-by-layer one in :mod:`.layerwise`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from zhisuan.compare.metrics import AgreementAccumulator, TensorAgreement, Tolerance

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
class CompareConfig:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """Agreement of one tensor over every input sample, and whether it is within tolerance."""

    metrics: TensorAgreement
    violations: int  # elements outside atol + rtol * |ref|
    within_tolerance: bool

    @classmethod
    def of(cls, acc: AgreementAccumulator) -> Measurement:
        return cls(acc.result(), acc.violations, acc.within())

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics.to_dict(), "violations": self.violations, "within_tolerance": self.within_tolerance}


@dataclass(frozen=True)
class OutputResult:
    name: str  # CAND output
    ref_name: str
    measurement: Measurement

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ref_name": self.ref_name, **self.measurement.to_dict()}


@dataclass(frozen=True)
class LayerResult:
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
        return {
            "node": self.node,
            "op_type": self.op_type,
            "output": self.output,
            "ref_tensor": self.ref_tensor,
            "segment": list(self.segment),
            "diverges": self.diverges,
            "own": self.own.to_dict(),
            "total": self.total.to_dict(),
            "carried": self.carried.to_dict(),
        }


@dataclass(frozen=True)
class Divergence:
    """The earliest CAND layer whose own error is outside tolerance."""

    node: str
    op_type: str
    output: str
    ref_tensor: str
    layer_index: int
    own: Measurement
    total: Measurement

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "output": self.output,
            "ref_tensor": self.ref_tensor,
            "layer_index": self.layer_index,
            "own": self.own.to_dict(),
            "total": self.total.to_dict(),
        }


@dataclass(frozen=True)
class ModelSide:
    model: str
    runtime: Mapping[str, Any]  # RuntimeInfo.to_dict() of what actually ran

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "runtime": dict(self.runtime)}


@dataclass(frozen=True)
class CompareResult:
    ref: ModelSide
    cand: ModelSide
    config: CompareConfig
    samples: int
    outputs: tuple[OutputResult, ...]
    within_tolerance: bool  # every compared output within tolerance (the CI gate)
    layers: tuple[LayerResult, ...] = ()
    first_divergence: Divergence | None = None
    pairing: Mapping[str, Any] | None = None  # layerwise only: method, counts, unpaired tensors
    timings_s: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "within_tolerance": self.within_tolerance,
            "ref": self.ref.to_dict(),
            "cand": self.cand.to_dict(),
            "config": self.config.to_dict(),
            "samples": self.samples,
            "outputs": [o.to_dict() for o in self.outputs],
            "layerwise": self.config.layerwise,
            "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
            "layers": [layer.to_dict() for layer in self.layers],
            "pairing": dict(self.pairing) if self.pairing is not None else None,
            "timings_s": dict(self.timings_s),
        }
