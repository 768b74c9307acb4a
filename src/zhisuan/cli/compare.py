"""``zhisuan compare``: accuracy alignment of a candidate model against a reference (SPEC DEP-4).

Exit status: 0 within tolerance, 1 outside tolerance (a CI gate) or an error in the inputs, 2 on a
usage error, as for every command (``zhisuan.cli.app.EXIT_STATUSES``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from zhisuan.cli._common import (
    COUNT,
    JSON_HELP,
    SEED,
    THREADS,
    console,
    finite,
    output_path,
    print_json,
    status,
)

EXIT_WITHIN, EXIT_OUTSIDE = 0, 1


def compare_cmd(
    ref: str = typer.Argument(..., help="Reference: an ONNX file or a zoo model name."),
    cand: str = typer.Argument(..., help="Candidate: an ONNX file or a zoo model name (may equal REF)."),
    ref_runtime: str = typer.Option("onnxruntime", "--ref-runtime", help="Runtime of REF: onnxruntime or openvino."),
    cand_runtime: str = typer.Option("onnxruntime", "--cand-runtime", help="Runtime of CAND: onnxruntime or openvino."),
    ref_precision: str = typer.Option("fp32", "--ref-precision", help="Precision REF's runtime computes in."),
    cand_precision: str = typer.Option("fp32", "--cand-precision", help="Precision CAND's runtime computes in (e.g. bf16 on openvino)."),
    ref_device: str = typer.Option("cpu", "--ref-device", help="Device of REF's runtime."),
    cand_device: str = typer.Option("cpu", "--cand-device", help="Device of CAND's runtime."),
    data: Path | None = typer.Option(None, "--data", help="Inputs: an .npz file or a directory of them."),
    random: int | None = typer.Option(None, "--random", **COUNT, help="Use N seeded random input batches (default 1)."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Seed of the random inputs."),
    layerwise: bool = typer.Option(False, "--layerwise", help="Pair intermediate tensors; report each layer's own and carried error and the first divergent node."),
    atol: float = typer.Option(1e-4, "--atol", min=0, callback=finite, help="Absolute tolerance: |cand - ref| <= atol + rtol*|ref|."),
    rtol: float = typer.Option(1e-3, "--rtol", min=0, callback=finite, help="Relative tolerance."),
    min_cosine: float = typer.Option(0.999, "--min-cosine", min=-1.0, max=1.0, callback=finite, help="Lowest acceptable cosine similarity."),
    threads: int | None = typer.Option(None, "--threads", **THREADS, help="Intra-op threads per runtime (default: the runtime's)."),
    html: Path | None = typer.Option(None, "--html", callback=output_path, help="Also write a self-contained HTML report here."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compare CAND with REF on the same inputs: per output cosine, max abs/rel error, top-1;
    with --layerwise, the first node whose own error is outside tolerance.

    Exit status: 0 within tolerance, 1 outside (or an error in the inputs), 2 usage error.

    Example:  zhisuan compare minilm-l6 minilm-int8.onnx --layerwise --min-cosine 0.99 --atol 0.05 --json
    """
    from zhisuan.compare import CompareConfig, compare_models

    config = CompareConfig(
        ref_runtime=ref_runtime, cand_runtime=cand_runtime,
        ref_precision=ref_precision, cand_precision=cand_precision,
        ref_device=ref_device, cand_device=cand_device,
        data=str(data) if data is not None else None, random=random, seed=seed,
        layerwise=layerwise, atol=atol, rtol=rtol, min_cosine=min_cosine, threads=threads,
    )
    with status("comparing", enabled=not json_out):
        result = compare_models(ref, cand, config)
    if html is not None:
        from zhisuan.compare.html import write_html

        write_html(result, html)
    if json_out:
        print_json(_finite(result.to_dict()))
    else:
        _print(result)
    raise typer.Exit(EXIT_WITHIN if result.within_tolerance else EXIT_OUTSIDE)


def _finite(obj: Any) -> Any:
    """JSON has no infinities: write them as the strings "inf" / "-inf"."""
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _print(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    data = result.to_dict()
    table = Table(title="outputs")
    for col in ("output", "cosine", "max abs", "max rel", "top-1", "outside tol.", "verdict"):
        table.add_column(col)
    for out in data["outputs"]:
        table.add_row(
            escape(out["name"]), f"{out['cosine']:.6f}", f"{out['max_abs_error']:.3g}",
            f"{out['max_rel_error']:.3g}", "—" if out["top1_agreement"] is None else f"{out['top1_agreement']:.3f}",
            str(out["violations"]), "[green]ok[/]" if out["within_tolerance"] else "[red]outside[/]",
        )
    console.print(table)
    if data["layerwise"]:
        first = data["first_divergence"]
        pairing = data["pairing"]
        console.print(f"[dim]{escape(data['layers_note'])}[/]")
        console.print(
            f"layers: {len(data['layers'])} paired by {pairing['method']}; unpaired: "
            f"{len(pairing['unpaired_cand'])} CAND, {len(pairing['unpaired_ref'])} REF tensors"
        )
        if first is None:
            console.print("first divergent node: [green]none[/] (every layer's own error is within tolerance)")
        else:
            console.print(
                f"first divergent node: [bold red]{escape(first['node'])}[/] ({first['op_type']}) -> "
                f"{escape(first['output'])} (REF {escape(first['ref_tensor'])}): own cosine "
                f"{first['own']['cosine']:.6f}, max abs {first['own']['max_abs_error']:.3g}; total cosine "
                f"{first['total']['cosine']:.6f}"
            )
    verdict = "[green]within tolerance[/]" if data["within_tolerance"] else "[red]outside tolerance[/]"
    console.print(f"{verdict} ({data['samples']} sample(s), {data['timings_s']['total']:.1f} s)")


def register(parent: typer.Typer) -> None:
    parent.command("compare")(compare_cmd)
