"""``zhisuan zoo``: list, show, export and evaluate the models of the zoo."""

from __future__ import annotations

from pathlib import Path

import typer

from zhisuan.cli._common import (
    COUNT,
    JSON_HELP,
    SEED,
    THREADS,
    console,
    fmt_bytes,
    opset,
    output_path,
    print_json,
    status,
)

app = typer.Typer(
    help="Real pretrained models from PyPI packages, and seeded reference architectures.",
    no_args_is_help=True,
)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the zoo's models with their task, source and metric.

    Example:  zhisuan zoo list --json
    """
    from rich.markup import escape
    from rich.table import Table

    from zhisuan import zoo

    entries = zoo.entries()
    if json_out:
        print_json([e.to_dict() for e in entries])
        return
    table = Table(title="zhisuan model zoo")
    for col in ("name", "task", "source", "license", "metric"):
        table.add_column(col)
    for e in entries:
        src = e.source()
        source = f"{src['package']} {src['version'] or '(not installed)'}" if src["package"] else "built in (random weights)"
        table.add_row(*(escape(v) for v in (e.name, e.task, source, e.license, e.metric)))
    console.print(table)


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Zoo model name, e.g. ppocr-rec."),
    signature: bool = typer.Option(True, "--signature/--no-signature", help="Build the model to read its signature."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one model: source, checksum, signature, pre/post-processing and evaluation set.

    Example:  zhisuan zoo show ppocr-rec --json
    """
    from rich.markup import escape

    from zhisuan import zoo

    entry = zoo.get(name)
    data = entry.to_dict()
    if signature:
        with status(f"building {name} to read its signature", enabled=not json_out):
            data["signature"] = zoo.signature(name)
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{escape(entry.name)}[/] — {escape(entry.summary)}")
    for key in ("task", "kind", "license", "architecture_source", "preprocess", "postprocess", "metric_description", "eval_set"):
        if data.get(key):
            console.print(f"  [cyan]{key}[/]: {escape(str(data[key]))}")
    src = data["source"]
    where = f"{src.get('package') or 'built in'} {src.get('version') or ''} {src.get('weights') or ''}"
    console.print(f"  [cyan]source[/]: {escape(where)}")
    if src.get("weights_sha256"):
        console.print(f"  [cyan]weights sha256[/]: {src['weights_sha256']}")
    for side in ("inputs", "outputs"):
        for spec in data.get("signature", {}).get(side, []):
            console.print(f"  [cyan]{side[:-1]}[/] {escape(spec['name'])}: {spec['dtype']} {escape(str(spec['shape']))}")


@app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help="Zoo model name, e.g. efficientnet-lite0."),
    out: Path | None = typer.Option(None, "-o", "--out", callback=output_path, help="Also copy the ONNX file here."),
    opset: int | None = typer.Option(None, "--opset", callback=opset, help="ONNX opset for models exported from PyTorch."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a verified cached file exists."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Build the model's ONNX file into the cache (verified by sha256) and optionally copy it.

    Example:  zhisuan zoo export minilm-l6 -o minilm.onnx
    """
    from zhisuan import zoo

    zoo.get(name)
    with status(f"exporting {name}", enabled=not json_out) as update:
        result = zoo.export(name, opset=opset, force=force, out=out, progress=update)
    if json_out:
        print_json(result)
        return
    how = "reused cached" if result.cached else f"built in {result.build_s:.1f} s"
    console.print(f"{name}: {result.path} ({fmt_bytes(result.size_bytes)}, {how}, sha256 {result.sha256[:16]}…)")


@app.command("eval")
def eval_cmd(
    name: str = typer.Argument(..., help="Zoo model name, e.g. ppocr-rec."),
    model: Path | None = typer.Option(None, "--model", help="Score this ONNX file (e.g. a quantized copy) instead."),
    runtime: str = typer.Option("onnxruntime", "--runtime", "-r", help="onnxruntime, openvino or torch."),
    device: str = typer.Option("cpu", "--device", help="Device for the runtime, e.g. cpu or cuda:0."),
    samples: int | None = typer.Option(None, "--samples", "-n", **COUNT, help="Evaluation set size (default: the model's)."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Seed of the generated evaluation set."),
    threads: int | None = typer.Option(None, "--threads", **THREADS, help="Intra-op threads (default: the runtime's)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compute the model's task metric on its offline evaluation set.

    Example:  zhisuan zoo eval ppocr-rec --model rec-int8.onnx --json
    """
    from zhisuan import zoo

    zoo.get(name)
    with status(f"evaluating {name}", enabled=not json_out) as update:
        result = zoo.evaluate(
            name, model=model, runtime=runtime, samples=samples, seed=seed, device=device,
            intra_op_threads=threads, progress=update,
        )
    if json_out:
        print_json(result)
        return
    extra = ", ".join(f"{k}={v:.4g}" for k, v in result.secondary.items())
    console.print(
        f"{name}: [bold]{result.metric} = {result.value:.4f}[/] on {result.samples} samples"
        + (f" ({extra})" if extra else "")
        + f" — {result.runtime.get('runtime')} {result.runtime.get('provider')}, {result.duration_s:.1f} s"
    )


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="zoo")
