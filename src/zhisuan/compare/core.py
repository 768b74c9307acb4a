"""Compare a reference and a candidate model output by output and, with ``layerwise``, layer by layer.

REF and CAND may be different files (a quantized or optimized copy), different runtimes or
different precisions of one file. Per output: cosine similarity, max absolute / relative error,
mean absolute error, top-1 agreement, and whether it is within tolerance.

Layerwise, each CAND tensor that holds the value of a REF tensor (see :mod:`.pairing`) is
measured three ways, on the same inputs:

* **total** error: CAND's value vs REF's, both models run end to end;
* **own** error: CAND's layer fed with REF's values of its inputs (a "teacher-forced" copy of
  CAND where every paired tensor's consumers read the REF value) vs REF's value;
* **carried** error: how much the layer's output moves when it is fed CAND's inputs instead of
  REF's (teacher-forced vs end to end) — the error it inherits from earlier layers.

Since ``total = own + carried`` (as vectors), a layer with a large total but small own error is
a victim, not a culprit. The **first divergent node** is the earliest CAND layer whose own error
is outside tolerance.

>>> from zhisuan.compare import CompareConfig, compare_models
>>> result = compare_models("model.onnx", "model-int8.onnx", CompareConfig(layerwise=True))  # doctest: +SKIP
>>> result.within_tolerance, result.first_divergence.node  # doctest: +SKIP
(False, '/encoder/layer.0/attention/self/query/MatMul_quant')
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.compare.metrics import AgreementAccumulator, TensorAgreement, Tolerance
from zhisuan.errors import UserError

__all__ = [
    "CompareConfig",
    "CompareResult",
    "Divergence",
    "LayerResult",
    "Measurement",
    "ModelSide",
    "OutputResult",
    "compare_models",
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


def compare_models(
    ref: str | Path,
    cand: str | Path,
    config: CompareConfig | None = None,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> CompareResult:
    """Run REF and CAND on the same inputs and measure how closely CAND agrees. Never prints.

    ``ref`` and ``cand`` are ONNX files or zoo model names. ``feeds`` overrides the inputs that
    ``config.data`` / ``config.random`` would give. Raises :class:`~zhisuan.errors.UserError`
    for anything the user can fix (missing file, unknown runtime, inputs that do not fit).
    """
    from zhisuan.graph import load_model
    from zhisuan.inputs import resolve_model, sample_inputs

    config = config or CompareConfig()
    _check_config(config)
    started = time.perf_counter()
    ref_path, cand_path = resolve_model(ref), resolve_model(cand)
    ref_model, cand_model = load_model(ref_path), load_model(cand_path)
    if feeds is None:
        feeds = sample_inputs(ref_path, data=config.data, random=config.random, seed=config.seed)
    feeds = [dict(f) for f in feeds]
    if not feeds:
        raise UserError("no inputs to compare on")
    _check_inputs(ref_model, cand_model)
    if config.layerwise:
        from zhisuan.compare.layerwise import run_layerwise

        return run_layerwise(ref_path, cand_path, ref_model, cand_model, feeds, config, started)

    ref_rt = load_side(ref_path, config, "ref")
    cand_rt = load_side(cand_path, config, "cand")
    output_pairs = pair_outputs(ref_model, cand_model)
    accs = {c: AgreementAccumulator(config.tolerance) for c in output_pairs}
    run_started = time.perf_counter()
    with ref_rt, cand_rt:
        for feed in feeds:
            want = ref_rt.run(feed, list(output_pairs.values()))
            got = cand_rt.run(cast_feeds(feed, cand_rt.inputs()), list(output_pairs))
            for c, r in output_pairs.items():
                add_checked(accs[c], want[r], got[c], c)
        outputs = tuple(OutputResult(c, r, Measurement.of(accs[c])) for c, r in output_pairs.items())
        return CompareResult(
            ref=ModelSide(str(ref_path), ref_rt.info.to_dict()),
            cand=ModelSide(str(cand_path), cand_rt.info.to_dict()),
            config=config,
            samples=len(feeds),
            outputs=outputs,
            within_tolerance=all(o.measurement.within_tolerance for o in outputs),
            timings_s={"run": time.perf_counter() - run_started, "total": time.perf_counter() - started},
        )


def _check_config(config: CompareConfig) -> None:
    if not (config.atol >= 0 and config.rtol >= 0):
        raise UserError(f"--atol and --rtol must be >= 0, got {config.atol} and {config.rtol}")
    if not -1.0 <= config.min_cosine <= 1.0:
        raise UserError(f"--min-cosine must be between -1 and 1, got {config.min_cosine}")


def _check_inputs(ref_model: Any, cand_model: Any) -> None:
    def names(model: Any) -> list[str]:
        inits = {i.name for i in model.graph.initializer}
        return [v.name for v in model.graph.input if v.name not in inits]

    ref_in, cand_in = names(ref_model), names(cand_model)
    if set(ref_in) != set(cand_in):
        raise UserError(f"REF and CAND take different inputs: REF {ref_in}, CAND {cand_in}")


def pair_outputs(ref_model: Any, cand_model: Any) -> dict[str, str]:
    """CAND output -> REF output, by name (graph outputs are the models' shared interface)."""
    ref_out = [v.name for v in ref_model.graph.output]
    cand_out = [v.name for v in cand_model.graph.output]
    common = {name: name for name in cand_out if name in ref_out}
    if not common:
        raise UserError(f"REF and CAND share no output names: REF {ref_out}, CAND {cand_out}")
    return common


def load_side(source: Path | bytes, config: CompareConfig, side: str) -> Any:
    """Load an ONNX file or serialized model on the runtime, device and precision of ``side``."""
    from zhisuan.runtime import load_runtime

    return load_runtime(
        source,
        getattr(config, f"{side}_runtime"),
        device=getattr(config, f"{side}_device"),
        precision=getattr(config, f"{side}_precision"),
        intra_op_threads=config.threads,
    )


def cast_feeds(feed: Mapping[str, np.ndarray], specs: Sequence[Any]) -> dict[str, np.ndarray]:
    """``feed`` with floating inputs cast to the dtype a model takes (e.g. an fp16 candidate)."""
    out = dict(feed)
    for spec in specs:
        value = out.get(spec.name)
        if value is None:
            continue
        try:
            want = np.dtype(spec.dtype)
        except TypeError:
            continue
        if value.dtype != want and np.issubdtype(value.dtype, np.floating) and np.issubdtype(want, np.floating):
            out[spec.name] = value.astype(want)
    return out


def add_checked(acc: AgreementAccumulator, ref: np.ndarray, cand: np.ndarray, name: str) -> None:
    try:
        acc.add(ref, cand)
    except ValueError as exc:
        raise UserError(f"cannot compare {name!r}: {exc}") from None
