"""``zhisuan convert``: a PyTorch factory, ONNX file or zoo model into a deployable form, checked."""

from __future__ import annotations

from pathlib import Path

import typer

from zhisuan.cli._common import JSON_HELP, console, finite, opset, output_path, print_json, status


def convert_cmd(
    source: str = typer.Argument(..., help="ONNX file, zoo model name, or PyTorch factory package.module:function."),
    out: Path = typer.Option(..., "-o", "--out", callback=output_path, help="Output file: .onnx, .ort, .xml (OpenVINO IR) or .engine."),
    to: str | None = typer.Option(None, "--to", help="onnx, ort, openvino or tensorrt (default: from -o's suffix)."),
    opset: int | None = typer.Option(None, "--opset", callback=opset, help="ONNX opset (torch default 18; ONNX sources keep theirs)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Make axis 0 of inputs and outputs dynamic."),
    exporter: str = typer.Option("auto", "--exporter", help="Torch exporter: auto (dynamo, then legacy), dynamo, legacy."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="Factory input name:1x3x224x224[:dtype] (repeatable)."),
    data: Path | None = typer.Option(None, "--data", help=".npz file or directory of check inputs (ONNX sources)."),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0, callback=finite, help="Pass if max abs error <= this x max(1, max |output|)."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Keep a result that fails the check (exit 0, status mismatch)."),
    ort_level: str = typer.Option("extended", "--ort-level", help="--to ort: extended (ORT-only fusions) or basic (plain ONNX)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Convert a model and check it numerically against its source.

    Example:  zhisuan convert mypkg.models:build -o model.xml --to openvino --dynamic-batch
    """
    from rich.markup import escape

    from zhisuan.convert import convert

    with status(f"converting {source}", enabled=not json_out) as update:
        result = convert(
            source, out, to=to, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter,
            input_shapes=input_shape, data=data, rtol=tolerance, allow_mismatch=allow_mismatch,
            ort_level=ort_level, progress=update,
        )
    if json_out:
        print_json(result)
        return
    how = f" with the {result.exporter} exporter" if result.exporter else ""
    console.print(
        f"{escape(result.source)} -> {result.target}{how}: {escape(', '.join(result.output_paths))} "
        f"(opset {result.opset}, {result.duration_s:.1f} s)"
    )
    if result.fallback_reason:
        console.print(f"  fallback: {escape(result.fallback_reason)}")
    colour = "green" if result.status == "ok" else "red"
    console.print(
        f"  [{colour}]{result.status}[/]: max abs error {result.max_abs_error:.3g}, max rel error "
        f"{result.max_rel_error:.3g}, cosine {result.cosine:.6f} on {result.checked_samples} sample(s) "
        f"(batches {list(result.checked_batches)}; tolerance {result.tolerance_abs:.3g})"
    )
    if result.diagnosis:
        console.print(f"  [red]diagnosis[/]: {escape(result.diagnosis)}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
