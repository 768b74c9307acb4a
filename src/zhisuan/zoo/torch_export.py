"""The zoo's torch -> ONNX export: :mod:`zhisuan.graph.torch_export` with the zoo's exporter choice.

The general exporter (dynamo first, legacy as the fallback, graph and numeric checks, diagnosis)
lives in :mod:`zhisuan.graph.torch_export`, below both the zoo and ``zhisuan convert`` (which
exports a user's PyTorch factory with it); this module keeps the zoo's entry point.

The zoo builds at opset 17 by default. Below opset 18 the dynamo exporter writes opset 18 and
down-converts; for the zoo's real models (EfficientNet-Lite0, MiniLM-L6, torch 2.13) that
down-conversion failed, so the attempt cost 5-7 s per build and was then rejected. The zoo
therefore records the dynamo exporter as skipped below opset 18 and goes straight to the legacy
exporter, whose file is checked the same way (inputs, shapes, numbers on several batch sizes).
At opset 18 or above (``zhisuan zoo export NAME --opset 18``) dynamo is tried first as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zhisuan.graph.torch_export import (
    DEFAULT_OPSET,
    EXPORTERS,
    ExportAttempt,
    Exporter,
    ExportError,
    ExportReport,
)
from zhisuan.graph.torch_export import export_onnx as _export_onnx
from zhisuan.progress import Progress, no_progress

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "ExportAttempt", "ExportError", "ExportReport", "Exporter",
           "export_onnx"]

#: The lowest opset the dynamo exporter writes natively (lower ones are down-converted).
DYNAMO_MIN_OPSET = 18


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
    progress: Progress = no_progress,
) -> ExportReport:
    """Export ``module(*args)`` to ``out`` and verify it; see :func:`zhisuan.graph.torch_export.export_onnx`.

    Below opset 18, when another exporter is allowed, the dynamo exporter is recorded as skipped.
    """
    opset = DEFAULT_OPSET if opset is None else int(opset)
    skipped: list[ExportAttempt] = []
    if opset < DYNAMO_MIN_OPSET and "dynamo" in exporters and len(set(exporters)) > 1:
        reason = (f"skipped for the zoo: it writes opset {DYNAMO_MIN_OPSET}+ and its down-conversion to "
                  f"{opset} failed for the zoo's models")
        skipped.append(ExportAttempt("dynamo", False, reason, 0.0, kind="skipped"))
        progress(f"dynamo exporter {reason}")
        exporters = tuple(e for e in exporters if e != "dynamo")
    return _export_onnx(
        module, args, out, input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
        opset=opset, check_args=check_args, tolerance=tolerance, exporters=exporters, metadata=metadata,
        skipped=skipped, progress=progress,
    )
