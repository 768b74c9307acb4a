"""``zhisuan bench``: one model under one MLPerf LoadGen scenario, auto-calibrated (SPEC EV-5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from zhisuan.cli._common import (
    COUNT,
    JSON_HELP,
    SEED,
    THREADS,
    console,
    err_console,
    output_path,
    positive,
    print_json,
)
from zhisuan.errors import UsageError
from zhisuan.progress import Progress, no_progress


def _batch(value: str) -> int | None:
    if value.strip().lower() == "auto":
        return None
    try:
        batch = int(value)
    except ValueError:
        raise UsageError(f"--batch must be a positive integer or 'auto', got {value!r}") from None
    if batch < 1:
        raise UsageError(f"--batch must be a positive integer or 'auto', got {value!r}")
    return batch


def bench_cmd(
    model: str = typer.Argument(..., help="An ONNX file (or OpenVINO .xml) or a zoo model name, e.g. efficientnet-lite0."),
    runtime: str = typer.Option("onnxruntime", "--runtime", "-r", help="onnxruntime, openvino or torch (zoo models)."),
    scenario: str = typer.Option("offline", "--scenario", "-s", help="singlestream, multistream, server or offline."),
    precision: str = typer.Option("fp32", "--precision", help="Precision the runtime is asked for (fp32, fp16, bf16)."),
    device: str = typer.Option("cpu", "--device", help="Device of the runtime: cpu, cuda, cuda:1, ..."),
    threads: int | None = typer.Option(None, "--threads", **THREADS, help="Intra-op threads (default: the runtime's)."),
    batch: str = typer.Option("auto", "--batch", help="Batch size for Offline/Server/MultiStream, or 'auto' (calibrated)."),
    duration: float = typer.Option(10.0, "--duration", callback=positive, help="LoadGen minimum duration in seconds (MLPerf rules: 600)."),
    data: Path | None = typer.Option(None, "--data", help="Samples: an .npz file or a directory of them (rows are samples)."),
    random: int | None = typer.Option(None, "--random", **COUNT, help="Use N seeded random samples from the model's signature."),
    target_latency_ms: float | None = typer.Option(None, "--target-latency-ms", callback=positive, help="Server: the p99 latency bound (default: 10x the batch-1 p90, at least 5 ms)."),
    samples_per_query: int | None = typer.Option(None, "--samples-per-query", min=1, max=65536, help="MultiStream: samples per query (default 8)."),
    accuracy: bool = typer.Option(False, "--accuracy", help="Also run LoadGen's AccuracyOnly pass on a zoo model's evaluation set."),
    logs: Path | None = typer.Option(None, "--logs", callback=output_path, help="Keep LoadGen's logs (mlperf_log_detail.txt, ...) in this directory."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Seed of random samples and LoadGen's schedules."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Benchmark MODEL under MLPerf LoadGen: calibrate, then run one scenario and report
    throughput and latency percentiles (the trtexec / benchmark_app of zhisuan).

    LoadGen's expected latency / QPS are set from a calibration run so the result is VALID the
    first time; an INVALID run is corrected once from LoadGen's own numbers and rerun.
    The machine is checked for other jobs first (a warning when it is not quiet) and sampled during
    the run: the result's "interference" says what other processes took meanwhile.

    Example:  zhisuan bench efficientnet-lite0 --scenario server --threads 2 --duration 10 --json
    """
    from zhisuan.bench.inference import bench_model
    from zhisuan.bench.interference import gpus_of, quiet_check, warning_text
    from zhisuan.bench.loadgen import Scenario

    chosen = Scenario.parse(scenario)  # before the model loads
    checks: list[Any] = []

    def check_quiet() -> None:  # the model is loaded and the inputs are valid: the timed part starts
        checks.append(quiet_check(gpus=gpus_of(device)))
        warning = warning_text(checks[0])
        if warning:
            from rich.markup import escape

            err_console.print(f"[bold magenta]{escape(warning)}[/]", highlight=False)
    with _progress(enabled=not json_out) as progress:
        result = bench_model(
            model, scenario=chosen, runtime=runtime, precision=precision, device=device, threads=threads,
            batch=_batch(batch), duration_s=duration, data=data, random=random, target_latency_ms=target_latency_ms,
            samples_per_query=samples_per_query, log_dir=logs, accuracy=accuracy, seed=seed,
            before_measuring=check_quiet, progress=progress,
        )
    if json_out:
        print_json({**result.to_dict(), "quiet_check": checks[0].to_dict() if checks else None})
    else:
        _print(result)


@contextmanager
def _progress(*, enabled: bool) -> Iterator[Progress]:
    """A rich progress bar on stderr fed by the core's ``progress(text, done=, total=)``."""
    if not enabled or not err_console.is_terminal:
        yield no_progress
        return
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    with Bars(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task_id = bar.add_task("bench", total=1.0)

        def update(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
            bar.update(task_id, completed=done, total=total or None, description=text or "bench")

        yield update


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


def _interference(record: dict[str, Any]) -> str:
    from rich.markup import escape

    verdict = record.get("verdict", "unknown")
    parts = [f"other processes {record['other_cpu_share']:.0%}" if record.get("other_cpu_share") is not None else None,
             f"steal {record['steal_share']:.0%}" if record.get("steal_share") is not None else None,
             f"{len(record.get('foreign_gpu_processes') or [])} other GPU process(es)"
             if record.get("foreign_gpu_processes") else None]
    text = escape(", ".join(p for p in parts if p) or "not measurable here")
    return f"[bold magenta]disturbed[/]: {text}" if verdict == "disturbed" else f"{escape(verdict)}: {text}"


def _print(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    r = result
    verdict = "[green]VALID[/]" if r.valid else f"[red]{escape(str(r.result_validity))}[/]"
    rt = r.runtime
    console.print(f"[bold]{escape(r.model)}[/] {r.scenario}: {verdict} — {escape(str(rt.get('runtime')))} "
                  f"{escape(str(rt.get('provider')))}, {r.threads} threads, batch {r.batch_size}")
    table = Table(show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("samples/s", _fmt(r.samples_per_s))
    if r.qps is not None:
        table.add_row(f"QPS under p99 <= {r.target_latency_ms:.4g} ms", _fmt(r.qps))
    for key in ("p50", "p90", "p99"):
        table.add_row(f"{key} latency (ms)", _fmt(r.latency_ms.get(key)))
    if r.samples_per_query:
        table.add_row("samples per query", str(r.samples_per_query))
        table.add_row("p99 per-query latency (ms)", _fmt(r.query_latency_ms.get("p99")))
    if r.accuracy:
        acc = r.accuracy
        table.add_row(f"accuracy ({acc['metric']})", f"{acc['value']:.4f} (FP32 {acc['reference']:.4f})")
    if r.interference:
        table.add_row("interference during the run", _interference(r.interference))
    console.print(table)
    for i, attempt in enumerate(r.attempts, start=1):
        line = f"attempt {i}: {attempt['result_validity']}"
        if attempt.get("invalid_reason"):
            line += f" — {escape(attempt['invalid_reason'])}"
        console.print(line)
    for note in r.notes:
        console.print(f"[dim]{escape(note)}[/]")
    if r.log_dir:
        console.print(f"LoadGen logs: {escape(r.log_dir)}")


def register(parent: typer.Typer) -> None:
    parent.command("bench")(bench_cmd)
