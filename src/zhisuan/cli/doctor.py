"""``zhisuan doctor``: check every part of the stack (SPEC DEV-4)."""

from __future__ import annotations

import typer

from zhisuan.cli._common import JSON_HELP, console, print_json

_STYLE = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "skip": "[yellow]skip[/]"}


def doctor(
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    only: list[str] = typer.Option(None, "--only", help="Run only this check (repeatable), e.g. --only openvino."),
) -> None:
    """Find every part of the software stack, show its version and run a tiny real test of each.

    Exits 1 when a required part (Python, numpy, torch, onnx, onnxruntime, devices, cache) fails;
    optional parts (OpenVINO, TensorRT, NVML, LoadGen, Ray, zoo packages) may be skipped with the
    reason and the install hint.

    Example:  zhisuan doctor --json
    """
    from zhisuan.doctor import run_doctor

    def show(result) -> None:  # streamed as each check finishes
        from rich.markup import escape

        required = "" if result.required else " [dim](optional)[/]"
        version = f" {result.version}" if result.version else ""
        console.print(
            f"{_STYLE[result.status]}  [bold]{escape(result.name)}[/]{escape(version)}{required} — {escape(result.detail)}"
            f" [dim]({result.duration_ms:.0f} ms)[/]",
            highlight=False,
        )

    report = run_doctor(only=only or None, on_result=None if json_out else show)
    if json_out:
        print_json(report)
    else:
        counts = report.to_dict()["counts"]
        verdict = "[green]ready[/]" if report.ok else "[red]a required part failed[/]"
        console.print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped — {verdict}")
    if not report.ok:
        raise typer.Exit(1)


def register(parent: typer.Typer) -> None:
    parent.command("doctor")(doctor)
