"""``zhisuan profile``: per-operator time, FLOPs and bytes per node, and the model on the roofline."""

from __future__ import annotations

from pathlib import Path

import typer

from zhisuan.cli._common import COUNT, JSON_HELP, THREADS, console, print_json, status


def profile_cmd(
    model: str = typer.Argument(..., help="ONNX file or zoo model name."),
    runtime: str = typer.Option("onnxruntime", "--runtime", "-r", help="onnxruntime or openvino."),
    runs: int = typer.Option(20, "--runs", "-n", **COUNT, help="Timed runs (after the warm-up)."),
    warmup: int = typer.Option(3, "--warmup", min=0, max=10**6, help="Untimed warm-up runs."),
    batch: int = typer.Option(1, "--batch", min=1, max=65536, help="Batch size of the random inputs."),
    data: Path | None = typer.Option(None, "--data", help=".npz inputs instead of random ones."),
    threads: int | None = typer.Option(None, "--threads", **THREADS, help="Intra-op threads (default: the runtime's)."),
    ort_optimization: str = typer.Option("all", "--ort-optimization", help="ORT graph level: all, extended, basic, disable."),
    top: int = typer.Option(15, "--top", min=1, max=10**6, help="Rows of the top-operator table."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Profile a model: top operators by time, FLOPs and bytes, and its place on the roofline.

    Example:  zhisuan profile resnet50 --runtime openvino --runs 10 --json
    """
    from rich.markup import escape
    from rich.table import Table

    from zhisuan.profile import profile_model

    with status(f"profiling {model}", enabled=not json_out) as update:
        result = profile_model(model, runtime=runtime, runs=runs, warmup=warmup, batch=batch, data=data,
                               threads=threads, ort_optimization=ort_optimization, progress=update)
    if json_out:
        print_json(result)
        return
    table = Table(title=f"{escape(model)} on {runtime}: top operators (mean of {runs} runs)")
    for col in ("node", "op", "kernel", "time ms", "%", "MFLOP", "FLOP/B", "GFLOP/s", "bound", "% roof"):
        table.add_column(col)
    for n in result.top(top):
        table.add_row(
            escape(n.name[:40]), escape(n.op_type), escape(n.exec_type or ""), f"{n.time_ms:.4f}", f"{n.percent:.1f}",
            f"{n.flops / 1e6:.2f}" if n.flops is not None else "—",
            f"{n.intensity:.2f}" if n.intensity is not None else "—",
            f"{n.gflops:.1f}" if n.gflops is not None else "—", n.bound or "—",
            f"{n.roofline_pct:.0f}" if n.roofline_pct is not None else "—",
        )
    console.print(table)
    types = Table(title="by operator type")
    for col in ("op", "count", "time ms", "%", "GFLOP/s"):
        types.add_column(col)
    for o in result.per_op_type[:top]:
        types.add_row(escape(o.op_type), str(o.count), f"{o.time_ms:.4f}", f"{o.percent:.1f}",
                      f"{o.gflops:.1f}" if o.gflops is not None else "—")
    console.print(types)
    r = result.roofline
    console.print(
        f"latency {result.latency_ms:.3f} ms (p50 {result.latency_ms_p50:.3f}), {result.flops / 1e9:.3f} GFLOP, "
        f"{result.bytes / 1e6:.1f} MB -> {result.gflops:.1f} GFLOP/s; intensity "
        f"{(r.model_intensity or 0):.2f} FLOP/B, ridge {r.ridge_point:.2f}: [bold]{r.bound or '—'}-bound[/], "
        f"{(r.roofline_pct or 0):.0f}% of the measured roofline"
    )
    theo = f"{r.peak_gflops_theoretical:.0f}" if r.peak_gflops_theoretical else "unknown"
    console.print(f"device: measured {r.peak_gflops_measured:.1f} GFLOP/s, {r.bandwidth_gbps_measured:.1f} GB/s; "
                  f"theoretical {theo} GFLOP/s ({escape(r.theoretical_basis)})")


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_cmd)
