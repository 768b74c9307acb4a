"""Export a PyTorch module to one checked ONNX file: dynamo exporter first, legacy as the fallback.

Every export is validated the same way whichever exporter made it: the graph has exactly the
requested input and output names and dynamic axes, ``onnx.checker`` passes after shape inference,
and ONNX Runtime reproduces the module's outputs on sample inputs (the largest absolute error is
measured and recorded in the file's metadata). A failed exporter is recorded with its reason, and
the next one is tried; when none gives a valid file a :class:`~zhisuan.errors.UserError` says why.

>>> import torch
>>> report = export_onnx(  # doctest: +SKIP
...     torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),), "linear.onnx",
...     input_names=("x",), output_names=("y",), dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
... )
>>> report.exporter, report.max_abs_error  # doctest: +SKIP
('dynamo', 0.0)
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zhisuan._io import atomic_write_bytes
from zhisuan.errors import UserError
from zhisuan.zoo.base import Progress, _no_progress

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

__all__ = ["DEFAULT_OPSET", "ExportAttempt", "ExportReport", "Exporter", "export_onnx"]

DEFAULT_OPSET = 17
Exporter = Literal["dynamo", "legacy"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "legacy")


@dataclass(frozen=True)
class ExportAttempt:
    """One exporter tried: whether its file passed every check, and if not, why."""

    exporter: Exporter
    ok: bool
    reason: str | None
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"exporter": self.exporter, "ok": self.ok, "reason": self.reason, "duration_s": self.duration_s}


@dataclass(frozen=True)
class ExportReport:
    """What was exported, by which exporter, and how closely ONNX Runtime reproduces torch."""

    path: Path
    exporter: Exporter
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    max_abs_error: float  # over every output and every checked sample
    max_abs_error_per_output: Mapping[str, float]
    checked_samples: int
    export_s: float
    attempts: tuple[ExportAttempt, ...] = field(default_factory=tuple)

    @property
    def fallback_reason(self) -> str | None:
        """Why the exporters before the one used were rejected (``None`` if the first one worked)."""
        failed = [f"{a.exporter}: {a.reason}" for a in self.attempts if not a.ok]
        return "; ".join(failed) or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "opset": self.opset,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "max_abs_error": self.max_abs_error,
            "max_abs_error_per_output": dict(self.max_abs_error_per_output),
            "checked_samples": self.checked_samples,
            "export_s": self.export_s,
            "fallback_reason": self.fallback_reason,
            "attempts": [a.to_dict() for a in self.attempts],
        }


class _Rejected(Exception):
    """An exporter ran but its file failed a check; the message says which."""


def export_onnx(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    out: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
    check_args: Sequence[tuple[torch.Tensor, ...]] | None = None,
    tolerance: float = 1e-4,
    exporters: Sequence[Exporter] = EXPORTERS,
    metadata: Mapping[str, str] | None = None,
    progress: Progress = _no_progress,
) -> ExportReport:
    """Export ``module(*args)`` to ``out`` as one self-contained ONNX file and verify it.

    ``check_args`` are the sample inputs compared against torch (default: ``args``); give some with
    other sizes along the dynamic axes so that a silently fixed shape is caught. ``tolerance`` is
    the largest absolute error accepted on any output.
    """
    import torch

    opset = DEFAULT_OPSET if opset is None else int(opset)
    input_names, output_names = tuple(input_names), tuple(output_names)
    dynamic_axes = {k: dict(v) for k, v in (dynamic_axes or {}).items()}
    unknown = set(dynamic_axes) - set(input_names) - set(output_names)
    if unknown:
        raise UserError(f"dynamic_axes names {sorted(unknown)} are neither inputs nor outputs")
    if len(args) != len(input_names):
        raise UserError(f"{len(args)} sample inputs given for {len(input_names)} input names")
    if not exporters:
        raise UserError("no exporter to try")
    check_args = list(check_args) if check_args else [args]
    module = module.eval()
    with torch.inference_mode():
        expected = [_as_numpy_outputs(module(*a), output_names) for a in check_args]

    attempts: list[ExportAttempt] = []
    for exporter in exporters:
        progress(f"exporting to ONNX (opset {opset}) with the {exporter} exporter")
        start = time.perf_counter()
        try:
            model = _run_exporter(exporter, module, args, input_names, output_names, dynamic_axes, opset)
            if _opset_of(model) != opset:
                # The dynamo exporter writes opset >= 18 and keeps it when down-conversion fails.
                raise _Rejected(f"it wrote opset {_opset_of(model)}, not the requested {opset}")
            progress(f"{exporter}: checking the graph and inferring shapes")
            model = _check_graph(model, input_names, output_names, dynamic_axes)
            progress(f"{exporter}: comparing ONNX Runtime with torch on {len(check_args)} sample(s)")
            errors = _numeric_check(model, check_args, expected, input_names, output_names)
        except Exception as exc:  # every exporter failure, whatever its type, is a reason to fall back
            reason = _one_line(exc)
            attempts.append(ExportAttempt(exporter, False, reason, round(time.perf_counter() - start, 3)))
            progress(f"{exporter} exporter rejected: {reason}")
            continue
        worst = max(errors.values())
        if not worst <= tolerance:  # also catches NaN
            reason = f"max abs error {worst:.3g} vs torch exceeds the tolerance {tolerance:.3g}"
            attempts.append(ExportAttempt(exporter, False, reason, round(time.perf_counter() - start, 3)))
            progress(f"{exporter} exporter rejected: {reason}")
            continue
        export_s = round(time.perf_counter() - start, 3)
        attempts.append(ExportAttempt(exporter, True, None, export_s))
        report = ExportReport(
            path=Path(out),
            exporter=exporter,
            opset=_opset_of(model),
            input_names=input_names,
            output_names=output_names,
            max_abs_error=worst,
            max_abs_error_per_output=errors,
            checked_samples=len(check_args),
            export_s=export_s,
            attempts=tuple(attempts),
        )
        _set_metadata(model, {**(metadata or {}), **_provenance(report)})
        atomic_write_bytes(out, model.SerializeToString())
        progress(f"exported with {exporter} in {export_s:.1f} s; max abs error vs torch {worst:.2e}")
        return report
    detail = "; ".join(f"{a.exporter}: {a.reason}" for a in attempts)
    raise UserError(f"could not export {type(module).__name__} to ONNX — {detail}")


def _run_exporter(
    exporter: Exporter,
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> onnx.ModelProto:
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    common: dict[str, Any] = {
        "input_names": list(input_names),
        "output_names": list(output_names),
        "opset_version": opset,
        "dynamic_axes": dynamic_axes or None,
    }
    if exporter == "dynamo":
        # onnxscript is the dynamo exporter's own optional dependency; name it in the reason.
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise _Rejected("onnxscript is not installed (pip install onnxscript)")
        kwargs = {**common, "dynamo": True, "external_data": False}
    else:
        kwargs = {**common, "dynamo": False, "do_constant_folding": True}
    with tempfile.TemporaryDirectory(prefix="zhisuan-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with _quiet():
            torch.onnx.export(module, args, str(path), **kwargs)
        # load_external_data: a large model may still have been split; load it back into one file
        return onnx.load(str(path), load_external_data=True)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the exporters' progress prints, deprecation warnings and log lines."""
    sink = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_graph(
    model: onnx.ModelProto,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
) -> onnx.ModelProto:
    import onnx

    graph_inputs = tuple(i.name for i in model.graph.input)
    graph_outputs = tuple(o.name for o in model.graph.output)
    if graph_inputs != input_names:
        raise _Rejected(f"graph inputs are {list(graph_inputs)}, expected {list(input_names)}")
    if graph_outputs != output_names:
        raise _Rejected(f"graph outputs are {list(graph_outputs)}, expected {list(output_names)}")
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx.checker.check_model(model, full_check=True)
    values = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for name, axes in dynamic_axes.items():
        dims = values[name].type.tensor_type.shape.dim
        for axis in axes:
            if axis >= len(dims) or dims[axis].HasField("dim_value"):
                raise _Rejected(f"axis {axis} of {name!r} was exported as a fixed size, not dynamic")
    return model


def _numeric_check(
    model: onnx.ModelProto,
    check_args: Sequence[tuple[torch.Tensor, ...]],
    expected: Sequence[dict[str, np.ndarray]],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(output_names, 0.0)
    for sample, want in zip(check_args, expected, strict=True):
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, sample, strict=True)}
        got = dict(zip(output_names, session.run(list(output_names), feeds), strict=True))
        for name in output_names:
            if got[name].shape != want[name].shape:
                raise _Rejected(f"output {name!r} has shape {got[name].shape}, torch gives {want[name].shape}")
            diff = np.abs(got[name].astype(np.float64) - want[name].astype(np.float64))
            worst[name] = max(worst[name], float(diff.max()) if diff.size else 0.0)
    return worst


def _as_numpy_outputs(result: Any, output_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    values = (result,) if not isinstance(result, tuple | list) else tuple(result)
    if len(values) != len(output_names):
        raise UserError(f"the module returns {len(values)} outputs for {len(output_names)} output names")
    return {name: v.detach().cpu().numpy() for name, v in zip(output_names, values, strict=True)}


def _opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _provenance(report: ExportReport) -> dict[str, str]:
    import torch

    items = {
        "zhisuan.exporter": report.exporter,
        "zhisuan.torch_version": torch.__version__,
        "zhisuan.max_abs_error_vs_torch": f"{report.max_abs_error:.3e}",
    }
    if report.fallback_reason:
        items["zhisuan.export_fallback_reason"] = report.fallback_reason
    return items


def _set_metadata(model: onnx.ModelProto, items: Mapping[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in items.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    first = first[:300] + ("…" if len(first) > 300 else "")
    if isinstance(exc, _Rejected):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
