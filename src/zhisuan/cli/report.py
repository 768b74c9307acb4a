"""``zhisuan report``: show an evaluation report's summary, compare reports side by side (EV-11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from zhisuan.cli._common import JSON_HELP, console, finite, output_path, print_json

app = typer.Typer(help="Show evaluation reports and compare them side by side (选型).", no_args_is_help=True)

_STYLE = {"pass": "green", "fail": "red", "skip": "yellow", "disturbed": "magenta"}


def summary_table(report: Any, *, title: str | None = None) -> Any:
    """A rich table: per clause, pass/fail/skip counts (and disturbed, when any) and key figures."""
    from rich.markup import escape
    from rich.table import Table

    from zhisuan.report.format import clause_rows

    table = Table(title=title or f"{report.device_name} — suite {report.suite}")
    rows = clause_rows(report)
    disturbed = any(r.counts.get("disturbed") for r in rows)
    columns = [("clause", {}), ("what", {}), ("pass", {"justify": "right"}), ("fail", {"justify": "right"}),
               ("skip", {"justify": "right"})]
    if disturbed:
        columns.append(("disturbed", {"justify": "right"}))
    for col, kw in (*columns, ("key figures", {})):
        table.add_column(col, **kw)
    for row in rows:
        c = row.counts
        cells = [row.clause, escape(row.title), f"[green]{c['pass']}[/]" if c["pass"] else "0",
                 f"[bold red]{c['fail']}[/]" if c["fail"] else "0", f"[yellow]{c['skip']}[/]" if c["skip"] else "0"]
        if disturbed:
            cells.append(f"[magenta]{c['disturbed']}[/]" if c.get("disturbed") else "0")
        table.add_row(*cells, escape("\n".join(row.key_figures)) or "—")
    return table


def items_table(report: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from zhisuan.report.format import format_reference, format_spread, format_value

    table = Table(title="items")
    for col in ("status", "id", "value", "reference (ratio)", "spread", "reason"):
        table.add_column(col)
    for i in report.items:
        table.add_row(
            f"[{_STYLE[i.status]}]{i.status}[/]", escape(i.id), escape(format_value(i.value, i.unit)),
            escape(format_reference(i)), escape(format_spread(i.spread)), escape(i.reason or ""),
        )
    return table


@app.command("show")
def show_cmd(
    path: Path = typer.Argument(..., help="A report.json, or the directory holding one."),
    all_items: bool = typer.Option(False, "--all", help="Also list every item with its value and spread."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Print a report's summary: per clause pass/fail/skip counts and key figures.

    Example:  zhisuan report show zhisuan-report/report.json --all
    """
    from zhisuan.bench.schema import load_report
    from zhisuan.report.format import clause_rows

    report = load_report(path / "report.json" if path.is_dir() else path)
    if json_out:
        print_json({"device": report.device_name, "suite": report.suite, "started_at": report.started_at,
                    "finished_at": report.finished_at, "counts": report.summary.get("counts"),
                    "clauses": [r.to_dict() for r in clause_rows(report)],
                    **({"items": [i.to_dict() for i in report.items]} if all_items else {})})
        return
    console.print(summary_table(report))
    if all_items:
        console.print(items_table(report))


@app.command("compare")
def compare_cmd(
    paths: list[Path] = typer.Argument(..., help="Two or more report.json files (or directories holding one); the first is the baseline."),
    out: Path | None = typer.Option(None, "-o", "--out", callback=output_path, help="Also write a self-contained HTML comparison here."),
    tolerance: float = typer.Option(0.03, "--tolerance", min=0, callback=finite, help="Ratios within this fraction of 1 count as the same."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compare reports side by side per item: values, ratios against the first report, better/worse
    with each figure's sense (throughput higher is better; latency and energy lower is better).

    Example:  zhisuan report compare gpu-a/report.json gpu-b/report.json -o compare.html
    """
    from zhisuan.report.compare import compare_files, write_compare_html

    comparison = compare_files(paths, tolerance=tolerance)
    if out is not None:
        write_compare_html(comparison, out)
    if json_out:
        print_json({**comparison.to_dict(), "html": str(out) if out else None})
        return
    _print_comparison(comparison)
    if out is not None:
        console.print(f"wrote {out}")


def _print_comparison(comparison: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from zhisuan.report.format import format_number, format_value

    table = Table(title=f"ratios against {comparison.labels[0]}")
    table.add_column("item")
    table.add_column("sense")
    for label in comparison.labels:
        table.add_column(escape(label))
    colour = {"better": "green", "worse": "red", "same": "white"}
    for row in comparison.rows:
        cells = []
        for cell in row.cells:
            if cell.missing:
                cells.append("[dim]missing[/]")
                continue
            text = escape(format_value(cell.value, cell.unit or ""))
            if cell.status != "pass":
                text += f" [{_STYLE[cell.status]}]{cell.status}[/]"
            if cell.ratio is not None:
                text += f" [{colour.get(cell.verdict or '', 'white')}]×{format_number(cell.ratio)}[/]"
            cells.append(text)
        sense = {True: "↑", False: "↓", None: "·"}[row.higher_is_better]
        table.add_row(escape(row.id), sense, *cells)
    console.print(table)
    counts = comparison.verdict_counts()
    for label, c in zip(comparison.labels[1:], counts[1:], strict=True):
        console.print(f"{escape(label)}: [green]{c['better']} better[/], [red]{c['worse']} worse[/], "
                      f"{c['same']} same, {c['missing']} missing (vs {escape(comparison.labels[0])})")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="report")
