"""``zhisuan optimize``: run graph passes to a fixpoint, keep a name map, verify the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from zhisuan.cli._common import (
    COUNT,
    JSON_HELP,
    console,
    finite,
    fmt_bytes,
    opset,
    output_path,
    print_json,
    status,
)

if TYPE_CHECKING:
    from zhisuan.optimize import OptimizeResult


def optimize_cmd(
    model: str | None = typer.Argument(None, help="ONNX file or zoo model name, e.g. ppocr-det."),
    out: Path | None = typer.Option(None, "-o", "--out", callback=output_path, help="Where to write the optimized ONNX file."),
    passes: str | None = typer.Option(None, "--passes", help="Comma-separated pass names (default: the target's pipeline)."),
    opset: int | None = typer.Option(None, "--opset", callback=opset, help="Upgrade the default-domain opset to N first."),
    target: str = typer.Option("onnxruntime", "--target", help="onnxruntime, openvino, tensorrt or onnx (standard ops only)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare outputs with the original on ONNX Runtime."),
    data: Path | None = typer.Option(None, "--data", help="Inputs for verification: a .npz file or a folder of them."),
    random: int | None = typer.Option(None, "--random", **COUNT, help="Verify with N seeded random input batches."),
    rtol: float = typer.Option(1e-3, "--rtol", min=0, callback=finite, help="Relative tolerance of the verification."),
    atol: float = typer.Option(1e-4, "--atol", min=0, callback=finite, help="Absolute tolerance of the verification."),
    list_passes: bool = typer.Option(False, "--list-passes", help="List the passes and exit."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Optimize an ONNX model: fold constants and BatchNorms, drop dead nodes, fuse; outputs verified.

    Example:  zhisuan optimize ppocr-cls -o cls-opt.onnx --json
    """
    from zhisuan.errors import UserError
    from zhisuan.optimize import available_passes, default_pipeline

    if list_passes:
        infos = available_passes()
        default = default_pipeline(target)
        if json_out:
            print_json([{**i.to_dict(), "default": i.name in default} for i in infos])
            return
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"optimize passes (default pipeline for {target} marked *)")
        for col in ("pass", "targets", "what it does"):
            table.add_column(col)
        for i in infos:
            mark = "*" if i.name in default else ""
            table.add_row(f"{i.name}{mark}", ", ".join(i.targets) if i.targets else "any", escape(i.summary))
        console.print(table)
        return
    if model is None:
        raise UserError("give a MODEL (ONNX file or zoo name), or --list-passes")
    if out is None:
        raise UserError("give an output path with -o/--out")
    from zhisuan._io import sha256_file
    from zhisuan.graph import load_model, save_model
    from zhisuan.inputs import resolve, sample_inputs
    from zhisuan.optimize import optimize_model

    ref = resolve(model, accept=("onnx", "zoo", "package"))
    path = ref.file()
    proto = load_model(path)
    names = [p.strip() for p in passes.split(",") if p.strip()] if passes is not None else None
    zoo_name = ref.zoo_name  # a zoo model (or a package of one): verify on its realistic inputs
    feeds = sample_inputs(proto, data=data, random=random, zoo_name=zoo_name) if verify and (data or random or zoo_name) else None
    with status(f"optimizing {path.name}", enabled=not json_out):
        result = optimize_model(
            proto, names, opset=opset, verify=verify, feeds=feeds, rtol=rtol, atol=atol, target=target,
            source_sha256=sha256_file(path),
        )
    save_model(result.model, out)
    if json_out:
        print_json({"model": str(path), "out": str(out), **result.to_dict()})
        return
    _print_result(result, path, out)


def _print_result(result: OptimizeResult, path: Path, out: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(path.name)} -> {escape(str(out))}")
    for col in ("pass", "rounds", "changed", "what"):
        table.add_column(col)
    for p in result.passes:
        what = p.skipped or ", ".join(f"{k}={v}" for k, v in p.counts.items()) or "—"
        table.add_row(p.name, str(p.iterations), "yes" if p.changed else "no", escape(what))
    console.print(table)
    console.print(
        f"nodes {result.nodes_before} -> {result.nodes_after}, size {fmt_bytes(result.bytes_before)} -> "
        f"{fmt_bytes(result.bytes_after)}, {result.rounds} round(s), name map {len(result.name_map.mapping)} entries"
    )
    if result.requires:
        console.print(f"[yellow]needs operator domains: {', '.join(result.requires)} (ONNX Runtime only)[/]")
    v = result.verification
    if v is None:
        console.print("[yellow]not verified (--no-verify)[/]")
    else:
        worst = v.worst.max_abs_error if v.worst is not None else 0
        console.print(f"[green]verified[/]: outputs equal within rtol {v.rtol:g}, atol {v.atol:g} "
                      f"(max abs error {worst:.3g} on {v.batches} batch(es))")


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize_cmd)
