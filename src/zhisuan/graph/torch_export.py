"""Export a PyTorch module to one checked ONNX file: dynamo exporter first, legacy as the fallback.

Every export is validated the same way whichever exporter made it: the graph has exactly the
requested input and output names and dynamic axes, ``onnx.checker`` passes after shape inference,
and ONNX Runtime reproduces the module's outputs on sample inputs (the largest absolute error is
measured and recorded in the file's metadata). A failed exporter is recorded with its reason and a
*kind* (why it failed), and the next one is tried. When none gives a valid file,
:func:`diagnose` turns the attempts into one sentence the user can act on, e.g. "the model's
control flow depends on input values (`if x.sum() > 0` at model.py:6); the legacy exporter baked
in one branch: outputs differ by 3.2 on other inputs; rewrite with torch.where / torch.cond".

Why the checks matter (see FIELD-NOTES): the dynamo exporter fails loudly on data-dependent
branches, while the legacy TorchScript tracer silently bakes one branch in, and folds a model whose
shapes come from ``.item()`` into a graph with no inputs at all. Checking the input count and
comparing on inputs *other than the trace inputs* is what catches both.

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
import importlib.util
import io
import logging
import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zhisuan._io import atomic_write_bytes
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "ExportAttempt",
    "ExportError",
    "ExportReport",
    "Exporter",
    "FailureKind",
    "diagnose",
    "export_onnx",
]

DEFAULT_OPSET = 17
Exporter = Literal["dynamo", "legacy"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "legacy")

#: Why an exporter's file was refused. ``data_dependent``: torch.export met control flow or a
#: shape that depends on tensor values; ``unsupported``: an operator or construct the exporter
#: cannot handle; ``folded_inputs``: the graph lost inputs (baked into constants); ``shape``: an
#: output has another shape than torch's on some sample (a size baked in); ``values``: outputs
#: differ beyond the tolerance; ``opset``: it could not write the asked opset; ``skipped``: not run.
FailureKind = Literal[
    "data_dependent", "unsupported", "folded_inputs", "shape", "values", "opset", "skipped", "other"
]

@dataclass(frozen=True)
class ExportAttempt(Record):
    """One exporter tried: whether its file passed every check, and if not, why."""

    exporter: Exporter
    ok: bool
    reason: str | None
    duration_s: float
    kind: FailureKind | None = None
    code: str | None = None  # the user's source line that made it fail, e.g. "model.py:6: if x.sum() > 0:"
    max_abs_error: float | None = None  # for a ``values`` failure


@dataclass(frozen=True)
class ExportReport(Record):
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
    #: Set when the file was kept although it failed the numeric check (``accept_mismatch``).
    diagnosis: str | None = None

    @property
    def fallback_reason(self) -> str | None:
        """Why the exporters before the one used were rejected (``None`` if the first one worked)."""
        failed = [f"{a.exporter}: {a.reason}" for a in self.attempts if not a.ok and a.exporter != self.exporter]
        return "; ".join(failed) or None

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        attempts, diagnosis = fields.pop("attempts"), fields.pop("diagnosis")
        return {**fields, "fallback_reason": self.fallback_reason, "diagnosis": diagnosis, "attempts": attempts}


class ExportError(UserError):
    """No exporter gave a valid file. ``diagnosis`` says why in words; ``attempts`` has the detail."""

    def __init__(self, message: str, *, diagnosis: str, attempts: Sequence[ExportAttempt]) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
        self.attempts = tuple(attempts)


class _Rejected(Exception):
    """An exporter ran but its file failed a check; the message says which, ``kind`` why."""

    def __init__(self, message: str, kind: FailureKind, max_abs_error: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.max_abs_error = max_abs_error


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
    accept_mismatch: bool = False,
    skipped: Sequence[ExportAttempt] = (),
    progress: Progress = no_progress,
) -> ExportReport:
    """Export ``module(*args)`` to ``out`` as one self-contained ONNX file and verify it.

    ``check_args`` are the sample inputs compared against torch (default: ``args``); give some with
    other values, and other sizes along the dynamic axes, so that a baked-in branch or shape is
    caught. ``tolerance`` is the largest absolute error accepted on any output. With
    ``accept_mismatch`` a file that only failed the numeric check is still written (the last such
    one), and :attr:`ExportReport.diagnosis` says what is wrong with it. ``skipped`` are exporters
    the caller chose not to run, recorded first among the attempts. Raises :class:`ExportError`
    when no exporter gives a file.
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
    bad = [e for e in exporters if e not in EXPORTERS]
    if bad:
        raise UserError(f"unknown exporter {bad[0]!r}; choose from {', '.join(EXPORTERS)}")
    check_args = list(check_args) if check_args else [args]
    module = module.eval()
    with torch.inference_mode():
        expected = [_as_numpy_outputs(module(*a), output_names) for a in check_args]

    attempts: list[ExportAttempt] = list(skipped)
    kept: tuple[onnx.ModelProto, dict[str, float], Exporter, float] | None = None
    for exporter in exporters:
        progress(f"exporting to ONNX (opset {opset}) with the {exporter} exporter")
        start = time.perf_counter()
        try:
            model = _run_exporter(exporter, module, args, input_names, output_names, dynamic_axes, opset)
            if _opset_of(model) != opset:
                # The dynamo exporter writes opset >= 18 and keeps it when down-conversion fails.
                raise _Rejected(f"it wrote opset {_opset_of(model)}, not the requested {opset}", "opset")
            progress(f"{exporter}: checking the graph and inferring shapes")
            model = _check_graph(model, input_names, output_names, dynamic_axes)
            progress(f"{exporter}: comparing ONNX Runtime with torch on {len(check_args)} sample(s)")
            errors = _numeric_check(model, check_args, expected, input_names, output_names)
            worst = max(errors.values())
            if not worst <= tolerance:  # also catches NaN
                if accept_mismatch:
                    kept = (model, errors, exporter, start)
                raise _Rejected(
                    f"max abs error {worst:.3g} vs torch exceeds the tolerance {tolerance:.3g}", "values", worst
                )
        except Exception as exc:  # every exporter failure, whatever its type, is a reason to fall back
            attempt = _failed_attempt(exporter, exc, time.perf_counter() - start)
            attempts.append(attempt)
            progress(f"{exporter} exporter rejected: {attempt.reason}")
            continue
        export_s = round(time.perf_counter() - start, 3)
        attempts.append(ExportAttempt(exporter, True, None, export_s))
        return _write(model, out, exporter, input_names, output_names, errors, len(check_args), export_s,
                      attempts, metadata, None, progress)
    diagnosis = diagnose(attempts)
    if kept is not None:
        model, errors, exporter, start = kept
        export_s = round(time.perf_counter() - start, 3)
        return _write(model, out, exporter, input_names, output_names, errors, len(check_args), export_s,
                      attempts, metadata, diagnosis, progress)
    detail = "; ".join(f"{a.exporter}: {a.reason}" for a in attempts)
    raise ExportError(
        f"could not export {type(module).__name__} to ONNX: {diagnosis} ({detail})",
        diagnosis=diagnosis, attempts=attempts,
    )


def _write(
    model: onnx.ModelProto, out: str | Path, exporter: Exporter, input_names: tuple[str, ...],
    output_names: tuple[str, ...], errors: Mapping[str, float], checked: int, export_s: float,
    attempts: Sequence[ExportAttempt], metadata: Mapping[str, str] | None, diagnosis: str | None,
    progress: Progress,
) -> ExportReport:
    worst = max(errors.values())
    report = ExportReport(
        path=Path(out), exporter=exporter, opset=_opset_of(model), input_names=input_names,
        output_names=output_names, max_abs_error=worst, max_abs_error_per_output=dict(errors),
        checked_samples=checked, export_s=export_s, attempts=tuple(attempts), diagnosis=diagnosis,
    )
    _set_metadata(model, {**(metadata or {}), **_provenance(report)})
    atomic_write_bytes(out, model.SerializeToString())
    progress(f"exported with {exporter} in {export_s:.1f} s; max abs error vs torch {worst:.2e}")
    return report


# ---------------------------------------------------------------------------------------------
# Diagnosis


def diagnose(attempts: Sequence[ExportAttempt]) -> str:
    """One sentence saying why the exporters failed and what to change in the model.

    >>> diagnose([ExportAttempt("legacy", False, "graph inputs are []", 0.1, kind="folded_inputs")])[:46]
    'the legacy exporter folded the inputs into con'
    """
    by_kind = {a.kind: a for a in attempts if not a.ok}
    dynamo, legacy = (next((a for a in attempts if a.exporter == e and not a.ok), None) for e in EXPORTERS)
    where = next((f" (`{a.code}`)" for a in attempts if a.code), "")
    if "folded_inputs" in by_kind:
        a = by_kind["folded_inputs"]
        fix = ("dynamo cannot capture it either because control flow depends on that number; keep it a "
               "tensor (torch.where, masks) or bound it with torch._check"
               if dynamo is not None and dynamo.kind == "data_dependent"
               else "export with the dynamo exporter, which keeps such values symbolic, or keep them tensors")
        return (
            f"the {a.exporter} exporter folded the inputs into constants ({a.reason}): the model turns a tensor "
            f"into a Python number (`.item()`, `int(t)`, `float(t)`) that sets a shape or value{where}; {fix}"
        )
    if legacy is not None and legacy.kind in ("values", "shape"):
        differ = (f"outputs differ by {legacy.max_abs_error:.3g} on other inputs" if legacy.kind == "values"
                  else f"on other inputs {legacy.reason}")
        if dynamo is not None and dynamo.kind == "data_dependent":
            return (
                f"the model's control flow depends on input values{where}; the legacy exporter baked in one "
                f"branch: {differ}; rewrite with torch.where / torch.cond"
            )
        if legacy.kind == "shape":
            return (
                f"the legacy exporter baked a size computed in Python into the graph: {differ}; use tensor "
                "shapes directly (x.shape[0], reshape(-1, ...)) instead of int(...) or .item()"
            )
        return (
            f"the legacy exporter's graph is right only for the trace inputs: {differ}; the model probably "
            "branches in Python on tensor values or sizes; rewrite with torch.where / torch.cond"
        )
    if dynamo is not None and dynamo.kind == "data_dependent":
        return (
            f"the model's control flow or a shape depends on input values{where}, which torch.export cannot "
            "capture; rewrite with torch.where / torch.cond, or mark sizes with torch._check"
        )
    if dynamo is not None and dynamo.kind == "unsupported":
        return f"torch.export does not support a construct in the model{where}: {dynamo.reason}"
    last = next((a for a in reversed(attempts) if not a.ok), None)
    return f"every exporter failed; the last one ({last.exporter}) said: {last.reason}" if last else "no exporter ran"


_DATA_DEPENDENT = re.compile(
    r"GuardOnDataDependentSymNode|data-dependent|DataDependentOutput|Dynamic control flow|"
    r"UnsupportedAliasMutation|cond\b.*not supported|could not guard", re.IGNORECASE,
)
_USER_CALL = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s+(\S.*)')


def _failed_attempt(exporter: Exporter, exc: BaseException, seconds: float) -> ExportAttempt:
    reason = _one_line(exc)
    if isinstance(exc, _Rejected):
        return ExportAttempt(exporter, False, reason, round(seconds, 3), exc.kind, None, exc.max_abs_error)
    chain = _chain(exc)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    if _DATA_DEPENDENT.search(text):
        kind: FailureKind = "data_dependent"
        # The root cause's own first line says more than the exporter's wrapper message.
        reason = _one_line(chain[-1])
    elif any(type(e).__name__ in ("Unsupported", "UserError") for e in chain):
        kind, reason = "unsupported", _one_line(chain[-1])
    else:
        kind = "other"
    return ExportAttempt(exporter, False, reason, round(seconds, 3), kind, _user_code(chain))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _user_code(chain: Sequence[BaseException]) -> str | None:
    """``file:line: code`` of the user's line that failed, from torch's message or the traceback."""
    for exc in reversed(chain):
        match = _USER_CALL.search(str(exc))
        if match:
            return f"{Path(match.group(1)).name}:{match.group(2)}: {match.group(4).strip()}"
    torch_dir = _torch_dir()
    for exc in reversed(chain):
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.line and not f.filename.startswith(torch_dir) and "zhisuan" not in f.filename
                  and "site-packages" not in f.filename]
        if frames:
            f = frames[-1]
            return f"{Path(f.filename).name}:{f.lineno}: {f.line.strip()}"
    return None


def _torch_dir() -> str:
    spec = importlib.util.find_spec("torch")
    return str(Path(spec.origin).parent) if spec and spec.origin else "\0"


# ---------------------------------------------------------------------------------------------
# Exporters and checks


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

    common: dict[str, Any] = {
        "input_names": list(input_names),
        "output_names": list(output_names),
        "opset_version": opset,
        "dynamic_axes": dynamic_axes or None,
    }
    if exporter == "dynamo":
        # onnxscript is the dynamo exporter's own optional dependency; name it in the reason.
        if importlib.util.find_spec("onnxscript") is None:
            raise _Rejected("onnxscript is not installed (pip install onnxscript)", "other")
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
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                                                    "torch._export", "onnxscript")]
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
    if len(graph_inputs) < len(input_names):
        raise _Rejected(
            f"the graph has {len(graph_inputs)} of the module's {len(input_names)} inputs "
            f"({list(graph_inputs)} instead of {list(input_names)})", "folded_inputs",
        )
    if graph_inputs != input_names:
        raise _Rejected(f"graph inputs are {list(graph_inputs)}, expected {list(input_names)}", "other")
    if graph_outputs != output_names:
        raise _Rejected(f"graph outputs are {list(graph_outputs)}, expected {list(output_names)}", "other")
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx.checker.check_model(model, full_check=True)
    values = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for name, axes in dynamic_axes.items():
        dims = values[name].type.tensor_type.shape.dim
        for axis in axes:
            if axis >= len(dims) or dims[axis].HasField("dim_value"):
                raise _Rejected(f"axis {axis} of {name!r} was exported as a fixed size, not dynamic", "shape")
    return model


def _numeric_check(
    model: onnx.ModelProto,
    check_args: Sequence[tuple[torch.Tensor, ...]],
    expected: Sequence[dict[str, np.ndarray]],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
) -> dict[str, float]:
    import numpy as np

    from zhisuan.runtime import load_runtime

    runtime = load_runtime(model, "onnxruntime")
    worst = dict.fromkeys(output_names, 0.0)
    for sample, want in zip(check_args, expected, strict=True):
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, sample, strict=True)}
        try:
            got = runtime.run(feeds, list(output_names))
        except UserError as exc:  # e.g. a Reshape to a baked-in size fails at another batch size
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise _Rejected(f"ONNX Runtime failed on inputs of shape {shapes}: {_one_line(exc)}", "shape") from None
        for name in output_names:
            if got[name].shape != want[name].shape:
                raise _Rejected(
                    f"output {name!r} has shape {got[name].shape}, torch gives {want[name].shape}", "shape"
                )
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
    if report.diagnosis:
        items["zhisuan.export_diagnosis"] = report.diagnosis
    return items


def _set_metadata(model: onnx.ModelProto, items: Mapping[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in items.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, str(value)


def _one_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    first = text.splitlines()[0] if text else ""
    first = first[:300] + ("…" if len(first) > 300 else "")
    if isinstance(exc, _Rejected):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
