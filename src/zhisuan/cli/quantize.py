"""``zhisuan quantize``: auto (fastest INT8 within a metric budget), INT8 static QDQ or dynamic, FP16;
sensitivity; accuracy-budgeted mixed precision."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from zhisuan.cli._common import (
    COUNT,
    JSON_HELP,
    THREADS,
    console,
    err_console,
    finite,
    output_path,
    positive,
    print_json,
)

if TYPE_CHECKING:
    from zhisuan.progress import Progress
    from zhisuan.quantize import QuantizeResult


def quantize_cmd(
    model: str = typer.Argument(..., help="ONNX file or zoo model name (e.g. ppocr-rec)."),
    out: Path = typer.Option(..., "-o", "--out", callback=output_path, help="Where to write the quantized model."),
    mode: str = typer.Option("auto", "--mode", help="auto (the fastest of static INT8, dynamic INT8 and float that meets the metric budget), int8 (static, QDQ), int8-dynamic, fp16 or bf16."),
    backend: str = typer.Option("onnxruntime", "--runtime", "-r", "--backend", help="Where the model is scored, timed and chosen: onnxruntime or openvino (runs the QDQ model with its int8 kernels). --backend is the old name."),
    calib: Path | None = typer.Option(None, "--data", "--calib", help="Calibration data: a .npz file or a directory of them, keyed by input names (default: a zoo model's realistic calibration inputs). --calib is the old name."),
    random: int | None = typer.Option(None, "--random", **COUNT, help="Calibrate on N seeded random batches (a poor proxy)."),
    method: str = typer.Option("minmax", "--method", help="Calibration: minmax, percentile or entropy."),
    per_channel: bool | None = typer.Option(None, "--per-channel/--per-tensor", help="Per-channel weights (default: per channel)."),
    reduce_range: bool | None = typer.Option(None, "--reduce-range/--full-range", help="7-bit INT8 weights (default: on for ONNX Runtime on x86 CPUs without VNNI, whose u8 x s8 kernels saturate 8-bit weights)."),
    metric: str = typer.Option("cosine", "--metric", help="cosine, top1 or zoo:NAME (the zoo task metric)."),
    max_drop: float | None = typer.Option(None, "--max-drop", min=0.0, max=100.0, callback=finite, help="Tolerated metric drop in percent of the float value; searches layers to keep in float (auto: default 2 for cosine, 1 otherwise)."),
    time_budget: float = typer.Option(600.0, "--time-budget", callback=positive, help="Seconds for sensitivity analysis and search; the best model so far is always written."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Measure and report per-layer sensitivity."),
    exclude: list[str] = typer.Option([], "--exclude", help="Node name to keep in float (repeatable)."),
    threads: int = typer.Option(2, "--threads", **THREADS, help="Intra-op threads for scoring and timing."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Quantize a model and score it against the float model.

    Example:  zhisuan quantize efficientnet-lite0 -o eff-int8.onnx --runtime openvino --metric zoo:efficientnet-lite0
    """
    from zhisuan.quantize import QuantizeConfig, quantize_model

    config = QuantizeConfig(
        mode=mode, method=method, per_channel=per_channel, metric=metric, max_drop_pct=max_drop,
        time_budget_s=time_budget, sensitivity=sensitivity, nodes_to_exclude=tuple(exclude),
        intra_op_threads=threads, backend=backend, reduce_range=reduce_range,
    )
    with _progress(enabled=not json_out) as progress:
        result = quantize_model(model, out, config=config, data=calib, random=random, progress=progress)
    if json_out:
        print_json(result)
    else:
        _print(result)
    if result.interrupted:
        sys.exit(130)


class _progress:
    """A rich progress bar on stderr fed by the core's ``progress(text, done=, total=)`` (a message
    alone empties the bar: its total is unknown)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and err_console.is_terminal

    def __enter__(self) -> Progress | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                             TimeElapsedColumn(), console=err_console, transient=True)
        self._bar.__enter__()
        self._task = self._bar.add_task("quantize", total=None)

        def update(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
            self._bar.update(self._task, description=text, completed=done or 0, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)


def _print(result: QuantizeResult) -> None:
    from rich.markup import escape

    shown = result.mode if result.chosen == result.mode else f"{result.mode}: {result.chosen}"
    console.print(
        f"[bold]{escape(result.output_path)}[/] ({shown}): {escape(result.metric)} "
        f"{result.quantized_value:.4f} vs float {result.float_value:.4f} — drop {result.drop_pct:.2f} %"
        + (f" (budget {result.max_drop_pct:g} %: {'met' if result.meets_budget else 'NOT met'})" if result.max_drop_pct is not None else "")
    )
    if result.latency:
        lat = result.latency
        shapes = [f"{k} {v}" for k, v in lat.batch.items()]
        shown_shapes = ", ".join(shapes[:3]) + (f" +{len(shapes) - 3} more" if len(shapes) > 3 else "")
        console.print(f"  latency {lat.quantized.median_ms:.2f} ms vs float {lat.float_.median_ms:.2f} ms "
                      f"(x{lat.speedup:.2f}, {lat.backend}, {lat.threads} threads; {escape(shown_shapes)})")
    if result.policy:
        for c in result.policy.contenders:
            console.print(f"  {c.name:>13}: {c.value:.4f} (drop {c.drop_pct:.2f} %), {c.median_ms:.2f} ms"
                          + (f", {c.float_layers} layers in float" if c.float_layers else ""))
        console.print(f"  chose {result.policy.chosen}: {escape(result.policy.reason)}")
    prep = result.preprocessing
    if prep.opset_before != prep.opset_after:
        console.print(f"  opset {prep.opset_before} -> {prep.opset_after} before quantizing")
    for layer in result.float_layers:
        gain = layer.sensitivity_gain_pct
        console.print(f"  float: {escape(layer.node)} ({layer.op_type}"
                      + (f", sensitivity {gain:.3f} %" if gain is not None else "") + f") — {escape(layer.reason)}")
    if result.search:
        console.print(f"  search: {result.search.candidates} candidates, stopped: {result.search.stopped}")
    if result.sensitivity:
        for row in result.sensitivity[:10]:
            if row.gain_pct is not None:
                console.print(f"  sensitivity #{row.rank}: {escape(row.node)} ({row.op_type}) gain {row.gain_pct:.3f} %")
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")


def register(parent: typer.Typer) -> None:
    parent.command("quantize")(quantize_cmd)
