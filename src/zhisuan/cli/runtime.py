"""``zhisuan runtime list``: which runtime backends are installed and what they reach."""

from __future__ import annotations

import typer

from zhisuan.cli._common import JSON_HELP, console, print_json

app = typer.Typer(help="Runtime backends (ONNX Runtime, OpenVINO, PyTorch, TensorRT, null).", no_args_is_help=True)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List runtime backends, their versions and devices, or why they are unavailable.

    Example:  zhisuan runtime list --json
    """
    from rich.markup import escape
    from rich.table import Table

    from zhisuan.runtime import backend_status

    statuses = backend_status()
    if json_out:
        print_json(statuses)
        return
    table = Table(title="Runtime backends")
    for col in ("backend", "status", "version", "devices", "note"):
        table.add_column(col)
    for s in statuses:
        table.add_row(
            s.name,
            "[green]available[/]" if s.available else "[red]unavailable[/]",
            s.version or "—",
            ", ".join(s.devices) or "—",
            "" if s.available else escape(f"{s.reason}; install: {s.install_hint}"),
        )
    console.print(table)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="runtime")
