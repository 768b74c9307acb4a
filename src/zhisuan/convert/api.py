"""``convert``: a PyTorch factory, an ONNX file or a zoo model into ONNX, ORT, OpenVINO IR or TensorRT.

Every conversion is checked numerically against its source on sample inputs (the trace/sample
inputs and inputs with other values, and another batch size with ``dynamic_batch``) and reports
the max absolute and relative error and the cosine similarity. Outputs are made in a staging
directory beside the output and renamed into place only after the check passed (or, with
``allow_mismatch``, after it failed and the result says so).

>>> from zhisuan.convert import convert
>>> result = convert("model.onnx", "model.xml", to="openvino")  # doctest: +SKIP
>>> result.max_abs_error < 1e-4  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhisuan.convert.targets import OrtLevel, parse_ort_level
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

__all__ = ["EXPORTER_CHOICES", "TARGETS", "ConvertResult", "ExporterChoice", "Target", "convert"]


class Target(StrEnum):
    """What :func:`convert` writes."""

    ONNX = "onnx"
    OPENVINO = "openvino"
    ORT = "ort"
    TENSORRT = "tensorrt"


class ExporterChoice(StrEnum):
    """The torch exporter to use: ``auto`` tries dynamo, then legacy."""

    AUTO = "auto"
    DYNAMO = "dynamo"
    LEGACY = "legacy"


TARGETS: tuple[Target, ...] = tuple(Target)
EXPORTER_CHOICES: tuple[ExporterChoice, ...] = tuple(ExporterChoice)
_SUFFIX_TARGET: dict[str, Target] = {
    ".onnx": Target.ONNX, ".xml": Target.OPENVINO, ".ort": Target.ORT, ".engine": Target.TENSORRT,
    ".plan": Target.TENSORRT,
}
_TARGET_SUFFIXES: dict[Target, tuple[str, ...]] = {
    Target.ONNX: (".onnx",), Target.OPENVINO: (".xml",), Target.ORT: (".onnx", ".ort"),
    Target.TENSORRT: (".engine", ".plan"),
}
#: Default for torch sources: the dynamo exporter's own opset (no down-conversion).
TORCH_DEFAULT_OPSET = 18
DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class ConvertResult(Record):
    """What was converted into what, by which exporter, and how closely it reproduces the source.

    Errors are over every output and every checked sample; ``cosine`` is the lowest per output
    and sample. ``status`` is ``ok``, or ``mismatch`` when ``allow_mismatch`` kept a result that
    failed the check (``diagnosis`` says why).
    """

    source: str
    source_kind: Literal["onnx", "zoo", "torch"]
    target: Target
    output_paths: tuple[str, ...]
    exporter: str | None  # "dynamo" / "legacy" for torch sources
    fallback_reason: str | None
    opset: int | None  # of the ONNX graph the target was made from
    max_abs_error: float
    max_rel_error: float
    cosine: float
    checked_samples: int
    tolerance_abs: float
    duration_s: float
    status: Literal["ok", "mismatch"] = "ok"
    diagnosis: str | None = None
    dynamic_batch: bool = False
    checked_batches: tuple[int, ...] = ()
    per_output: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # checked_batches is declared late (it has a default) but is listed beside checked_samples
        fields = super().to_dict()
        ordered = {}
        for key, value in fields.items():
            if key != "checked_batches":
                ordered[key] = value
            if key == "checked_samples":
                ordered["checked_batches"] = fields["checked_batches"]
        return ordered


def convert(
    source: str | Path,
    out: str | Path,
    *,
    to: Target | str | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    exporter: ExporterChoice | str = ExporterChoice.AUTO,
    input_shapes: Sequence[str] = (),
    data: str | Path | None = None,
    rtol: float = DEFAULT_RTOL,
    allow_mismatch: bool = False,
    ort_level: OrtLevel | str = OrtLevel.EXTENDED,
    progress: Progress = no_progress,
) -> ConvertResult:
    """Convert ``source`` (ONNX file, zoo name or ``module:function``) to ``out`` and check it.

    ``to`` defaults from ``out``'s suffix (.onnx, .xml, .ort, .engine/.plan). The check passes when
    the max absolute error is at most ``rtol * max(1, largest |reference value|)``; otherwise a
    :class:`~zhisuan.errors.UserError` says by how much (and why, for torch exports), unless
    ``allow_mismatch`` keeps the result with ``status="mismatch"``.
    """
    from zhisuan.convert import torch_source

    start = time.perf_counter()
    out = Path(out)
    target = _target(to, out)
    if target is Target.TENSORRT:
        from zhisuan.convert.targets import require_tensorrt

        require_tensorrt()  # before any slow export
    ort_level = parse_ort_level(ort_level)
    if exporter not in EXPORTER_CHOICES:
        raise UserError(f"unknown exporter {exporter!r}; choose auto, dynamo or legacy")
    exporter = ExporterChoice(exporter)
    if not rtol > 0:
        raise UserError(f"--tolerance must be positive, got {rtol}")
    text = str(source)
    torch_source.refuse_pickle(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if not Path(text).is_file() and torch_source.is_factory(text):
            if data is not None:
                raise UserError("--data is for ONNX sources; a factory gives its own example inputs")
            built = _from_torch(text, stage, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter,
                                input_shapes=input_shapes, rtol=rtol, allow_mismatch=allow_mismatch,
                                progress=progress)
        else:
            if input_shapes:
                raise UserError("--input-shape is for PyTorch factories; give ONNX inputs with --data")
            if exporter is not ExporterChoice.AUTO:
                raise UserError("--exporter is for PyTorch factories, not ONNX sources")
            built = _from_onnx(text, stage, opset=opset, dynamic_batch=dynamic_batch, data=data, progress=progress)
        return _finish(built, target, out, stage, rtol=rtol, allow_mismatch=allow_mismatch, ort_level=ort_level,
                       dynamic_batch=dynamic_batch, start=start, progress=progress)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Sources: each gives a staged ONNX file, a reference (source outputs) and sample inputs


@dataclass
class _Built:
    source: str
    kind: Literal["onnx", "zoo", "torch"]
    onnx_path: Path
    samples: list[dict[str, np.ndarray]]
    reference: list[dict[str, np.ndarray]]  # the source's outputs on ``samples``
    exporter: str | None = None
    fallback_reason: str | None = None
    diagnosis: str | None = None
    source_names: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _target(to: Target | str | None, out: Path) -> Target:
    suffix = out.suffix.lower()
    if to is None:
        if suffix not in _SUFFIX_TARGET:
            raise UserError(f"cannot tell the target from {out.name!r}; pass --to ({', '.join(TARGETS)})")
        return _SUFFIX_TARGET[suffix]
    if to not in TARGETS:
        raise UserError(f"unknown target {to!r}; choose one of: {', '.join(TARGETS)}")
    target = Target(to)
    if suffix not in _TARGET_SUFFIXES[target]:
        raise UserError(f"--to {target} writes {' or '.join(_TARGET_SUFFIXES[target])} files; {out.name!r} has another suffix")
    return target


def _from_torch(
    spec: str, stage: Path, *, opset: int | None, dynamic_batch: bool, exporter: ExporterChoice,
    input_shapes: Sequence[str], rtol: float, allow_mismatch: bool, progress: Progress,
) -> _Built:
    import torch

    from zhisuan.convert.torch_source import load_factory, other_inputs
    from zhisuan.graph.torch_export import EXPORTERS, ExportError, export_onnx

    progress(f"building the module from {spec}")
    src = load_factory(spec, input_shapes=input_shapes)
    first_batch = int(src.args[0].shape[0]) if src.args and src.args[0].dim() else None
    other_batch = (3 if first_batch != 3 else 1) if dynamic_batch and first_batch is not None else None
    other = other_inputs(src.module, src.args, batch=other_batch)
    check_args = [src.args] + ([other] if other is not None else [])
    notes = [] if other is not None else ["the module refused every other input tried; only the trace inputs were checked"]
    with torch.inference_mode():
        reference = [_torch_outputs(src.module(*a), src.output_names) for a in check_args]
    tol = rtol * max(1.0, *(float(np.abs(v).max()) for r in reference for v in r.values() if v.size))
    axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        axes = {n: {0: "batch"} for n in (*src.input_names, *src.output_names)}
    path = stage / "exported.onnx"
    try:
        report = export_onnx(
            src.module, src.args, path, input_names=src.input_names, output_names=src.output_names,
            dynamic_axes=axes, opset=TORCH_DEFAULT_OPSET if opset is None else opset, check_args=check_args,
            tolerance=tol, exporters=EXPORTERS if exporter is ExporterChoice.AUTO else (exporter.value,),  # type: ignore[arg-type]
            metadata={"zhisuan.source": spec}, accept_mismatch=allow_mismatch, progress=progress,
        )
    except ExportError as exc:
        raise UserError(f"cannot convert {spec}: {exc.diagnosis} ({'; '.join(f'{a.exporter}: {a.reason}' for a in exc.attempts)})") from None
    samples = [{n: t.detach().cpu().numpy() for n, t in zip(src.input_names, a, strict=True)} for a in check_args]
    return _Built(spec, "torch", path, samples, reference, report.exporter, report.fallback_reason,
                  report.diagnosis, set(src.input_names) | set(src.output_names), notes)


def _torch_outputs(result: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    values = result if isinstance(result, tuple | list) else (result,)
    return {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=True)}


def _from_onnx(
    text: str, stage: Path, *, opset: int | None, dynamic_batch: bool, data: str | Path | None, progress: Progress,
) -> _Built:
    from zhisuan.convert.onnx_edit import convert_opset, infer_shapes, make_batch_dynamic, tensor_names
    from zhisuan.graph import load_model, save_model
    from zhisuan.inputs import resolve, sample_inputs
    from zhisuan.runtime.onnx_signature import onnx_signature

    ref = resolve(text, accept=("onnx", "zoo", "package"))
    kind: Literal["onnx", "zoo"] = "zoo" if ref.kind == "zoo" else "onnx"
    path = ref.file()
    model = load_model(path)
    source_names = tensor_names(model)
    specs, _ = onnx_signature(model)
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    first_batch = next(iter(fixed)) if len(fixed) == 1 else 1
    if opset is not None:
        progress(f"converting the graph to opset {opset}")
        model = convert_opset(model, opset)
    if dynamic_batch:
        progress("making axis 0 of every input and output dynamic")
        model = make_batch_dynamic(model)
    else:
        model = infer_shapes(model)
    staged = save_model(model, stage / "converted.onnx")
    if data is not None:
        samples = sample_inputs(path, data=data)
    else:
        samples = sample_inputs(path, random=1, batch=first_batch, seed=0)
        other = 3 if first_batch != 3 else 1
        samples += sample_inputs(staged if dynamic_batch else path, random=1, seed=1,
                                 batch=other if dynamic_batch else first_batch)
    progress(f"running the source on {len(samples)} sample(s) with ONNX Runtime")
    reference = [_onnx_reference(path, s, fixed_batch=next(iter(fixed)) if len(fixed) == 1 else None) for s in samples]
    return _Built(text, kind, staged, samples, reference, source_names=source_names)


def _onnx_reference(path: Path, feeds: Mapping[str, np.ndarray], *, fixed_batch: int | None) -> dict[str, np.ndarray]:
    """The source's outputs; at another batch size than its fixed one, batch-sized slices stacked."""
    from zhisuan.runtime import load_runtime

    with load_runtime(path, "onnxruntime") as rt:
        batch = next(iter(feeds.values())).shape[0] if feeds else None
        if fixed_batch is None or batch == fixed_batch:
            return rt.run(feeds)
        if batch is None or batch % fixed_batch:
            raise UserError(f"the source has batch {fixed_batch}; cannot check a result at batch {batch}")
        parts = [rt.run({k: v[i:i + fixed_batch] for k, v in feeds.items()}) for i in range(0, batch, fixed_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------------------------------------
# Targets, check, and the move into place


def _finish(
    built: _Built, target: Target, out: Path, stage: Path, *, rtol: float, allow_mismatch: bool,
    ort_level: OrtLevel, dynamic_batch: bool, start: float, progress: Progress,
) -> ConvertResult:
    from zhisuan.convert import targets
    from zhisuan.convert.onnx_edit import opset_of, tensor_names
    from zhisuan.graph import NameMap, load_model, save_model, write_name_map

    notes = list(built.notes)
    model = load_model(built.onnx_path)
    opset = opset_of(model)
    if target is Target.ONNX:
        staged = [built.onnx_path]
    elif target is Target.ORT:
        progress(f"optimizing with ONNX Runtime (level {ort_level})")
        staged = [targets.write_ort(built.onnx_path, stage, "optimized" + out.suffix, level=ort_level)]
        notes.append(f"ONNX Runtime offline optimization level: {ort_level} (CPU execution provider)")
    elif target is Target.OPENVINO:
        progress("converting to OpenVINO IR (float32 weights kept: compress_to_fp16=False)")
        staged = list(targets.write_openvino(built.onnx_path, stage, "model.xml"))
        notes.append("OpenVINO IR saved with compress_to_fp16=False; checked with INFERENCE_PRECISION_HINT=f32")
    else:
        progress("building a TensorRT engine")
        staged = [targets.write_tensorrt(built.onnx_path, stage, "model" + out.suffix)]
    if staged[0].suffix == ".onnx" and built.kind != "torch":
        # Names are kept by every ONNX step here, so the map is the identity on the names that survive.
        # A PyTorch source has no tensor graph to map from: no map is written (a map of the graph's
        # inputs and outputs alone would make later steps' composed maps just as empty).
        result_model = load_model(staged[0])
        write_name_map(result_model, NameMap.identity(sorted(built.source_names & tensor_names(result_model))))
        save_model(result_model, staged[0])
    progress(f"comparing the {target} result with the source on {len(built.samples)} sample(s)")
    stats = _check(staged[0], target, built)
    scale = max(1.0, *(float(np.abs(v).max()) for r in built.reference for v in r.values() if v.size))
    tol = rtol * scale
    status: Literal["ok", "mismatch"] = "ok"
    diagnosis = built.diagnosis
    if built.diagnosis or not stats["max_abs_error"] <= tol:
        status = "mismatch"
        diagnosis = diagnosis or (
            f"the {target} result differs from the source by {stats['max_abs_error']:.3g} "
            f"(tolerance {tol:.3g} = {rtol:g} x max(1, largest |output| {scale:.3g}))"
        )
        if not allow_mismatch:
            raise UserError(f"conversion check failed: {diagnosis}; nothing was written (--allow-mismatch keeps it)")
    finals = _move_into_place(staged, out)
    batches = tuple(sorted({int(next(iter(s.values())).shape[0]) for s in built.samples if s and next(iter(s.values())).ndim}))
    return ConvertResult(
        source=built.source, source_kind=built.kind, target=target, output_paths=tuple(str(p) for p in finals),
        exporter=built.exporter, fallback_reason=built.fallback_reason, opset=opset,
        max_abs_error=stats["max_abs_error"], max_rel_error=stats["max_rel_error"], cosine=stats["cosine"],
        checked_samples=len(built.samples), tolerance_abs=tol, duration_s=round(time.perf_counter() - start, 3),
        status=status, diagnosis=diagnosis, dynamic_batch=dynamic_batch, checked_batches=batches,
        per_output=stats["per_output"], notes=tuple(notes),
    )


def _check(path: Path, target: Target, built: _Built) -> dict[str, Any]:
    from zhisuan.compare.metrics import agreement
    from zhisuan.runtime import load_runtime

    runtime = {"onnx": "onnxruntime", "ort": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}[target]
    device = "cuda" if target is Target.TENSORRT else "cpu"
    per_output: dict[str, dict[str, float]] = {}
    with load_runtime(path, runtime, device=device, precision="fp32") as rt:
        for feeds, want in zip(built.samples, built.reference, strict=True):
            got = rt.run(feeds)
            # By name; a runtime that renamed outputs (IR from elsewhere) is matched by position.
            pairs = ([(n, got[n]) for n in want] if set(want) <= set(got)
                     else list(zip(want, got.values(), strict=True)))
            for name, value in pairs:
                if value.shape != want[name].shape:
                    raise UserError(
                        f"the {target} result gives {name!r} shape {list(value.shape)}, the source "
                        f"{list(want[name].shape)}: a batch size or shape is fixed inside the graph"
                    )
                a = agreement(want[name], value)
                cur = per_output.setdefault(name, {"max_abs_error": 0.0, "max_rel_error": 0.0, "cosine": 1.0})
                cur["max_abs_error"] = max(cur["max_abs_error"], a.max_abs_error)
                cur["max_rel_error"] = max(cur["max_rel_error"], a.max_rel_error)
                cur["cosine"] = min(cur["cosine"], a.cosine)
    return {
        "max_abs_error": max(v["max_abs_error"] for v in per_output.values()),
        "max_rel_error": max(v["max_rel_error"] for v in per_output.values()),
        "cosine": min(v["cosine"] for v in per_output.values()),
        "per_output": per_output,
    }


def _move_into_place(staged: Sequence[Path], out: Path) -> list[Path]:
    """Rename the staged files to ``out`` (and ``out``'s .bin for IR); the first file last."""
    finals = [out] + [out.with_suffix(p.suffix) for p in staged[1:]]
    for src, dst in reversed(list(zip(staged, finals, strict=True))):
        src.chmod(0o644)
        os.replace(src, dst)
    return finals
