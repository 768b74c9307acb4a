"""``zhisuan pack``: package a model (ONNX / OpenVINO IR file or zoo name) for serving (SPEC SRV-1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import JSON_HELP, console, finite, fmt_bytes, output_path, print_json, status
from zhisuan.errors import UserError

if TYPE_CHECKING:
    from zhisuan.progress import Progress

RUNTIME_HELP = "Default runtime of the package: onnxruntime or openvino (default: onnxruntime for ONNX, openvino for IR)."
MAX_BATCH_HELP = "Dynamic batching: most rows per model run (default 8; 1 for a model without a batch axis)."
MAX_DELAY_HELP = "Dynamic batching: longest wait for more requests, in ms (default 2)."
PREFERRED_HELP = "Dynamic batching: preferred batch sizes, comma-separated, e.g. 4,8."
PRE_HELP = 'Preprocessing steps as JSON, or @FILE, e.g. \'[{"op": "scale", "input": "x", "scale": 0.0078125}]\'.'
POST_HELP = 'Postprocessing steps as JSON, or @FILE, e.g. \'[{"op": "topk", "output": "logits", "k": 5}]\'.'
META_HELP = "Extra metadata as a JSON object, or @FILE."
ZOO_DEFAULTS_HELP = "Apply a zoo model's documented pre/post-processing when none is given."


def spinner_progress(update: Callable[[str], Any]) -> Progress:
    """A spinner's ``update(text)`` as a :class:`~zhisuan.progress.Progress` (packing reports text only)."""

    def progress(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
        if text:
            update(text)

    return progress


def pack_options(
    *,
    runtime: str | None,
    max_batch: int | None,
    max_delay_ms: float | None,
    preferred: str | None,
    preprocess: str | None,
    postprocess: str | None,
    metadata: str | None,
    zoo_defaults: bool,
) -> dict[str, Any]:
    """The keyword options of ``pack`` / ``Repository.add`` from the CLI's strings."""
    from zhisuan.serve.package import BatchingConfig
    from zhisuan.serve.processing import parse_steps

    batching = None
    if max_batch is not None or max_delay_ms is not None or preferred:
        sizes: tuple[int, ...] = ()
        if preferred:
            try:
                sizes = tuple(int(s) for s in preferred.split(",") if s.strip())
            except ValueError:
                raise UserError(f"--preferred-batch must be comma-separated integers, got {preferred!r}") from None
        batching = BatchingConfig(
            max_batch_size=max_batch if max_batch is not None else 8,
            max_queue_delay_ms=max_delay_ms if max_delay_ms is not None else 2.0,
            preferred_batch_sizes=sizes,
        )
    meta = None
    if metadata:
        text = metadata
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise UserError(f"--metadata: cannot read {text[1:]}: {exc}") from None
        try:
            meta = json.loads(text)
        except ValueError as exc:
            raise UserError(f"--metadata is not valid JSON: {exc}") from None
        except RecursionError:  # json's parser recurses once per nesting level
            raise UserError("--metadata is nested too deeply") from None
        if not isinstance(meta, dict):
            raise UserError("--metadata must be a JSON object")
    return {
        "runtime": runtime,
        "batching": batching,
        "preprocess": parse_steps(preprocess, what="--preprocess"),
        "postprocess": parse_steps(postprocess, what="--postprocess"),
        "metadata": meta,
        "zoo_defaults": zoo_defaults,
    }


def print_package(package: Any, *, verb: str) -> None:
    """A short human summary of a package."""
    from rich.markup import escape

    m = package.manifest
    console.print(
        f"{verb} [bold]{escape(m.name)}[/] version {m.version} at {escape(str(package.path))} "
        f"({m.format}, {fmt_bytes(package.size_bytes())}, runtime {m.runtime})"
    )
    for side, sigs in (("input", m.inputs), ("output", m.outputs)):
        for s in sigs:
            console.print(f"  [cyan]{side}[/] {escape(s.name)}: {s.datatype} {list(s.shape)}")
    b = m.batching
    preferred = f", preferred {list(b.preferred_batch_sizes)}" if b.preferred_batch_sizes else ""
    console.print(f"  [cyan]batching[/]: max {b.max_batch_size}, delay {b.max_queue_delay_ms:g} ms{preferred}")
    for stage, steps in (("preprocess", m.preprocess), ("postprocess", m.postprocess)):
        if steps:
            console.print(f"  [cyan]{stage}[/]: " + escape(" -> ".join(s["op"] for s in steps)))
    console.print(f"  [cyan]files[/]: {len(m.checksums)} with sha256 ({escape(', '.join(sorted(m.checksums)))})")


def pack_cmd(
    model: str = typer.Argument(..., help="An ONNX file, OpenVINO IR .xml (with its .bin), or a zoo model name."),
    out: Path = typer.Option(..., "-o", "--out", callback=output_path, help="Package directory to create."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the zoo name or the file name)."),
    version: int = typer.Option(1, "--version", min=1, max=2**31 - 1, help="Version number written into the package."),
    runtime: str | None = typer.Option(None, "--runtime", "-r", help=RUNTIME_HELP),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, max=65536, help=MAX_BATCH_HELP),
    max_delay_ms: float | None = typer.Option(None, "--max-delay-ms", min=0, callback=finite, help=MAX_DELAY_HELP),
    preferred: str | None = typer.Option(None, "--preferred-batch", help=PREFERRED_HELP),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PRE_HELP),
    postprocess: str | None = typer.Option(None, "--postprocess", help=POST_HELP),
    metadata: str | None = typer.Option(None, "--metadata", help=META_HELP),
    zoo_defaults: bool = typer.Option(True, "--zoo-defaults/--no-zoo-defaults", help=ZOO_DEFAULTS_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing package at --out."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Package a model for serving: model file(s), signature, pre/post-processing as data, batching,
    metadata and sha256 checksums, written atomically into one directory.

    Example:  zhisuan pack efficientnet-lite0 -o pkgs/effnet --max-batch 16 --max-delay-ms 4
    """
    from zhisuan.serve.package import pack

    options = pack_options(
        runtime=runtime, max_batch=max_batch, max_delay_ms=max_delay_ms, preferred=preferred,
        preprocess=preprocess, postprocess=postprocess, metadata=metadata, zoo_defaults=zoo_defaults,
    )
    with status(f"packing {model}", enabled=not json_out) as update:
        package = pack(model, out, name=name, version=version, force=force, progress=spinner_progress(update), **options)
    if json_out:
        print_json(package.to_dict())
        return
    print_package(package, verb="packed")


def register(app: typer.Typer) -> None:
    app.command("pack")(pack_cmd)
